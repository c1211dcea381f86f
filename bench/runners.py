"""Runners against local grading, on the same class, in one run.

    python bench/runners.py [--assignment a01_encoding] [--copies 12]

Starts a real ``dask scheduler`` and ``autograder runner`` processes on
loopback and grades identical copies of one class (the assignment's bundled
samples, repeated to ``--copies`` students):

* locally with one and with two pool processes (``autograder grade --workers``);
* on one runner, then on two;
* on one runner with one job in flight at a time, to measure what the Dask
  path adds to each submission: the time from one result to the next (read
  the submission into a job, send it through the scheduler, hand it to the
  runner's grading process, send the results back) minus the seconds the
  runner's grading process spent on it.

Runners are started and warmed before their clock starts (a runner lives for a
whole class or a term); local grading pays its pool's start inside its time,
as ``autograder grade`` does.  Prints a table and whether all scores agree.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from autograder import sandbox  # noqa: E402
from autograder.collect import collect, trusted_notebooks  # noqa: E402
from autograder.course import Course  # noqa: E402
from autograder.grade import default_limits, grade_assignment  # noqa: E402
from autograder.job import build_job  # noqa: E402
from autograder.record import enrolled_students  # noqa: E402
from autograder.release import generate_release  # noqa: E402
from autograder.runner import RunnerClient, RunnerSettings  # noqa: E402
from autograder.samples import load_samples, submit_sample  # noqa: E402


def make_class(folder: Path, assignment: str, copies: int) -> tuple[Course, list[str]]:
    course = Course.open(REPO).copy_to(folder)
    samples = load_samples(course, assignment)
    students = []
    for index in range(copies):
        sample = samples[index % len(samples)]
        student = f"{sample.student}-{index:03d}"
        submit_sample(course, sample, student)
        students.append(student)
    generate_release(course, assignment)
    return course, students


class Processes:
    def __init__(self, folder: Path) -> None:
        self.folder, self.running = folder, []

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        with open(self.folder / f"{name}.log", "wb") as log:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=REPO, start_new_session=True)
        self.running.append(process)
        return process

    def stop(self) -> None:
        for process in self.running:
            if process.poll() is None:
                os.killpg(process.pid, 9)
            process.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_runners(address: str, count: int, seconds: float = 900) -> None:
    deadline = time.monotonic() + seconds
    with RunnerClient(RunnerSettings(address), "cpu", check=False) as client:
        while len(client.runners()) < count:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {len(client.runners())} of {count} runners connected")
            time.sleep(0.5)


def timed_grade(course: Course, assignment: str, students: list[str], **options) -> tuple[float, dict]:
    started = time.perf_counter()
    rows, _ = grade_assignment(course, assignment, students, progress=False, device="cpu", **options)
    return time.perf_counter() - started, {row.student: (str(row.status), row.score) for row in rows}


def dask_overhead(course: Course, assignment: str, students: list[str], address: str) -> list[float]:
    """Per submission: time between consecutive results with one job in flight, minus the runner's own grading time."""
    limits = default_limits(course)
    trusted = trusted_notebooks(course, assignment)
    submissions = collect(course, assignment, trusted, students, enrolled_students(course))
    added = []
    with RunnerClient(RunnerSettings(address), "cpu") as client:
        client.in_flight_per_runner = 1
        todo = [(s.student, functools.partial(build_job, s, trusted, limits, "cpu", course.release)) for s in submissions]
        last = time.perf_counter()
        for _, outcome in client.run(todo):
            now = time.perf_counter()
            added.append(now - last - outcome.runner_seconds)
            last = now
    return added[1:]  # the first includes the client's own first look at the scheduler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assignment", default="a01_encoding")
    parser.add_argument("--copies", type=int, default=12)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-runners-"))
    processes = Processes(scratch)
    results: dict[str, tuple[float, dict]] = {}
    try:
        print(f"{args.copies} submissions of {args.assignment}, {os.cpu_count()} CPU cores, sandbox {sandbox.sandbox_mode()}, "
              f"load average {os.getloadavg()[0]:.1f} at start", flush=True)
        for workers in (1, 2):
            course, students = make_class(scratch / f"local-{workers}", args.assignment, args.copies)
            results[f"local, {workers} process{'es' if workers > 1 else ''}"] = timed_grade(course, args.assignment, students,
                                                                                          workers=workers)
            print(f"  local {workers}: {results[list(results)[-1]][0]:.1f} s", flush=True)

        address = f"tcp://127.0.0.1:{free_port()}"
        dask = Path(sys.executable).with_name("dask")
        processes.start("scheduler", [str(dask), "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                                      "--no-dashboard"])
        autograder = Path(sys.executable).with_name("autograder")
        for count in (1, 2):
            processes.start(f"runner-{count}", [str(autograder), "runner", "--scheduler", address, "--name", f"runner-{count}"])
            wait_for_runners(address, count)
            if count == 1:
                course, students = make_class(scratch / "overhead", args.assignment, args.copies)
                added = dask_overhead(course, args.assignment, students, address)
            course, students = make_class(scratch / f"runners-{count}", args.assignment, args.copies)
            results[f"{count} runner{'s' if count > 1 else ''}"] = timed_grade(course, args.assignment, students,
                                                                               runners=RunnerSettings(address))
            print(f"  runners {count}: {results[list(results)[-1]][0]:.1f} s", flush=True)
    finally:
        processes.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    print()
    print("| | wall s | s/sub | subs/min |")
    print("|---|---:|---:|---:|")
    for name, (seconds, _) in results.items():
        print(f"| {name} | {seconds:.1f} | {seconds / args.copies:.2f} | {60 * args.copies / seconds:.1f} |")
    print()
    print(f"- Dask path, added per submission (one job in flight, {len(added)} submissions): "
          f"median {1000 * statistics.median(added):.0f} ms, mean {1000 * statistics.mean(added):.0f} ms, "
          f"max {1000 * max(added):.0f} ms (target: at most 20 ms)")
    scores = [summary for _, summary in results.values()]
    agree = all(summary == scores[0] for summary in scores)
    print(f"- Scores and statuses {'agree' if agree else 'DISAGREE'} across all runs.")
    print(f"- Load average {os.getloadavg()[0]:.1f} at the end.")


if __name__ == "__main__":
    main()
