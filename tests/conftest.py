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
