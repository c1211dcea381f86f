"""The ``adv`` fixture course: a scratch course holding only the adversarial fixture assignment."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import time
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


@contextlib.contextmanager
def orphans_come_here():
    """Make this process the subreaper of everything it starts, so that a process left behind by
    grading (a pool process, a sandbox) shows up as this process's child instead of init's."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    try:
        yield
    finally:
        libc.prctl(36, 0, 0, 0, 0)


def children_left(grace_seconds: float = 10.0, before: frozenset[str] = frozenset()) -> list[str]:
    """This process's live children (reaping the ones that have ended) not in ``before``, after letting them end."""
    deadline = time.monotonic() + grace_seconds
    while True:
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        alive = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as handle:
                        fields = handle.read().rsplit(")", 1)[1].split()
                    with open(f"/proc/{entry}/cmdline", "rb") as handle:
                        command = handle.read().replace(b"\0", b" ").decode(errors="replace")[:120]
                except OSError:
                    continue
                if int(fields[1]) == os.getpid() and fields[0] != "Z" and entry not in before:
                    alive.append(f"{entry}: {command}")
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def children_now() -> frozenset[str]:
    """Pids of this process's children now (a session's servers, say), to leave out of ``children_left``."""
    return frozenset(line.split(":", 1)[0] for line in children_left(0.0))
