"""The ``adv`` fixture course: a scratch course holding only the adversarial fixture assignment."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

from autograder.course import Course
from autograder.release import generate_release

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
ASSIGNMENT = "adv"

sys.path.insert(0, str(REPO / "tools"))
import nbtext  # noqa: E402


def make_course(root: Path) -> Course:
    notebook = nbtext.build((HERE / "adv.txt").read_text())
    (root / "source" / ASSIGNMENT).mkdir(parents=True)
    nbformat.write(notebook, root / "source" / ASSIGNMENT / "adv.ipynb")
    (root / "nbgrader_config.py").write_text((REPO / "nbgrader_config.py").read_text())
    course = Course.open(root)
    generate_release(course, ASSIGNMENT)
    return course


def release_notebook(course: Course) -> nbformat.NotebookNode:
    return nbformat.read(course.release / ASSIGNMENT / "adv.ipynb", as_version=4)


def submit(course: Course, student: str, data: bytes) -> None:
    folder = course.submitted / student / ASSIGNMENT
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adv.ipynb").write_bytes(data)


def processes_matching(marker: str, uids: set[int]) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            uid = int((entry / "status").read_text().split("Uid:")[1].split()[0])
        except (OSError, IndexError, ValueError):
            continue
        if marker in cmdline or uid in uids:
            found.append(f"{entry.name} uid={uid}: {cmdline[:120]}")
    return found
