"""A failure of the grader's own on one submission names the student and records everyone else."""

from __future__ import annotations

import csv

import pytest

import attacks
from autograder import grade as grade_module
from autograder.grade import grade_assignment
from autograder.record import stored_statuses
from autograder.status import Status
from fixture import ASSIGNMENT, make_course, release_notebook, submit


@pytest.mark.parametrize("workers", [1, 2])
def test_a_grader_failure_on_one_submission_does_not_stop_the_class(tmp_path, monkeypatch, capsys, workers):
    course = make_course(tmp_path / "course")
    release = release_notebook(course)
    for student in ("aaa_correct", "mmm_unlucky", "zzz_correct"):
        submit(course, student, attacks.honest("correct", release))
    real_plan = grade_module.plan_notebook

    def plan_that_fails_for_one(submitted, trusted):
        if any("unlucky" in str(cell.get("source", "")) for cell in submitted.cells):
            raise KeyError("a bug of the grader's own")
        return real_plan(submitted, trusted)

    notebook = (course.submitted / "mmm_unlucky" / ASSIGNMENT / "adv.ipynb")
    notebook.write_text(notebook.read_text().replace("Doubling is linear", "unlucky: doubling is linear"))
    monkeypatch.setattr(grade_module, "plan_notebook", plan_that_fails_for_one)

    rows, csv_path = grade_assignment(course, ASSIGNMENT, None, progress=False, workers=workers)

    by_student = {row.student: row for row in rows}
    assert by_student["aaa_correct"].status == Status.GRADED and by_student["aaa_correct"].score == 5
    assert by_student["zzz_correct"].status == Status.GRADED and by_student["zzz_correct"].score == 5
    unlucky = by_student["mmm_unlucky"]
    assert unlucky.status == Status.GRADER_ERROR and unlucky.score == 0
    assert "mmm_unlucky" in unlucky.detail and "KeyError" in unlucky.detail
    assert stored_statuses(course, ASSIGNMENT)["mmm_unlucky"][0] == "grader error"
    with csv_path.open() as handle:
        assert {row["student"]: row["status"] for row in csv.DictReader(handle)}["mmm_unlucky"] == "grader error"
    assert "warning: the grader failed on mmm_unlucky's submission" in capsys.readouterr().err
    assert not list((course.autograded / "mmm_unlucky").glob(f".{ASSIGNMENT}.*")), "a staging folder was left behind"
