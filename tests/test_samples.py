"""The bundled samples grade as designed through the real nbgrader pipeline.

The correct sample earns every autograded point, the untouched release earns
none, and each buggy sample fails exactly the tests aimed at its mistake,
with feedback that names the mistake.
"""

import nbformat
import pytest

from autograder.course import Course
from autograder.samples import load_requirements, load_samples
from course_checks import LIKELY
from autograder.status import Status
from conftest import REPO, assignments


REPO_COURSE = Course.open(REPO)


def _cases():
    for assignment in assignments():
        for sample in load_samples(REPO_COURSE, assignment):
            yield pytest.param(assignment, sample.student, id=f"{assignment}-{sample.student}")


def _points(course, assignment):
    """grade_id -> points for every autograded test cell of the assignment."""
    points = {}
    for path in (course.source / assignment).glob("*.ipynb"):
        for cell in nbformat.read(path, as_version=4).cells:
            meta = cell.metadata.get("nbgrader", {})
            if meta.get("grade") and not meta.get("solution"):
                points[meta["grade_id"]] = meta["points"]
    return points


def _manual_points(course, assignment):
    total = 0
    for path in (course.source / assignment).glob("*.ipynb"):
        for cell in nbformat.read(path, as_version=4).cells:
            meta = cell.metadata.get("nbgrader", {})
            if meta.get("grade") and meta.get("solution"):
                total += meta["points"]
    return total


@pytest.mark.parametrize("assignment", assignments())
def test_every_assignment_bundles_correct_untouched_and_buggy_samples(assignment):
    students = {s.student: s for s in load_samples(REPO_COURSE, assignment)}
    assert {"correct", "untouched"} <= set(students), f"{assignment}: needs 'correct' and 'untouched' samples"
    buggy = [s for s in students.values() if s.student not in ("correct", "untouched")]
    assert len(buggy) >= 3, f"{assignment}: needs several buggy samples from the mistake catalogue"
    for sample in buggy:
        if sample.is_alternative:
            continue
        assert sample.mistake and sample.expect_failed and sample.expect_message, f"{sample.student}: incomplete spec"


#: Correct solutions written another way, from the release notebook alone.
MIN_ALTERNATIVES = 5


@pytest.mark.parametrize("assignment", assignments())
def test_every_assignment_bundles_correct_alternatives(assignment):
    alternatives = [s for s in load_samples(REPO_COURSE, assignment) if s.is_alternative]
    assert len(alternatives) >= MIN_ALTERNATIVES, (
        f"{assignment}: {len(alternatives)} correct alternatives, expected at least {MIN_ALTERNATIVES}"
    )
    assert len({s.style for s in alternatives}) == len(alternatives), f"{assignment}: two alternatives share a style"


@pytest.mark.parametrize("assignment", assignments())
def test_every_stated_requirement_has_a_sample_that_violates_it(assignment):
    samples = {s.student: s for s in load_samples(REPO_COURSE, assignment)}
    requirements = load_requirements(REPO_COURSE, assignment)
    assert requirements, f"{assignment}: lists no [[requirement]]"
    solution_cells = {cell.metadata["nbgrader"]["grade_id"]
                      for path in (REPO_COURSE.source / assignment).glob("*.ipynb")
                      for cell in nbformat.read(path, as_version=4).cells
                      if cell.metadata.get("nbgrader", {}).get("solution")}
    for requirement in requirements:
        assert requirement.cell in solution_cells, f"{assignment}: {requirement.text!r} names unknown cell {requirement.cell!r}"
        sample = samples.get(requirement.sample)
        assert sample is not None, f"{assignment}: no sample {requirement.sample!r} for {requirement.text!r}"
        assert sample.expect_failed, f"{assignment}: {requirement.sample!r} violates {requirement.text!r} but fails nothing"


@pytest.mark.parametrize("assignment,student", list(_cases()))
def test_sample_scores_as_designed(graded_samples, assignment, student):
    course, samples, rows = graded_samples(assignment)
    sample = next(s for s in samples if s.student == student)
    row = rows[student]
    points = _points(course, assignment)
    autograded_max = sum(points.values())
    assert row.status == Status.GRADED, f"{student}: status {row.status} ({row.detail})"
    assert row.max_score == autograded_max + _manual_points(course, assignment)
    assert set(row.failures) == set(sample.expect_failed), (
        f"{student} failed {sorted(row.failures)}, expected exactly {sorted(sample.expect_failed)}: {row.failures}"
    )
    expected_score = autograded_max - sum(points[name] for name in sample.expect_failed)
    assert row.score == expected_score, f"{student} scored {row.score}, expected {expected_score}"
    for name in sample.expect_failed:
        message = row.failures[name]
        assert sample.expect_message in message, (
            f"{student}: feedback for {name} should mention {sample.expect_message!r}, got {message!r}"
        )
        if sample.named and student != "untouched":
            named = message.partition(LIKELY)[2]
            assert sample.expect_message in named, (
                f"{student}: feedback for {name} should name the mistake {sample.expect_message!r} "
                f"after {LIKELY!r}, got {message!r}"
            )
    if student == "correct":
        assert row.score == autograded_max and not row.failures
    if student == "untouched":
        assert row.score == 0 and row.manual_pending == 0
