"""Nothing a TA or student produces in the course folder can be committed by accident (.gitignore)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import REPO

#: What nbgrader, JupyterLab and `autograder` write into a clone used as the course folder.
PRODUCED = [
    # nbgrader collect / autograde / generate_feedback and the gradebook
    "submitted/alice/a01_encoding/encoding.ipynb",
    "submitted/alice/a01_encoding/timestamp.txt",
    "autograded/alice/a01_encoding/encoding.ipynb",
    "feedback/alice/a01_encoding/encoding.html",
    "gradebook.db",
    "gradebook.db-journal",
    "gradebook.db-wal",
    ".nbgrader.log",
    # nbgrader generate_solution, zip_collect, and the intermediate of generate_assignment
    "solution/a01_encoding/encoding.ipynb",
    "downloaded/a01_encoding/archive/alice.zip",
    "source_with_tests/a01_encoding/encoding.ipynb",
    # autograder grade / report / export
    "reports/a01_encoding/grades.csv",
    "reports/a01_encoding/report.html",
    "reports/a01_encoding/canvas.csv",
    "reports/a01_encoding/gradescope/alice/results.json",
    # nbgrader export's table
    "grades.csv",
    # a course-local exchange
    "exchange/lossfn/outbound/a01_encoding/encoding.ipynb",
    "exchange/lossfn/inbound/alice+a01_encoding+2026-12-01 10:00:00.000000 UTC/encoding.ipynb",
    ".exchange/lossfn/outbound/a01_encoding/encoding.ipynb",
    # what the Assignment List fetches, with and without the course id, and the feedback it fetches
    "a01_encoding/encoding.ipynb",
    "a10_backprop/backprop.ipynb",
    "a01_encoding/feedback/2026-12-01 10:00:00.000000 UTC/encoding.html",
    "lossfn/a01_encoding/encoding.ipynb",
    # JupyterLab: checkpoints wherever a notebook is opened, the LSP's shadow copies
    ".ipynb_checkpoints/README-checkpoint.md",
    "source/a01_encoding/.ipynb_checkpoints/encoding-checkpoint.ipynb",
    "release/a01_encoding/.ipynb_checkpoints/encoding-checkpoint.ipynb",
    "notebooks/.ipynb_checkpoints/01_one_hot-checkpoint.ipynb",
    ".virtual_documents/notebooks/01_one_hot.ipynb",
    # a course copied inside the clone (a benchmark's or a TA's scratch course)
    "bench/scratch/course/submitted/alice/a01_encoding/encoding.ipynb",
    "bench/scratch/course/gradebook.db",
]

#: What the course is made of: never ignored.
COURSE = [
    "source/a01_encoding/encoding.ipynb",
    "release/a01_encoding/encoding.ipynb",
    "release/a01_encoding/course_checks.py",
    "samples/a01_encoding.toml",
    "notebooks/01_one_hot.ipynb",
    "nbgrader_config.py",
    "course_checks.py",
    "autograder/report.py",
    "autograder/class_report.py",
    "tests/test_report.py",
    "docs/authoring.md",
]


def _ignored(paths: list[str]) -> set[str]:
    """The paths git ignores (--no-index: whether tracked or not, what .gitignore says)."""
    result = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"], input="\n".join(paths) + "\n",
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )
    assert result.returncode in (0, 1), result.stderr
    return set(result.stdout.splitlines())


@pytest.fixture(scope="module", autouse=True)
def _git_checkout():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout: .gitignore has nothing to protect")


def test_what_a_ta_or_student_produces_is_ignored():
    missed = [path for path in PRODUCED if path not in _ignored(PRODUCED)]
    assert not missed, f"would be committed by `git add`: {missed}"


def test_the_course_itself_is_not_ignored():
    ignored = _ignored(COURSE)
    assert not ignored, f".gitignore hides course files: {sorted(ignored)}"


def test_no_tracked_file_is_ignored():
    tracked = subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=REPO, timeout=60).stdout.splitlines()
    ignored = _ignored(tracked)
    assert not ignored, f"tracked files that .gitignore says to ignore: {sorted(ignored)[:5]}"
