"""Shared fixtures: a scratch copy of the course, so tests never touch the TA's gradebook."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from autograder.course import Course
from autograder.grade import grade_assignment
from autograder.samples import install_samples

REPO = Path(__file__).resolve().parent.parent
# The adversarial corpus (attacks.py) and its fixture course (fixture.py), shared by the engine tests.
sys.path.insert(0, str(REPO / "tests" / "adversarial"))


def assignments() -> list[str]:
    return sorted(p.name for p in (REPO / "source").iterdir() if p.is_dir())


def copy_course(destination: Path) -> Course:
    return Course.open(REPO).copy_to(destination)


@pytest.fixture
def course(tmp_path: Path) -> Course:
    return copy_course(tmp_path / "course")


@pytest.fixture(scope="session")
def graded_samples(tmp_path_factory: pytest.TempPathFactory):
    """Every assignment's bundled samples, graded once for the whole session."""
    course = copy_course(tmp_path_factory.mktemp("graded") / "course")
    results = {}

    def grade(assignment: str):
        if assignment not in results:
            samples = install_samples(course, assignment)
            # Two workers, as a TA's machine would: ~40 samples an assignment.
            rows, _ = grade_assignment(course, assignment, [s.student for s in samples], progress=False, workers=2)
            results[assignment] = (course, samples, {row.student: row for row in rows})
        return results[assignment]

    return grade


@pytest.fixture(scope="session")
def graded_class(graded_samples, tmp_path_factory: pytest.TempPathFactory):
    """a01's graded samples (shared with test_samples), copied, plus a tampered, a corrupt and a
    misnamed submission and one manual grade: a class with every kind of row, for the class
    report and the LMS exports.  A copy, so the tests may write reports into it.
    Returns (course, {student: GradeRow}) where the rows are what grading reported."""
    import shutil

    import nbformat
    from nbgrader.api import Gradebook

    from autograder.samples import load_samples, submit_sample

    assignment = "a01_encoding"
    original, _, rows = graded_samples(assignment)
    course = Course.open(shutil.copytree(original.root, tmp_path_factory.mktemp("class") / "course"))
    correct = next(s for s in load_samples(course, assignment) if s.student == "correct")
    submit_sample(course, correct, "tampered")
    notebook_path = course.submitted / "tampered" / assignment / "encoding.ipynb"
    notebook = nbformat.read(notebook_path, as_version=4)
    for cell in notebook.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "test_one_hot_basic":
            cell.source = "pass  # the test, edited away"
    nbformat.write(notebook, notebook_path)
    (course.submitted / "corrupt" / assignment).mkdir(parents=True)
    (course.submitted / "corrupt" / assignment / "encoding.ipynb").write_text('{"cells": [ not json')
    (course.submitted / "renamed" / assignment).mkdir(parents=True)
    shutil.copy(course.submitted / "correct" / assignment / "encoding.ipynb", course.submitted / "renamed" / assignment / "mine.ipynb")
    extra, _ = grade_assignment(course, assignment, ["tampered", "corrupt", "renamed"], progress=False, workers=1)
    rows = {**rows, **{row.student: row for row in extra}}
    with Gradebook(course.db_url) as gradebook:  # a TA grades one written answer in the formgrader
        grade = gradebook.find_grade("q_label_smoothing", "encoding", assignment, "correct")
        grade.manual_score = grade.max_score
        grade.needs_manual_grade = False
        gradebook.db.commit()
    return course, rows
