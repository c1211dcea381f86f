"""Command line: ``autograder grade|report|export|release|samples|demo|runner``.  A thin layer over the engine."""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from .course import Course
from .errors import UsageError
from .grade import grade_assignment, resolve_device
from .release import generate_release
from .report import print_table
from .samples import install_samples


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autograder", description="Grade the loss-functions course with nbgrader's gradebook.")
    commands = parser.add_subparsers(dest="command", required=True)

    grade = commands.add_parser("grade", help="grade one assignment's submissions")
    grade.add_argument("assignment")
    grade.add_argument("--course", default=".", help="course directory (default: the current one)")
    grade.add_argument("--student", action="append", default=None, metavar="ID", help="grade only this student (repeatable)")
    grade.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    grade.add_argument(
        "--workers", type=int, default=None, metavar="N", help="grade N submissions at a time (default: the number of CPU cores)"
    )
    grade.add_argument(
        "--device", choices=("cpu", "cuda", "auto"), default=None,
        help="where student functions run (default: c.Runners.device, else cuda if available)",
    )
    grade.add_argument(
        "--scheduler", default=None, metavar="ADDRESS",
        help="grade on the runners of this Dask scheduler (default: c.Runners.scheduler, else on this machine)",
    )

    runner = commands.add_parser("runner", help="grade submissions for a Dask scheduler (see docs/runners.md)")
    runner.add_argument("--scheduler", required=True, metavar="ADDRESS", help="the scheduler, e.g. tcp://grading-host:8786")
    runner.add_argument("--gpu", action="store_true", help="offer this machine's CUDA GPU (refused where torch sees none)")
    runner.add_argument("--name", default=None, help="this runner's name in grades.csv (default: host-pid)")
    runner.add_argument("--tls-ca-file", default="", metavar="PEM", help="TLS: the CA certificate (tls:// addresses)")
    runner.add_argument("--tls-cert", default="", metavar="PEM", help="TLS: this runner's certificate")
    runner.add_argument("--tls-key", default="", metavar="PEM", help="TLS: this runner's private key")

    release = commands.add_parser("release", help="regenerate release/ from source/")
    release.add_argument("assignment", nargs="*", help="default: every assignment")
    release.add_argument("--course", default=".")

    samples = commands.add_parser("samples", help="copy the bundled sample submissions into submitted/")
    samples.add_argument("assignment", nargs="*", help="default: every assignment")
    samples.add_argument("--course", default=".")

    demo = commands.add_parser("demo", help="release, install the samples and grade them all")
    demo.add_argument("--course", default=".")
    demo.add_argument("--no-progress", action="store_true")

    report = commands.add_parser("report", help="write reports/<assignment>/report.html about the graded class")
    report.add_argument("assignment")
    report.add_argument("--course", default=".")

    export = commands.add_parser("export", help="write the graded class for Gradescope or Canvas (see docs/lms_export.md)")
    export.add_argument("assignment")
    export.add_argument("--course", default=".")
    export.add_argument("--format", required=True, choices=("gradescope", "canvas"), dest="lms_format")
    export.add_argument("--roster", default=None, metavar="CSV", help="columns id (nbgrader's student id), name, email, "
                        "canvas_id, sis_user_id, sis_login_id, section")
    export.add_argument("--student-id-is", default=None, choices=("canvas_id", "sis_user_id", "sis_login_id"),
                        help="our student ids are these LMS ids (used where the roster and gradebook give none)")
    export.add_argument("--canvas-name", default=None, metavar="NAME", help="Canvas assignment name (default: the assignment)")
    export.add_argument("--canvas-id", default=None, metavar="ID", help="Canvas assignment id (without: a new assignment)")
    export.add_argument("--visibility", default="after_published", choices=("visible", "hidden", "after_due_date", "after_published"),
                        help="Gradescope test visibility (default: after_published)")
    return parser


def _assignments(course: Course, names: list[str]) -> list[str]:
    return [course.require_assignment(n) for n in names] if names else course.assignments()


def run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.command == "runner":
        from .runner import RunnerSettings, serve

        tls = RunnerSettings(args.scheduler, tls_ca_file=args.tls_ca_file, tls_cert=args.tls_cert, tls_key=args.tls_key)
        return serve(args.scheduler, gpu=args.gpu, name=args.name, settings=tls)
    course = Course.open(args.course)
    if args.command == "grade":
        from .runner import configured_device, settings_from_config

        config = course.config()
        runners = settings_from_config(config, args.scheduler)
        args.device = args.device or configured_device(config) or "auto"
        if runners is None:
            resolve_device(args.device)  # a missing GPU is reported before anything else
    workers = getattr(args, "workers", None)
    if workers is None:
        workers = os.cpu_count() or 1
    if args.command == "grade":
        rows, csv_path = grade_assignment(
            course, args.assignment, args.student, progress=not args.no_progress, workers=workers, device=args.device,
            # Without --scheduler, grade_assignment reads c.Runners from nbgrader_config.py itself.
            **({"runners": runners} if runners is not None else {}),
        )
        print_table(args.assignment, rows, sys.stdout)
        print(f"grades written to {csv_path} and the gradebook at {course.db_url}")
    elif args.command == "release":
        for name in _assignments(course, args.assignment):
            generate_release(course, name)
            print(f"release/{name} regenerated")
    elif args.command == "samples":
        for name in _assignments(course, args.assignment):
            students = install_samples(course, name)
            print(f"{len(students)} sample submission(s) installed for {name}")
    elif args.command == "demo":
        for name in course.assignments():
            generate_release(course, name)
            students = [sample.student for sample in install_samples(course, name)]
            rows, _ = grade_assignment(course, name, students, progress=not args.no_progress, workers=workers)
            print_table(name, rows, sys.stdout)
            print()
        print(f"grades: {course.reports}/<assignment>/grades.csv; gradebook: {course.db_url}")
    elif args.command == "report":
        from .class_report import format_summary, write_report

        path, summary = write_report(course, args.assignment)
        print(format_summary(summary))
        print(f"report written to {path}")
    elif args.command == "export":
        from pathlib import Path

        from .lms_export import export

        outcome = export(
            course, args.assignment, args.lms_format, roster=Path(args.roster) if args.roster else None,
            student_id_is=args.student_id_is, canvas_name=args.canvas_name, canvas_id=args.canvas_id,
            visibility=args.visibility,
        )
        for warning in outcome.warnings:
            print(f"warning: {warning}")
        written = outcome.paths[0] if len(outcome.paths) == 1 else outcome.paths[0].parent
        print(f"{args.lms_format}: {len(outcome.paths)} file(s) written under {written}")
    return 0


def main() -> None:
    # nbgrader's own SQLAlchemy usage warns on every submission; nothing a TA can act on.
    warnings.filterwarnings("ignore", module="nbgrader")
    warnings.filterwarnings("ignore", message=".*not in session.*")
    try:
        code = run(sys.argv[1:])
    except UsageError as err:
        print(f"autograder: error: {err}", file=sys.stderr)
        code = err.exit_code
    except KeyboardInterrupt:
        print("autograder: interrupted", file=sys.stderr)
        code = 130
    if code:
        sys.exit(code)
    # Done: the gradebook, CSV, notebooks and sandboxes are written and closed.  Skip the
    # interpreter's teardown of torch, SQLAlchemy and nbgrader, half a second of every run.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
