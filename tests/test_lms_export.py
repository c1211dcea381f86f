"""`autograder export A --format gradescope|canvas`: files in each LMS's published format, with the class's real scores.

Gradescope: https://gradescope-autograders.readthedocs.io/en/latest/specs/ (results.json).
Canvas: the Gradebook's CSV import (Student, ID, SIS User ID, SIS Login ID, Section, then "Assignment (id)").
"""

from __future__ import annotations

import csv
import json
import re

import nbformat
import pytest
from nbgrader.api import Gradebook

from autograder.class_data import load_class, named_mistake
from autograder.lms_export import export
from conftest import REPO
from test_cli import _one_line_error, autograder

ASSIGNMENT = "a01_encoding"
UNGRADED = {"missing", "invalid notebook", "grader error"}
# Gradescope's autograder specification: the keys a results.json and each of its tests may have.
GRADESCOPE_TOP = {"score", "execution_time", "output", "output_format", "test_output_format", "test_name_format",
                  "visibility", "stdout_visibility", "extra_data", "tests", "leaderboard"}
GRADESCOPE_TEST = {"score", "max_score", "status", "name", "name_format", "number", "output", "output_format", "tags",
                   "visibility", "extra_data"}
GRADESCOPE_VISIBILITY = {"hidden", "after_due_date", "after_published", "visible"}
HIDDEN = re.compile(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", re.S)


@pytest.fixture(scope="module")
def gradescope(graded_class):
    course, rows = graded_class
    result = autograder("export", ASSIGNMENT, "--format", "gradescope", "--course", str(course.root))
    assert result.returncode == 0 and result.stderr == "", result.stderr
    folder = course.reports / ASSIGNMENT / "gradescope"
    documents = {p.parent.name: json.loads(p.read_text(encoding="utf-8")) for p in folder.glob("*/results.json")}
    return course, rows, documents, result.stdout


def test_gradescope_results_follow_the_specification(gradescope):
    course, rows, documents, _ = gradescope
    results = {s.student: s for s in load_class(course, ASSIGNMENT).students}
    graded = {student for student, row in rows.items() if str(row.status) not in UNGRADED}
    assert set(documents) == graded, "one results.json per graded student, none for missing or invalid submissions"
    for student, document in documents.items():
        assert set(document) <= GRADESCOPE_TOP, set(document) - GRADESCOPE_TOP
        assert isinstance(document["score"], (int, float)) and document["score"] == results[student].score
        assert isinstance(document["execution_time"], int) and document["execution_time"] >= 1
        assert document["extra_data"]["status"] == str(rows[student].status)
        tests = document["tests"]
        for test in tests:
            assert set(test) <= GRADESCOPE_TEST and {"name", "score", "max_score", "output", "visibility"} <= set(test), test
            assert isinstance(test["name"], str) and test["visibility"] in GRADESCOPE_VISIBILITY
            assert 0 <= test["score"] <= test["max_score"]
            assert test.get("status", "passed") in ("passed", "failed")
        # No late penalties here: the tests add up to the score, and their maxima to the assignment's.
        assert sum(t["score"] for t in tests) == document["score"]
        assert sum(t["max_score"] for t in tests) == results[student].max_score == 12


def _feedback_messages(course, student: str) -> dict[str, str]:
    """Each failed test's message in the student's autograded notebook (what the feedback shows)."""
    notebook = nbformat.read(course.autograded / student / ASSIGNMENT / "encoding.ipynb", as_version=4)
    return {
        cell.metadata["nbgrader"]["grade_id"]: output["evalue"]
        for cell in notebook.cells if "nbgrader" in cell.metadata
        for output in cell.get("outputs", []) if output["output_type"] == "error"
    }


def test_gradescope_tests_carry_the_feedback_messages(gradescope):
    course, rows, documents, _ = gradescope
    for student, document in documents.items():
        failed = {t["name"]: t["output"] for t in document["tests"] if t.get("status") == "failed"}
        assert set(failed) == set(rows[student].failures), student
        feedback = _feedback_messages(course, student)
        for name, summary in rows[student].failures.items():
            # The feedback's message (expected values of hidden tests withheld), and the mistake grading named.
            assert failed[name] == f"{summary.split(':', 1)[0]}: {feedback[name]}", (student, name)
            assert named_mistake(failed[name]) == named_mistake(summary), (student, name)
    written = next(t for t in documents["max_not_argmax"]["tests"] if t["name"] == "q_label_smoothing")
    assert written["output"] == "awaiting manual grading" and "status" not in written
    graded_by_hand = next(t for t in documents["correct"]["tests"] if t["name"] == "q_label_smoothing")
    assert graded_by_hand["score"] == 2 and graded_by_hand["output"] == "graded by hand"


def test_gradescope_results_leak_no_hidden_test(gradescope):
    _, _, documents, _ = gradescope
    source = nbformat.read(REPO / "source" / ASSIGNMENT / "encoding.ipynb", as_version=4)
    hidden = {line.strip() for cell in source.cells for block in HIDDEN.findall(cell.source)
              for line in block.splitlines() if len(line.strip()) > 20 and not line.strip().startswith("#")}
    assert hidden
    text = json.dumps(documents)
    leaked = [line for line in hidden if json.dumps(line)[1:-1] in text]
    assert not leaked, leaked[:3]


def test_gradescope_index_and_warnings(gradescope):
    course, rows, documents, stdout = gradescope
    with (course.reports / ASSIGNMENT / "gradescope" / "index.csv").open(newline="", encoding="utf-8") as handle:
        index = list(csv.DictReader(handle))
    assert {line["student"] for line in index} == set(documents)
    assert all(line["results"] == f"{line['student']}/results.json" for line in index)
    assert "not exported as a score: corrupt (invalid notebook), renamed (missing)" in stdout
    assert "awaiting manual grading" in stdout


@pytest.fixture
def roster(tmp_path):
    path = tmp_path / "roster.csv"
    path.write_text(
        "\ufeffid,name,canvas_id,sis_user_id,sis_login_id,section,email\n"  # saved by Excel: a BOM
        '"correct","Doe, Jane",1001,S1001,jdoe,Lab A,jdoe@example.edu\n'
        "max_not_argmax,,1002,,,Lab B,\n"
        "corrupt,,,,corrupt_login,Lab A,\n",
        encoding="utf-8",
    )
    return path


def _read_canvas(course) -> list[list[str]]:
    raw = (course.reports / ASSIGNMENT / "canvas.csv").read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf"), "UTF-8 without a BOM"
    return list(csv.reader(raw.decode("utf-8").splitlines()))


def test_canvas_csv_follows_the_gradebook_import_format(graded_class, roster):
    course, rows = graded_class
    result = autograder("export", ASSIGNMENT, "--format", "canvas", "--course", str(course.root), "--roster", str(roster),
                        "--canvas-name", "A1: Encoding", "--canvas-id", "4242")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    table = _read_canvas(course)
    assert table[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "A1: Encoding (4242)"]
    assert table[1] == ["Points Possible", "", "", "", "", "12"]
    body = {line[0]: line for line in table[2:]}
    assert body == {
        "Doe, Jane": ["Doe, Jane", "1001", "S1001", "jdoe", "Lab A", f"{rows['correct'].score + 2:g}"],  # + 2 by hand
        "max_not_argmax": ["max_not_argmax", "1002", "", "", "Lab B", f"{rows['max_not_argmax'].score:g}"],
        "corrupt": ["corrupt", "", "", "corrupt_login", "Lab A", ""],  # nothing graded: empty, never 0
    }
    left_out = len(rows) - 3
    assert f"{left_out} student(s) left out: no Canvas ID, SIS User ID or SIS Login ID" in result.stdout


def test_canvas_ids_from_the_gradebook_and_from_our_ids(graded_class):
    course, rows = graded_class
    try:
        with Gradebook(course.db_url) as gradebook:  # `nbgrader db student import` with an lms_user_id column
            gradebook.update_or_create_student("width_from_batch", first_name="Ada", last_name="Lovelace", lms_user_id="2002")
        export(course, ASSIGNMENT, "canvas")
        body = {line[0]: line for line in _read_canvas(course)[2:]}
        assert body == {"Lovelace, Ada": ["Lovelace, Ada", "2002", "", "", "", f"{rows['width_from_batch'].score:g}"]}
        outcome = export(course, ASSIGNMENT, "canvas", student_id_is="sis_login_id", canvas_name="A1")
        table = _read_canvas(course)
        assert table[0][-1] == "A1", "without a Canvas id the column creates a new assignment"
        logins = {line[3]: line for line in table[2:]}
        assert set(logins) == set(rows), "every student, by our id as the SIS Login ID"
        assert logins["width_from_batch"][1] == "2002"
        assert not any("left out" in warning for warning in outcome.warnings)
    finally:  # the class is shared: put the student back as grading left it
        with Gradebook(course.db_url) as gradebook:
            gradebook.update_or_create_student("width_from_batch", first_name=None, last_name=None, lms_user_id=None)


@pytest.mark.parametrize(
    "header, phrase",
    [("student,name\n", "has no 'id' column"), ("id,name,canvas_user\n", "unknown column(s) canvas_user")],
)
def test_bad_roster_is_one_line(graded_class, tmp_path, header, phrase):
    course, _ = graded_class
    path = tmp_path / "roster.csv"
    path.write_text(header + "correct,Jane\n")
    _one_line_error(autograder("export", ASSIGNMENT, "--format", "canvas", "--course", str(course.root), "--roster", str(path)), phrase)


def test_export_of_an_assignment_never_graded(graded_class):
    course, _ = graded_class
    _one_line_error(autograder("export", "a02_cross_entropy", "--format", "gradescope", "--course", str(course.root)),
                    "has not been graded yet")
