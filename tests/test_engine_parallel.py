"""Fast grading: parallel workers and pre-warmed (forked) sandboxes keep every guarantee.

On the adversarial fixture course: grading with 2 workers gives exactly the
results of grading with 1 (and grading twice gives the same scores), the
gradebook holds one submission per student afterwards, no forked worker or
zygote outlives grading, and nothing one submission leaves behind (files in
/tmp, the home folder or /dev/shm, a SysV segment, a detached process) is
visible to the next submission served by the same zygote.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from pathlib import Path

import pytest

from autograder import sandbox
from autograder.grade import grade_assignment

import attacks
from fixture import ASSIGNMENT, make_course, processes_matching, release_notebook, submit

LIMITS = sandbox.Limits(cell_seconds=10, notebook_seconds=60, memory_bytes=2 * 2**30, restarts=1)
MODE = sandbox.sandbox_mode()


#: Processes this test process had started before grading began (not grading's to end).
_STARTED_BEFORE_GRADING: set[str] = set()


def _pids_now() -> set[str]:
    return {line.split(" ", 1)[0] for line in descendants()}


def descendants() -> list[str]:
    """Processes started (directly or not) by this test process."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                command = ""
            if "multiprocessing.resource_tracker" in command:
                continue  # the standard library's helper, started once per process; runs no student code
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            names[int(entry.name)] = command[:120]
    found, stack = [], [os.getpid()]
    while stack:
        pid = stack.pop()
        for child, parent in parents.items():
            if parent == pid:
                found.append(f"{child} {names[child]}")
                stack.append(child)
    return found

LEAVE = """
import ctypes, os, subprocess, sys
for folder in ("/tmp", os.path.expanduser("~"), "/dev/shm"):
    try:
        with open(os.path.join(folder, "left-MARKER"), "w") as handle:
            handle.write("secret")
    except OSError:
        pass
libc = ctypes.CDLL(None)
segment = libc.shmget(0x5EED, 4096, 0o1000 | 0o666)  # IPC_CREAT, readable by anyone
subprocess.Popen([sys.executable, "-c", "import time\\n# MARKER\\ntime.sleep(60)"], start_new_session=True,
                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
"""

SEEK = """
import ctypes, os
found = []
for folder in ("/tmp", os.path.expanduser("~"), "/dev/shm"):
    if os.path.exists(os.path.join(folder, "left-MARKER")):
        found.append(folder)
if ctypes.CDLL(None).shmget(0x5EED, 0, 0) != -1:
    found.append("sysv")
for entry in os.listdir("/proc"):
    if entry.isdigit():
        try:
            if b"MARKER" in open(f"/proc/{entry}/cmdline", "rb").read():
                found.append("process")
        except OSError:
            pass
"""

# Scores full marks only if it saw nothing the earlier submission left.
SEEKER_DOUBLE = "def double(x):\n    return 2 * x if not found else torch.zeros_like(x)"


def _summary(rows) -> dict:
    return {r.student: (r.score, r.status.value, r.failures, r.detail) for r in rows}


@pytest.fixture(scope="module")
def course_and_marker(tmp_path_factory):
    course = make_course(tmp_path_factory.mktemp("parallel") / "course")
    release = release_notebook(course)
    marker = f"leftover{uuid.uuid4().hex[:10]}"
    context = {"marker": marker}
    for student in ("c_correct", "d_wrong", "e_correct", "f_wrong"):
        submit(course, student, attacks.honest(student.split("_")[1], release))
    submit(course, "a_leaver", attacks.build(attacks.Attack("a_leaver", "", "correct", "graded", "", before=[LEAVE]), release, context))
    seeker = attacks.Attack("b_seeker", "", "correct", "graded", "", before=[SEEK], cells={"double": SEEKER_DOUBLE})
    submit(course, "b_seeker", attacks.build(seeker, release, context))
    return course, marker


@pytest.fixture(scope="module")
def course(course_and_marker):
    return course_and_marker[0]


@pytest.fixture(scope="module")
def sequential(course):
    _STARTED_BEFORE_GRADING.update(_pids_now())  # e.g. the browser tests' Lab server, alive for the session
    rows, _ = grade_assignment(course, ASSIGNMENT, progress=False, limits=LIMITS, workers=1)
    return _summary(rows)


def test_grading_twice_gives_identical_results(course, sequential):
    rows, _ = grade_assignment(course, ASSIGNMENT, progress=False, limits=LIMITS, workers=1)
    assert _summary(rows) == sequential


def test_parallel_grading_matches_sequential_and_writes_one_row_each(course, sequential):
    rows, csv_path = grade_assignment(course, ASSIGNMENT, progress=False, limits=LIMITS, workers=2)
    assert [r.student for r in rows] == list(sequential), "rows keep the submissions' order"
    assert _summary(rows) == sequential
    with sqlite3.connect(course.root / "gradebook.db") as db:
        counts = db.execute(
            "select student.id, count(submitted_assignment.id) from student left join submitted_assignment"
            " on submitted_assignment.student_id = student.id group by student.id"
        ).fetchall()
    assert {student: count for student, count in counts if student in sequential} == {s: 1 for s in sequential}
    lines = csv_path.read_text().strip().splitlines()
    assert len(lines) == 1 + len(sequential)


def test_honest_results_are_right(sequential):
    assert sequential["c_correct"][0] == 5.0 and sequential["d_wrong"][0] == 0.0
    assert sequential["a_leaver"][0] == 5.0


@pytest.mark.skipif(MODE != sandbox.BUBBLEWRAP, reason="isolation between submissions needs bubblewrap")
def test_nothing_a_submission_leaves_reaches_the_next(sequential):
    score, status, failures, detail = sequential["b_seeker"]
    assert (score, status) == (5.0, "graded"), f"the next submission saw leftovers: {failures} {detail}"


def test_no_worker_or_zygote_outlives_grading(course_and_marker, sequential):
    assert not processes_matching(course_and_marker[1], set())
    assert not [p for p in descendants() if p.split(' ', 1)[0] not in _STARTED_BEFORE_GRADING]


WARMTH = "import sys\nprint('torch._dynamo' in sys.modules, 'matplotlib.mathtext' in sys.modules)"


@pytest.mark.skipif(not sandbox.uses_zygote(MODE), reason="workers are forked from a zygote only as root with bubblewrap")
@pytest.mark.parametrize("optimizers", [True, False])
def test_forked_workers_start_with_first_uses_paid(optimizers):
    """The zygote has built an optimizer (which imports torch._dynamo, 0.75 s) only for an
    assignment whose notebooks use them, and has drawn mathtext either way."""
    from autograder.execute import KernelSession

    sandbox.warm_up(LIMITS, MODE, "cpu", optimizers)
    session = KernelSession(sandbox.prepare_scratch([]), LIMITS, MODE)
    try:
        record = session.run_cell(0, WARMTH)
    finally:
        session.close()
        sandbox.stop_zygotes()
    printed = "".join(o.get("text", "") for o in record.outputs if o["output_type"] == "stream")
    assert printed.split() == [str(optimizers), "True"], record.outputs


def test_zygotes_warm_optimizers_for_the_assignments_that_teach_them():
    from autograder.grade import _mentions_optimizers

    release = Path(__file__).resolve().parent.parent / "release"
    warmed = {a.name for a in release.iterdir() if a.is_dir() and _mentions_optimizers(a)}
    assert {"a07_sgd_momentum", "a08_adam", "a09_training_loop"} <= warmed
    assert not warmed & {"a01_encoding", "a02_cross_entropy"}, warmed
