"""Grading throughput: `autograder grade` against `nbgrader autograde`, side by side.

    python bench/grading_throughput.py [--assignment a02_cross_entropy] [--copies 100] [-- extra autograder args]

Both graders get identical copies of the same realistic class: the
assignment's bundled samples (correct, untouched and buggy), repeated to
``--copies`` students, each in its own scratch course folder.  nbgrader is the
baseline run beside ours.  Prints throughput and its ratio, the per-submission
overhead over the pure execution time of the notebook's own code, the peak
memory of each grader's whole process tree, and whether the scores agree.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from autograder.course import Course  # noqa: E402
from autograder.release import generate_release  # noqa: E402
from autograder.samples import load_samples, submit_sample  # noqa: E402



class TreeMemorySampler:
    """Peak summed RSS of a process and all its descendants, sampled every 50 ms."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "TreeMemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.wait(0.05):
            children: dict[int, list[int]] = {}
            rss: dict[int, int] = {}
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                try:
                    fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                pid = int(entry)
                children.setdefault(int(fields[1]), []).append(pid)
                rss[pid] = int(fields[21]) * page
            total, stack = 0, [self.pid]
            while stack:
                pid = stack.pop()
                total += rss.get(pid, 0)
                stack.extend(children.get(pid, []))
            self.peak = max(self.peak, total)


def make_course(root: Path, assignment: str, copies: int) -> list[str]:
    course = Course.open(REPO).copy_to(root)
    generate_release(course, assignment)  # puts the test cells into this course's gradebook
    samples = load_samples(course, assignment)
    students = []
    for index in range(copies):
        sample = samples[index % len(samples)]
        student = f"s{index:03d}_{sample.student}"
        submit_sample(course, sample, student)
        students.append(student)
    return students


def timed(command: list[str], cwd: Path) -> tuple[float, int, subprocess.CompletedProcess]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with TreeMemorySampler(process.pid) as sampler:
        stdout, stderr = process.communicate()
    elapsed = time.perf_counter() - started
    return elapsed, sampler.peak, subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def pure_execution_seconds(course_root: Path, assignment: str, students: list[str]) -> float:
    """Mean time to run a submission's code cells, with its test cells in their places, in one warm process.

    Figures are rendered to PNG as a notebook's ``plt.show()`` does (at the grader's 72 dpi): drawing
    the plots a notebook makes is part of running its code, in nbgrader and in our grader alike.
    """
    script = r"""
import json, sys, time, warnings, nbformat
warnings.simplefilter("ignore")
import matplotlib; matplotlib.use("Agg")
import torch, numpy, course_checks
paths, trusted = json.loads(sys.argv[1]), sys.argv[2]
tests = {}
for cell in nbformat.read(trusted, as_version=4).cells:
    meta = cell.metadata.get("nbgrader", {})
    if meta.get("grade") and not meta.get("solution"):
        tests[meta["grade_id"]] = cell.source
total = 0.0
for path in paths:
    namespace = {"__name__": "__main__"}
    started = time.perf_counter()
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        source = tests.get(grade_id, cell.source)
        try:
            exec(compile(source, "<cell>", "exec"), namespace)
        except BaseException:
            pass
        import io, matplotlib.pyplot as plt
        for number in plt.get_fignums():  # what plt.show() does in a notebook: render the figure
            plt.figure(number).savefig(io.BytesIO(), format="png", dpi=72)
        plt.close("all")
    total += time.perf_counter() - started
print(total / len(paths))
"""
    course = Course.open(course_root)
    notebook = course.notebook_names(assignment)[0]
    distinct = {s.split("_", 1)[1]: s for s in students}  # one submission per sample is enough
    paths = [str(course.submitted / s / assignment / notebook) for s in distinct.values()]
    trusted = str(course.source / assignment / notebook)
    import json

    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(paths), trusted],
        cwd=course.submitted, capture_output=True, text=True, check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return float(result.stdout.strip().splitlines()[-1])


