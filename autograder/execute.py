"""Run a submission's notebooks and its tests.

For now this drives nbgrader's own autograde converter, in process, one
student at a time, with the course's nbgrader_config.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import nbformat
from nbgrader.converters import Autograde
from nbgrader.coursedir import CourseDirectory
from nbgrader.utils import capture_log

from .collect import Submission
from .course import Course
from .status import Status


@dataclass(frozen=True)
class Outcome:
    status: Status
    detail: str = ""


def execute(course: Course, submission: Submission) -> Outcome:
    config = course.config()
    coursedir = CourseDirectory(config=config)
    coursedir.assignment_id = submission.assignment
    coursedir.student_id = submission.student
    app = Autograde(coursedir=coursedir, config=config)
    app.force = True
    app.create_student = True
    result = capture_log(app)
    if not result["success"]:
        return _failure(result.get("error") or result.get("log") or "")
    timed_out = _timed_out_cells(course, submission)
    if timed_out:
        return Outcome(Status.TIMEOUT, "timed out: " + ", ".join(timed_out))
    return Outcome(Status.GRADED)


def _failure(error: str) -> Outcome:
    if "DeadKernelError" in error or "Kernel died" in error:
        return Outcome(Status.KERNEL_DIED, "the kernel died while running the notebook")
    if "Timeout" in error or "CellTimeoutError" in error:
        return Outcome(Status.TIMEOUT, "the kernel stopped responding")
    lines = [line for line in error.strip().splitlines() if line.strip()]
    return Outcome(Status.INVALID_NOTEBOOK, lines[-1].strip() if lines else "nbgrader could not grade it")


def _timed_out_cells(course: Course, submission: Submission) -> list[str]:
    names = []
    for name in course.notebook_names(submission.assignment):
        path = course.autograded / submission.student / submission.assignment / name
        if not path.is_file():
            continue
        for cell in nbformat.read(path, as_version=4).cells:
            for output in cell.get("outputs", []):
                if output.get("ename") == "CellTimeoutError":
                    names.append(cell.metadata.get("nbgrader", {}).get("grade_id", cell.get("id", "?")))
    return names
