"""Find the submissions to grade and reject the ones that cannot be graded."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nbformat

from .course import Course
from .errors import UsageError
from .status import Status

#: Larger notebooks are refused before anything parses them.
MAX_NOTEBOOK_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class Submission:
    student: str
    assignment: str
    folder: Path
    #: Set when collection already knows the outcome (missing, unreadable).
    problem: Status | None = None
    detail: str = ""


def collect(course: Course, assignment: str, students: list[str] | None, known_students: set[str]) -> list[Submission]:
    """One Submission per student: those asked for, else everyone submitted or enrolled."""
    submitted = {p.parent.name for p in course.submitted.glob(f"*/{assignment}") if p.is_dir()}
    if students:
        unknown = [s for s in students if s not in submitted and s not in known_students]
        if unknown:
            raise UsageError(f"unknown student(s): {', '.join(unknown)} (no submission and not in the gradebook)")
        chosen = list(dict.fromkeys(students))
    else:
        chosen = sorted(submitted | known_students)
    expected = course.notebook_names(assignment)
    grade_ids = _grade_ids(course.source / assignment)
    return [_inspect(course, assignment, student, expected, grade_ids) for student in chosen]


def _grade_ids(folder: Path) -> set[str]:
    ids = set()
    for path in folder.glob("*.ipynb"):
        for cell in nbformat.read(path, as_version=4).cells:
            meta = cell.metadata.get("nbgrader", {})
            if meta.get("grade") or meta.get("solution"):
                ids.add(meta["grade_id"])
    return ids


def _inspect(course: Course, assignment: str, student: str, expected: list[str], grade_ids: set[str]) -> Submission:
    folder = course.submitted / student / assignment
    if not folder.is_dir():
        return Submission(student, assignment, folder, Status.MISSING, "no submission")
    for name in expected:
        path = folder / name
        if not path.is_file():
            return Submission(student, assignment, folder, Status.MISSING, f"{name} not submitted")
        problem = _unreadable(path, grade_ids)
        if problem:
            return Submission(student, assignment, folder, Status.INVALID_NOTEBOOK, f"{name}: {problem}")
    return Submission(student, assignment, folder)


def _unreadable(path: Path, grade_ids: set[str]) -> str | None:
    """Why the notebook can't be graded, or None if it can."""
    if path.stat().st_size > MAX_NOTEBOOK_BYTES:
        return f"larger than {MAX_NOTEBOOK_BYTES // 2**20} MiB"
    try:
        raw = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as err:
        return f"not valid notebook JSON ({type(err).__name__}: {str(err).splitlines()[0]})"
    if not isinstance(raw, dict) or "cells" not in raw:
        return "not a Jupyter notebook"
    try:
        notebook = nbformat.reads(json.dumps(raw), as_version=4)
        nbformat.validate(notebook)
    except Exception as err:  # noqa: BLE001 - nbformat raises several unrelated types
        return f"not a valid notebook ({str(err).splitlines()[0]})"
    found = {c.metadata.get("nbgrader", {}).get("grade_id") for c in notebook.cells}
    if grade_ids and not grade_ids & found:
        return "none of this assignment's cells are in it (a notebook from another assignment?)"
    return None
