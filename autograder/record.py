"""Write outcomes where a TA looks: the nbgrader gradebook and grades.csv."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook, MissingEntry

from .collect import Submission
from .course import Course
from .status import Status

CSV_FIELDS = ["student", "status", "score", "max_score", "manual_pending", "failed_tests", "messages", "detail"]


@dataclass
class GradeRow:
    student: str
    status: Status
    score: float
    max_score: float
    manual_pending: int = 0
    #: grade_id -> the first line of the failing check's message.
    failures: dict[str, str] = field(default_factory=dict)
    detail: str = ""

    def as_csv(self) -> dict[str, str]:
        return {
            "student": self.student,
            "status": str(self.status),
            "score": f"{self.score:g}",
            "max_score": f"{self.max_score:g}",
            "manual_pending": str(self.manual_pending),
            "failed_tests": ";".join(self.failures),
            "messages": " | ".join(f"{name}: {message}" for name, message in self.failures.items()),
            "detail": self.detail,
        }


def enrolled_students(course: Course) -> set[str]:
    with Gradebook(course.db_url) as gradebook:
        return {student.id for student in gradebook.students}


def knows_assignment(course: Course, assignment: str) -> bool:
    """Whether the gradebook holds the assignment's test cells (nbgrader puts them there on release)."""
    with Gradebook(course.db_url) as gradebook:
        try:
            return bool(gradebook.find_assignment(assignment).notebooks)
        except MissingEntry:
            return False


def assignment_max_score(course: Course, assignment: str) -> float:
    with Gradebook(course.db_url) as gradebook:
        try:
            return float(gradebook.find_assignment(assignment).max_score)
        except MissingEntry:
            return 0.0


def graded_row(course: Course, submission: Submission, status: Status, detail: str) -> GradeRow:
    """Read one graded submission's scores back from the gradebook."""
    with Gradebook(course.db_url) as gradebook:
        record = gradebook.find_submission(submission.assignment, submission.student)
        score, max_score = float(record.score), float(record.max_score)
        failed, pending = [], 0
        for notebook in record.notebooks:
            for grade in notebook.grades:
                if grade.needs_manual_grade:
                    pending += 1
                elif grade.cell_type == "code" and (grade.auto_score or 0) < grade.max_score:
                    failed.append(grade.name)
    messages = _failure_messages(course, submission)
    failures = {name: messages.get(name, "") for name in failed}
    return GradeRow(submission.student, status, score, max_score, pending, failures, detail)


def ungraded_row(course: Course, submission: Submission, status: Status, detail: str) -> GradeRow:
    return GradeRow(submission.student, status, 0.0, assignment_max_score(course, submission.assignment), detail=detail)


def _failure_messages(course: Course, submission: Submission) -> dict[str, str]:
    messages = {}
    folder = course.autograded / submission.student / submission.assignment
    for path in sorted(folder.glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
            errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
            if grade_id and errors:
                first = errors[0]
                text = (first.get("evalue") or "").strip().splitlines()
                messages[grade_id] = f"{first.get('ename')}: {text[0] if text else ''}".strip()
    return messages


def write_csv(rows: list[GradeRow], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow(row.as_csv())
    return path
