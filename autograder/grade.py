"""Grade one assignment for a class: collect, sandbox, execute (with verdicts), record, report.

Each submission is graded on its own: its own scratch copy of its files, its
own sandboxed worker per notebook, its own database transaction.  Nothing one
submission does can reach another's files or grades.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tqdm import tqdm

from . import sandbox
from .collect import Submission, collect, plan_notebook, read_submitted, trusted_notebooks
from .course import Course
from .errors import UsageError
from .execute import NotebookResult, run_notebook
from .record import GradeRow, enrolled_students, knows_assignment, record_graded, record_ungraded, write_csv
from .release import generate_release
from .status import Status
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


def grade_assignment(
    course: Course,
    assignment: str,
    students: list[str] | None = None,
    progress: bool = True,
    limits: sandbox.Limits | None = None,
) -> tuple[list[GradeRow], Path]:
    course.require_assignment(assignment)
    if not knows_assignment(course, assignment):
        # Hidden tests reach the gradebook when nbgrader generates the release.
        generate_release(course, assignment)
    limits = limits or default_limits(course)
    mode = sandbox.sandbox_mode()
    submissions = collect(course, assignment, students, enrolled_students(course))
    trusted = trusted_notebooks(course, assignment)
    rows = []
    for submission in tqdm(submissions, desc=f"grading {assignment}", unit="student", disable=not progress):
        if submission.problem is not None:
            rows.append(record_ungraded(course, submission, submission.problem, submission.detail, mode))
            continue
        rows.append(_grade_one(course, submission, trusted, limits, mode))
    csv_path = write_csv(rows, course.reports / assignment / "grades.csv")
    return rows, csv_path


def _grade_one(course: Course, submission: Submission, trusted: dict, limits: sandbox.Limits, mode: str) -> GradeRow:
    files = sandbox.submission_files(submission.folder, course.release / submission.assignment)
    scratch = sandbox.prepare_scratch(files)
    results: list[NotebookResult] = []
    try:
        for name, notebook in sorted(trusted.items()):
            if not (submission.folder / name).is_file():
                continue  # a notebook the gradebook knows but source/ no longer has: recorded as unanswered
            plan = plan_notebook(read_submitted(submission.folder / name), notebook)
            results.append(run_notebook(name, plan, scratch, limits, mode))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    status, detail = _outcome(results)
    return record_graded(course, submission, results, status, detail, mode)


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
