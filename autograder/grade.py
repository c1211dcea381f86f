"""Grade one assignment for a class: collect, sandbox, execute (with verdicts), record, report.

Each submission is graded on its own: its own scratch copy of its files, its
own sandboxed worker per notebook, its own database transaction.  Nothing one
submission does can reach another's files or grades.

Submissions are graded by a pool of ``workers`` processes (each with its own
pre-warmed sandbox, see zygote.py, and one CPU thread; see pool.py), because
test cells run in the grader and ``forbid`` patches torch for the whole
process, and because a submission whose values keep the grader busy in C code
can only be stopped by killing the process that grades it.  A pool process only
computes a submission's results; every write (gradebook, autograded notebooks,
grades.csv) happens here, in this one process, in the order submissions
finish, so concurrency cannot corrupt the gradebook.

With runners (``runners``, see runner.py) the submissions are graded on Dask
runners instead of the local pool: the same job (job.py) and the same grading
function, and the same recording here, in the order results arrive.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from . import sandbox, verdict
from .collect import Submission, collect, trusted_notebooks
from .course import Course
from .errors import UsageError
from .job import JobOutcome, Provenance, build_job, provenance, run_job
from .pool import DONE, OVERRAN, GradingPool, Outcome
from .record import GradebookWriter, GradeRow, enrolled_students, knows_assignment, write_csv
from .release import generate_release
from .status import Status
from .wire import safe_text

if TYPE_CHECKING:
    from .runner import RunnerSettings


def default_limits(course: Course) -> sandbox.Limits:
    """The sandbox limits: nbgrader's ``Execute.timeout`` per cell, and any ``c.Sandbox.<field>``
    of nbgrader_config.py (``c.Sandbox.notebook_seconds = 600``, ``c.Sandbox.memory_bytes = 8 * 2**30``...)."""
    config = course.config()
    values: dict = {}
    timeout = config.Execute.get("timeout")
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0:
        values["cell_seconds"] = float(timeout)
    fields = sandbox.Limits.__dataclass_fields__
    for key, value in config.get("Sandbox", {}).items():
        if key not in fields:
            raise UsageError(f"nbgrader_config.py: c.Sandbox.{key} is not a sandbox limit (known: {', '.join(fields)})")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise UsageError(f"nbgrader_config.py: c.Sandbox.{key} must be a positive number")
        values[key] = type(getattr(sandbox.Limits(), key))(value)
    return sandbox.Limits(**values)


def resolve_device(device: str) -> str:
    """``cpu``, ``cuda`` or ``auto`` (cuda where torch sees a GPU) to ``cpu`` or ``cuda``."""
    import torch

    if device not in ("cpu", "cuda", "auto"):
        raise UsageError(f"--device must be cpu, cuda or auto, not {device!r}")
    available = torch.cuda.is_available()
    if device == "cuda" and not available:
        raise UsageError("--device cuda: no CUDA GPU is available here (torch.cuda.is_available() is False)")
    if device == "auto":
        return "cuda" if available else "cpu"
    return device


def grade_assignment(
    course: Course,
    assignment: str,
    students: list[str] | None = None,
    progress: bool = True,
    limits: sandbox.Limits | None = None,
    workers: int = 1,
    device: str = "cpu",
    runners: "RunnerSettings | None" = None,
) -> tuple[list[GradeRow], Path]:
    """Grade ``assignment`` for ``students`` (default: everyone); with ``runners`` (default: ``c.Runners`` of
    nbgrader_config.py, so every grading door can use them), on the Dask runners of ``runners.scheduler``
    (refused at once when none suitable is connected), else on this machine."""
    if not isinstance(workers, int) or workers < 1:
        raise UsageError(f"--workers must be a positive integer, not {workers!r}")
    from .runner import settings_from_config

    runners = runners or settings_from_config(course.config())
    if runners is not None:
        from .runner import RunnerClient

        client = RunnerClient(runners, device)
        try:
            return _grade(course, assignment, students, progress, limits, workers, client.device, client)
        finally:
            client.close()
    return _grade(course, assignment, students, progress, limits, workers, resolve_device(device), None)


def _grade(course, assignment, students, progress, limits, workers, device, client) -> tuple[list[GradeRow], Path]:
    course.require_assignment(assignment)
    if not knows_assignment(course, assignment):
        # Hidden tests reach the gradebook when nbgrader generates the release.
        generate_release(course, assignment)
    limits = limits or default_limits(course)
    # With runners, the sandbox is theirs: each graded row names the runner's mode.
    mode = sandbox.sandbox_mode() if client is None else ""
    sandbox.sweep_leftovers()
    trusted = trusted_notebooks(course, assignment)
    submissions = collect(course, assignment, trusted, students, enrolled_students(course))
    optimizers = _mentions_optimizers(course.release / assignment)
    rows: list[GradeRow | None] = [None] * len(submissions)
    with GradebookWriter(course) as writer:
        todo = []
        for position, submission in enumerate(submissions):
            if submission.problem is not None:
                rows[position] = writer.ungraded(submission, submission.problem, submission.detail, mode)
            else:
                todo.append(position)
        bar = tqdm(total=len(submissions), desc=f"grading {assignment}", unit="student", disable=not progress)
        bar.update(len(submissions) - len(todo))
        workers = min(workers, max(len(todo), 1))
        jobs = [(position, (submissions[position], trusted, limits, mode, device, course.release),
                 submission_budget(limits, submissions[position], trusted)) for position in todo]
        here = provenance(device)  # asked here, before the pool forks (see job.run_job)
        try:
            if client is not None:
                builders = [(position, functools.partial(build_job, submissions[position], trusted, limits, device, course.release,
                                                         optimizers)) for position in todo]
                for position, outcome in client.run(builders):
                    rows[position] = _record(writer, submissions[position], outcome, mode, here)
                    bar.update()
            else:
                pool = GradingPool(workers, _grade_one, initializer=_pool_init, initargs=(limits, mode, device, optimizers))
                pool.after_loss = sandbox.sweep_leftovers
                with pool:
                    for position, outcome in pool.run(jobs):
                        rows[position] = _record(writer, submissions[position], outcome, mode, here)
                        bar.update()
        finally:
            bar.close()
    done = [row for row in rows if row is not None]
    # Grading some students (--student) updates their rows; the rest of the class stays.
    csv_path = write_csv(done, course.reports / assignment / "grades.csv", merge=bool(students))
    return done, csv_path


def submission_budget(limits: sandbox.Limits, submission: Submission, trusted: dict) -> float:
    """The hard wall-clock limit on grading one submission (see ``Limits.submission_seconds``)."""
    return limits.submission_seconds(sum(1 for name in trusted if (submission.folder / name).is_file()))


def _record(writer: GradebookWriter, submission: Submission, outcome: Outcome, mode: str, here: Provenance) -> GradeRow:
    """Write one submission's outcome to the gradebook, whatever it is, with where it was graded
    (a runner's outcome says which; the local pool's is ``here``)."""
    where = (getattr(outcome, "provenance", None) or here).as_dict()
    mode = getattr(outcome, "sandbox", "") or mode
    try:
        if outcome.kind == DONE:
            graded: JobOutcome = outcome.value
            return writer.graded(submission, graded.results, graded.status, graded.detail, graded.sandbox or mode, provenance=where)
        if outcome.kind == OVERRAN:
            return writer.ungraded(submission, Status.TIMEOUT, outcome.detail, mode, provenance=where)
        return _grader_error(writer, submission, outcome.detail, mode, where)
    except Exception as err:  # noqa: BLE001 - one submission must not stop the class
        return _grader_error(writer, submission, f"{type(err).__name__}: {safe_text(err, 300)}", mode, where)


def _grader_error(writer: GradebookWriter, submission: Submission, error: str, mode: str, where: dict | None = None) -> GradeRow:
    """Record that the grader failed on this submission, naming the student and the error, and go on."""
    detail = f"the grader failed on {submission.student}'s submission ({safe_text(error, 300)}); rerun to retry"
    print(f"warning: {detail}", file=sys.stderr)
    return writer.ungraded(submission, Status.GRADER_ERROR, detail, mode, provenance=where)


def _pool_init(limits: sandbox.Limits, mode: str, device: str, optimizers: bool) -> None:
    """A pool process: one CPU thread and a warm sandbox before the first submission.

    It ends with the grader, even a grader killed by SIGKILL, and its sandboxes,
    started with bwrap --die-with-parent, end with it."""
    import torch

    sandbox.die_with_parent()
    torch.set_num_threads(1)
    sandbox.warm_up(limits, mode, device, optimizers)


def _grade_one(
    submission: Submission, trusted: dict, limits: sandbox.Limits, mode: str, device: str, release: Path
) -> JobOutcome:
    """Run one submission's notebooks; writes nothing (the caller records the results).  The job is
    what a runner would receive (job.py): local grading and runners call the same ``run_job``."""
    return run_job(build_job(submission, trusted, limits, device, release), mode)


def _mentions_optimizers(release: Path) -> bool:
    """Whether the released notebooks talk about torch.optim, so student code is likely to build optimizers."""
    return any("optim" in path.read_text(errors="replace") for path in release.glob("*.ipynb"))
