"""Grade one assignment for a class: collect, execute, record, report."""

from __future__ import annotations

import shutil
from pathlib import Path

from tqdm import tqdm

from .collect import collect
from .course import Course
from .execute import execute
from .record import GradeRow, enrolled_students, graded_row, knows_assignment, ungraded_row, write_csv
from .release import generate_release


def grade_assignment(course: Course, assignment: str, students: list[str] | None = None, progress: bool = True) -> tuple[list[GradeRow], Path]:
    course.require_assignment(assignment)
    if not knows_assignment(course, assignment):
        # Hidden tests reach the gradebook when nbgrader generates the release.
        generate_release(course, assignment)
    submissions = collect(course, assignment, students, enrolled_students(course))
    rows = []
    for submission in tqdm(submissions, desc=f"grading {assignment}", unit="student", disable=not progress):
        if submission.problem is not None:
            _discard_stale_autograded(course, submission.student, assignment)
            rows.append(ungraded_row(course, submission, submission.problem, submission.detail))
            continue
        outcome = execute(course, submission)
        if (course.autograded / submission.student / assignment).is_dir():
            rows.append(graded_row(course, submission, outcome.status, outcome.detail))
        else:
            rows.append(ungraded_row(course, submission, outcome.status, outcome.detail))
    csv_path = write_csv(rows, course.reports / assignment / "grades.csv")
    return rows, csv_path


def _discard_stale_autograded(course: Course, student: str, assignment: str) -> None:
    # An earlier run's autograded copy would otherwise look like this run's result.
    shutil.rmtree(course.autograded / student / assignment, ignore_errors=True)
