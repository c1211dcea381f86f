"""Regenerate the student notebooks in release/ from the instructor notebooks in source/."""

from __future__ import annotations

from nbgrader.converters import GenerateAssignment
from nbgrader.coursedir import CourseDirectory
from nbgrader.utils import capture_log

from .course import Course
from .errors import UsageError


def generate_release(course: Course, assignment: str) -> None:
    course.require_assignment(assignment)
    config = course.config()
    coursedir = CourseDirectory(config=config)
    coursedir.assignment_id = assignment
    app = GenerateAssignment(coursedir=coursedir, config=config)
    app.force = True
    result = capture_log(app)
    if not result["success"]:
        lines = (result.get("error") or result.get("log") or "").strip().splitlines()
        raise UsageError(f"could not generate release/{assignment}: {lines[-1] if lines else 'unknown error'}")