def autograder_scores(course_root: Path, assignment: str) -> dict[str, float]:
    with open(course_root / "reports" / assignment / "grades.csv") as handle:
        return {row["student"]: float(row["score"]) for row in csv.DictReader(handle)}


def nbgrader_scores(course_root: Path, assignment: str, students: list[str]) -> dict[str, float]:
    from nbgrader.api import Gradebook, MissingEntry

    scores = {}
    with Gradebook(f"sqlite:///{course_root / 'gradebook.db'}") as gradebook:
        for student in students:
            try:
                scores[student] = float(gradebook.find_submission(assignment, student).score)
            except MissingEntry:
                scores[student] = float("nan")
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assignment", default="a02_cross_entropy")
    parser.add_argument("--copies", type=int, default=100)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="autograder's --workers (default: the CPU cores)")
    parser.add_argument("--skip-nbgrader", action="store_true", help="reuse no baseline; print ours only")
    parser.add_argument("autograder_args", nargs="*", help="extra arguments for `autograder grade` (after --)")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench-"))
    try:
        ours_root, theirs_root = scratch / "ours", scratch / "nbgrader"
        print(f"preparing {args.copies} copies of {args.assignment} in two scratch courses ...", flush=True)
        students = make_course(ours_root, args.assignment, args.copies)
        if not args.skip_nbgrader:
            make_course(theirs_root, args.assignment, args.copies)
        # The least of three: a busy machine can only make pure execution look slower, and so
        # the graders' overhead look smaller than it is.
        pure = min(pure_execution_seconds(ours_root, args.assignment, students) for _ in range(3))

        print("grading with autograder ...", flush=True)
        ours_s, ours_mem, ours = timed(
            [sys.executable, "-m", "autograder", "grade", args.assignment, "--no-progress", "--workers", str(args.workers), *args.autograder_args], ours_root
        )
        if ours.returncode:
            sys.exit(f"autograder failed:\n{ours.stderr[-2000:]}")
        ours_scores = autograder_scores(ours_root, args.assignment)

        if not args.skip_nbgrader:
            print("grading with nbgrader autograde (the baseline) ...", flush=True)
            theirs_s, theirs_mem, theirs = timed(
                ["nbgrader", "autograde", args.assignment, "--force", "--log-level=ERROR"], theirs_root
            )
            theirs_scores = nbgrader_scores(theirs_root, args.assignment, students)

        n = args.copies
        print()
        print(f"assignment {args.assignment}, {n} submissions, {os.cpu_count()} CPU cores, autograder workers: {args.workers}")
        print(f"pure execution of the notebook's own code: {pure:.3f} s per submission (least of 3 runs)")
        print(f"{'':24}{'wall s':>9}{'subs/s':>9}{'s/sub':>8}{'overhead s/sub':>16}{'peak MiB':>10}")
        def overhead(seconds: float, parallel: int) -> float:
            return seconds / n * parallel - pure

        rows = [("autograder grade", ours_s, ours_mem, args.workers)]
        if not args.skip_nbgrader:
            rows.append(("nbgrader autograde", theirs_s, theirs_mem, 1))
        for label, seconds, memory, parallel in rows:
            print(f"{label:24}{seconds:9.1f}{n / seconds:9.2f}{seconds / n:8.3f}{overhead(seconds, parallel):16.3f}{memory / 2**20:10.0f}")
        print(f"autograder overhead per submission: {overhead(ours_s, args.workers):.3f} s   (target: at most 0.15 s)")
        if not args.skip_nbgrader:
            print(f"throughput ratio (autograder / nbgrader): {theirs_s / ours_s:.1f}x   (target: at least 10x)")
            disagree = {s: (ours_scores.get(s), theirs_scores.get(s)) for s in students if ours_scores.get(s) != theirs_scores.get(s)}
            if disagree:
                print(f"scores DISAGREE for {len(disagree)} of {n} submissions, e.g. {dict(list(disagree.items())[:3])}")
            else:
                print(f"scores agree for all {n} submissions")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
