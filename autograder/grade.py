"""Grade one assignment for a class: collect, sandbox, execute (with verdicts), record, report.

Each submission is graded on its own: its own scratch copy of its files, its
own sandboxed worker per notebook, its own database transaction.  Nothing one
submission does can reach another's files or grades.

With ``workers`` > 1 the submissions are graded by a pool of processes (each
with its own pre-warmed sandbox, see zygote.py, and one CPU thread), because
test cells run in the grader and ``forbid`` patches torch for the whole
process: threads would see each other's patches.  A pool
process only computes a submission's results; every write (gradebook,
autograded notebooks, grades.csv) happens here, in this one process, in the
order submissions finish, so concurrency cannot corrupt the gradebook.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import sys
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from . import sandbox, verdict
from .collect import Submission, collect, plan_notebook, read_submitted, trusted_notebooks
from .course import Course
from .errors import UsageError
from .execute import NotebookResult, run_notebook
from .record import GradebookWriter, GradeRow, enrolled_students, knows_assignment, write_csv
from .release import generate_release
from .status import Status
from .wire import safe_text
from .verdict import DIED, MEMORY, PROTOCOL, TIMEOUT

#: When several things went wrong, the status names the one a TA must see first.
_PRIORITY = [Status.TAMPERED, Status.MEMORY_LIMIT, Status.TIMEOUT, Status.KERNEL_DIED]
_EVENT_STATUS = {PROTOCOL: Status.TAMPERED, MEMORY: Status.MEMORY_LIMIT, TIMEOUT: Status.TIMEOUT, DIED: Status.KERNEL_DIED}


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
) -> tuple[list[GradeRow], Path]:
    if not isinstance(workers, int) or workers < 1:
        raise UsageError(f"--workers must be a positive integer, not {workers!r}")
    device = resolve_device(device)
    course.require_assignment(assignment)
    if not knows_assignment(course, assignment):
        # Hidden tests reach the gradebook when nbgrader generates the release.
        generate_release(course, assignment)
    limits = limits or default_limits(course)
    mode = sandbox.sandbox_mode()
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
        try:
            if workers == 1:
                with _one_cpu_thread():
                    sandbox.warm_up(limits, mode, device, optimizers)
                    for position in todo:
                        submission = submissions[position]
                        try:
                            results, status, detail = _grade_one(submission, trusted, limits, mode, device, course.release)
                            rows[position] = writer.graded(submission, results, status, detail, mode)
                        except Exception as err:  # noqa: BLE001 - one submission must not stop the class
                            rows[position] = _grader_error(writer, submission, err, mode)
                        bar.update()
            else:
                _grade_in_pool(writer, course, submissions, todo, trusted, limits, mode, device, optimizers, workers, rows, bar)
        finally:
            sandbox.stop_zygotes()
            bar.close()
    done = [row for row in rows if row is not None]
    # Grading some students (--student) updates their rows; the rest of the class stays.
    csv_path = write_csv(done, course.reports / assignment / "grades.csv", merge=bool(students))
    return done, csv_path


def _grade_in_pool(writer, course, submissions, todo, trusted, limits, mode, device, optimizers, workers, rows, bar) -> None:
    # fork: the pool processes start with the grader's imports (torch, the engine) already loaded,
    # instead of paying seconds of imports each; they run no student code and touch no database.
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_pool_init, initargs=(limits, mode, device, optimizers)) as pool:
        pending: dict[Future, int] = {}
        queue = list(todo)
        # At most two submissions per process in flight: results arrive (and are recorded) as they finish.
        while queue or pending:
            while queue and len(pending) < 2 * workers:
                position = queue.pop(0)
                future = pool.submit(_grade_one, submissions[position], trusted, limits, mode, device, course.release)
                pending[future] = position
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                position = pending.pop(future)
                try:
                    results, status, detail = future.result()
                    rows[position] = writer.graded(submissions[position], results, status, detail, mode)
                except Exception as err:  # noqa: BLE001 - one submission must not stop the class
                    rows[position] = _grader_error(writer, submissions[position], err, mode)
                bar.update()


def _grader_error(writer: GradebookWriter, submission: Submission, error: Exception, mode: str) -> GradeRow:
    """Record that the grader failed on this submission, naming the student and the error, and go on."""
    detail = f"the grader failed on {submission.student}'s submission ({type(error).__name__}: {safe_text(error, 300)}); rerun to retry"
    print(f"warning: {detail}", file=sys.stderr)
    return writer.ungraded(submission, Status.GRADER_ERROR, detail, mode)


def _pool_init(limits: sandbox.Limits, mode: str, device: str, optimizers: bool) -> None:
    """A pool process: one CPU thread and a warm sandbox before the first submission.

    It ends with the grader, even a grader killed by SIGKILL (and its sandboxes,
    started with bwrap --die-with-parent, end with it), and it stops its zygote
    when it exits normally: pool processes run no atexit handlers."""
    import multiprocessing.util

    import torch

    sandbox.die_with_parent()
    multiprocessing.util.Finalize(None, sandbox.stop_zygotes, exitpriority=10)
    torch.set_num_threads(1)
    sandbox.warm_up(limits, mode, device, optimizers)


@contextlib.contextmanager
def _one_cpu_thread() -> Iterator[None]:
    """The grader's own torch work is the test cells' references on small tensors, where
    more threads only add synchronisation and compete with the sandboxed workers (one thread each)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _grade_one(
    submission: Submission, trusted: dict, limits: sandbox.Limits, mode: str, device: str, release: Path
) -> tuple[list[NotebookResult], Status, str]:
    """Run one submission's notebooks; writes nothing (the caller records the results)."""
    verdict.roundings_scale = verdict.CUDA_ROUNDINGS_SCALE if device == "cuda" else 1.0
    files = sandbox.submission_files(submission.folder, release / submission.assignment)
    scratch = sandbox.prepare_scratch(files)
    results: list[NotebookResult] = []
    try:
        for name, notebook in sorted(trusted.items()):
            if not (submission.folder / name).is_file():
                continue  # a notebook the gradebook knows but source/ no longer has: recorded as unanswered
            plan = plan_notebook(read_submitted(submission.folder / name), notebook)
            results.append(run_notebook(name, plan, scratch, limits, mode, device))
    finally:
        sandbox.remove_tree(scratch)
    status, detail = _outcome(results)
    return results, status, detail


def _mentions_optimizers(release: Path) -> bool:
    """Whether the released notebooks talk about torch.optim, so student code is likely to build optimizers."""
    return any("optim" in path.read_text(errors="replace") for path in release.glob("*.ipynb"))


def _outcome(results: list[NotebookResult]) -> tuple[Status, str]:
    found: dict[Status, list[str]] = {}
    for result in results:
        prefix = f"{result.name}: " if len(results) > 1 else ""
        for finding in result.plan.findings:
            found.setdefault(Status.TAMPERED, []).append(prefix + finding)
        for event in result.events:
            found.setdefault(_EVENT_STATUS.get(event.kind, Status.KERNEL_DIED), []).append(prefix + event.detail)
    status = next((s for s in _PRIORITY if s in found), Status.GRADED)
    details = [line for s in _PRIORITY for line in dict.fromkeys(found.get(s, []))]
    detail = "; ".join(details)
    return status, detail if len(detail) <= 1500 else detail[:1500] + " ..."
