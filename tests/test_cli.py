"""The command line: bad input gets one clear line and an exit code, never a traceback."""

import json
import subprocess
import sys

import pytest

from autograder.samples import install_samples
from conftest import REPO


def autograder(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "autograder", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def _one_line_error(result, phrase):
    assert result.returncode == 2, f"exit code {result.returncode}: {result.stderr}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, f"expected one line, got:\n{result.stderr}"
    assert phrase in lines[0], lines[0]


def test_missing_course_directory(tmp_path):
    _one_line_error(autograder("grade", "a01_encoding", "--course", str(tmp_path / "nowhere")), "course directory not found")


def test_folder_that_is_not_a_course(tmp_path):
    _one_line_error(autograder("grade", "a01_encoding", "--course", str(tmp_path)), "not an nbgrader course")


def test_unknown_assignment(course):
    _one_line_error(autograder("grade", "a99_nothing", "--course", str(course.root)), "unknown assignment 'a99_nothing'")


def test_unknown_student(course):
    _one_line_error(autograder("grade", "a01_encoding", "--course", str(course.root), "--student", "nobody"), "unknown student")


def test_usage_error_without_assignment():
    result = autograder("grade")
    assert result.returncode == 2 and "Traceback" not in result.stderr


@pytest.fixture
def broken_class(course):
    """A class with one good submission and one of each kind of bad input."""
    install_samples(course, "a01_encoding")
    good = course.submitted / "correct" / "a01_encoding" / "encoding.ipynb"
    corrupt = course.submitted / "corrupt" / "a01_encoding"
    corrupt.mkdir(parents=True)
    (corrupt / "encoding.ipynb").write_text('{"cells": [ this is not json')
    foreign = course.submitted / "foreign" / "a01_encoding"
    foreign.mkdir(parents=True)
    (foreign / "encoding.ipynb").write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    wrong_name = course.submitted / "renamed" / "a01_encoding"
    wrong_name.mkdir(parents=True)
    (wrong_name / "my_encoding.ipynb").write_bytes(good.read_bytes())
    return course


def test_bad_submissions_get_explicit_statuses(broken_class):
    students = ["correct", "corrupt", "foreign", "renamed"]
    args = ["grade", "a01_encoding", "--course", str(broken_class.root), "--no-progress"]
    for student in students:
        args += ["--student", student]
    result = autograder(*args)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    csv = (broken_class.reports / "a01_encoding" / "grades.csv").read_text().splitlines()
    statuses = {line.split(",")[0]: line.split(",")[1] for line in csv[1:]}
    assert statuses == {"correct": "graded", "corrupt": "invalid notebook", "foreign": "invalid notebook", "renamed": "missing"}
    assert "not valid notebook JSON" in result.stdout
    assert "another assignment" in result.stdout
