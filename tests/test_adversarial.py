"""The adversarial corpus (tests/adversarial/attacks.py) graded as one class.

For every attack: it scores no more than the same submission without the
attack, and it gets the status a TA should see.  For the class: honest
students graded before and after the attackers keep their grades, nothing in
the course outside autograded/, reports/ and the gradebook's own rows changes,
no process outlives grading, nothing reaches the network, and the feedback
shows no hidden test or expected value.  Last, a grader killed with SIGKILL
mid-run and run again loses and doubles nothing.
"""

from __future__ import annotations

import csv
import hashlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook

from autograder import cgroups, sandbox
from autograder.course import Course
from autograder.grade import grade_assignment
from autograder.record import stored_statuses
from conftest import REPO

import attacks
from fixture import ASSIGNMENT, children_left, children_now, make_course, orphans_come_here, processes_matching, release_notebook, submit

LIMITS = sandbox.Limits(
    cell_seconds=4, notebook_seconds=30, memory_bytes=2 * 2**30, processes=64, frame_bytes=64 * 2**20, restarts=2
)
MODE = sandbox.sandbox_mode()
BWRAP = MODE == sandbox.BUBBLEWRAP
HONEST_FIRST, HONEST_LAST = ("aaa_correct", "aaa_wrong"), ("zzz_correct",)
EXPECTED_HONEST = {"aaa_correct": 5.0, "aaa_wrong": 0.0, "zzz_correct": 5.0}
CGROUPS = cgroups.layout() is not None
ACTIVE = [a for a in attacks.ATTACKS if (BWRAP or not a.needs_bwrap) and (CGROUPS or not a.needs_cgroups)]


def snapshot(root: Path) -> dict[str, str]:
    """Hash of every file the grading may not touch."""
    skip = ("autograded", "reports", "gradebook.db", ".pytest_cache")
    hashes = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if relative.parts[0] in skip or relative.parts[0].startswith("gradebook.db"):
            continue
        hashes[str(relative)] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return hashes


class AnswerServer:
    """A TCP server on every interface that hands the right answers to whoever connects."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("0.0.0.0", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stop = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        answer = "\n".join(attacks.CORRECT[k] for k in ("double", "safe_log", "sgd_step")).encode()
        while not self.stop:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            with connection:
                connection.sendall(answer)

    def close(self) -> None:
        self.stop = True
        self.thread.join()
        self.sock.close()


def host_ip() -> str:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("10.255.255.255", 1))
        return probe.getsockname()[0]
    except OSError:
        return "127.0.0.1"
    finally:
        probe.close()


@dataclass
class GradedClass:
    course: Course
    rows: dict
    before: dict[str, str]
    after: dict[str, str]
    marker: str
    server: AnswerServer
    uids: set[int]
    release: nbformat.NotebookNode
    #: Processes still alive after grading that grading started (pool processes, sandboxes).
    children_left: list[str]


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory, monkeypatch_module) -> GradedClass:
    course = make_course(tmp_path_factory.mktemp("adversarial") / "course")
    release = release_notebook(course)
    marker = f"advmarker{uuid.uuid4().hex[:12]}"
    server = AnswerServer()
    context = {
        "course": course.root,
        "marker": marker,
        "port": server.port,
        "hostip": host_ip(),
        "foreign": (REPO / "release" / "a01_encoding" / "encoding.ipynb").read_bytes(),
    }
    for student in HONEST_FIRST + HONEST_LAST:
        submit(course, student, attacks.honest(student.split("_")[1], release))
    for attack in ACTIVE:
        submit(course, attack.student, attacks.build(attack, release, context))
    with Gradebook(course.db_url) as gradebook:
        gradebook.add_student("absent_student")
    # Sandboxes start in the pool processes: the uids they get are written down where this process can read them.
    uid_log = course.root.parent / "sandbox-uids.txt"
    real_uid = sandbox.sandbox_uid

    def recording_uid() -> int:
        uid = real_uid()
        with uid_log.open("a") as log:
            log.write(f"{uid}\n")
        return uid

    monkeypatch_module.setattr(sandbox, "sandbox_uid", recording_uid)
    before = snapshot(course.root)
    # The whole hostile class beside honest students, two submissions at a time, as a TA runs it.
    already = children_now()
    with orphans_come_here():
        rows, _ = grade_assignment(course, ASSIGNMENT, None, progress=False, limits=LIMITS, workers=2)
        left = children_left(before=already)
    # Detached children would act now, after grading: give them the time.
    time.sleep(7)
    uids = {int(line) for line in uid_log.read_text().split()} if uid_log.exists() else set()
    yield GradedClass(course, {r.student: r for r in rows}, before, snapshot(course.root), marker, server, uids, release,
                      left)
    server.close()


@pytest.fixture(scope="module")
def monkeypatch_module():
    patcher = pytest.MonkeyPatch()
    yield patcher
    patcher.undo()


def _base_score(base: str) -> float:
    return EXPECTED_HONEST[f"aaa_{base}"]


@pytest.mark.parametrize("attack", ACTIVE, ids=lambda a: a.student)
def test_attack_gains_nothing(graded, attack):
    row = graded.rows[attack.student]
    assert row.score <= _base_score(attack.base), f"{attack.student} ({attack.threat}) scored {row.score}: {row.detail}"
    if attack.exact_score is not None:
        assert row.score == attack.exact_score, f"{attack.student}: {row.score} != {attack.exact_score} ({row.failures}; {row.detail})"
    if row.status.value != "invalid notebook":
        assert row.max_score == 6.0, f"{attack.student}: max score changed to {row.max_score}"


@pytest.mark.parametrize("attack", ACTIVE, ids=lambda a: a.student)
def test_attack_gets_the_right_status(graded, attack):
    row = graded.rows[attack.student]
    assert row.status.value == attack.status, f"{attack.student}: {row.status} ({row.detail})"
    stored = stored_statuses(graded.course, ASSIGNMENT)[attack.student]
    assert stored[0] == attack.status and row.sandbox == MODE


def test_honest_students_keep_their_grades(graded):
    for student, score in EXPECTED_HONEST.items():
        assert graded.rows[student].score == score and graded.rows[student].status.value == "graded", graded.rows[student]
    with Gradebook(graded.course.db_url) as gradebook:
        for student, score in EXPECTED_HONEST.items():
            record = gradebook.find_submission(ASSIGNMENT, student)
            assert float(record.score) == score, f"{student}'s grade changed after grading: {record.score}"
            assert all(g.manual_score is None for nb in record.notebooks for g in nb.grades)
        assert float(gradebook.find_assignment(ASSIGNMENT).max_score) == 6.0
    assert graded.rows["absent_student"].status.value == "missing"


def test_nothing_outside_the_submissions_scratch_folder_changed(graded):
    assert graded.after == graded.before
    course = graded.course.root
    for leftover in (course / "pwned", course / "atexit_ran", course / "late_write", Path(f"/tmp/pwned-{graded.marker}"), course.parent / f"pwned-{graded.marker}"):
        assert not leftover.exists(), f"{leftover} was written by a student"


def test_no_process_outlives_grading(graded):
    assert graded.uids, "no sandbox uid was recorded: the check below would see nothing"
    assert not processes_matching(graded.marker, graded.uids)
    assert not graded.children_left, f"pool processes or sandboxes outlived grading: {graded.children_left}"


@pytest.mark.skipif(not BWRAP, reason="network isolation needs bubblewrap")
def test_nothing_reached_the_network(graded):
    assert graded.server.connections == 0


def test_feedback_shows_verdicts_but_no_hidden_test_or_expected_value(graded):
    source = nbformat.read(graded.course.source / ASSIGNMENT / "adv.ipynb", as_version=4)
    hidden_lines = {
        line.strip()
        for cell in source.cells
        for line in cell.source.split("### BEGIN HIDDEN TESTS")[-1].split("### END HIDDEN TESTS")[0].splitlines()
        if "### BEGIN HIDDEN TESTS" in cell.source and len(line.strip()) > 12
    }
    for student in ("aaa_wrong", "read_secrets", "edit_test"):
        if student not in graded.rows:
            continue
        text = (graded.course.autograded / student / ASSIGNMENT / "adv.ipynb").read_text()
        assert "BEGIN HIDDEN" not in text and not [line for line in hidden_lines if line in text], student
    wrong = nbformat.read(graded.course.autograded / "aaa_wrong" / ASSIGNMENT / "adv.ipynb", as_version=4)
    outputs = {c.metadata.get("nbgrader", {}).get("grade_id"): c.get("outputs", []) for c in wrong.cells}
    hidden_failure = outputs["test_double_hidden"][0]
    assert hidden_failure["output_type"] == "error" and "not shown" in hidden_failure["evalue"]
    assert "expected 10" not in hidden_failure["evalue"]
    # The traceback is the verdict line only, wrapped for the page: no frames of the test's source.
    unwrapped = " ".join(line.strip() for line in hidden_failure["traceback"])
    assert unwrapped == " ".join(f"failed (a hidden test): AssertionError: {hidden_failure['evalue']}".split())
    visible_failure = outputs["test_double"][0]
    assert "expected 4" in visible_failure["evalue"]
    correct = nbformat.read(graded.course.autograded / "aaa_correct" / ASSIGNMENT / "adv.ipynb", as_version=4)
    assert all("passed" in c.outputs[0]["text"] for c in correct.cells if c.metadata.get("nbgrader", {}).get("grade") and c.cell_type == "code")


def test_flooded_output_is_capped(graded):
    assert graded.rows["output_flood"].status.value == "graded"
    size = (graded.course.autograded / "output_flood" / ASSIGNMENT / "adv.ipynb").stat().st_size
    assert size < 2 * 2**20


def test_nbgrader_feedback_and_export_work_on_the_gradebook(graded):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    feedback = subprocess.run(
        [sys.executable, "-m", "nbgrader", "generate_feedback", ASSIGNMENT, "--student", "aaa_wrong", "--force"],
        cwd=graded.course.root, capture_output=True, text=True, env=env, timeout=300,
    )
    assert feedback.returncode == 0, feedback.stderr[-2000:]
    html = next((graded.course.root / "feedback" / "aaa_wrong" / ASSIGNMENT).glob("*.html")).read_text()
    assert "test_double_hidden" in html and "torch.arange(6, dtype=torch.float64)" not in html
    export = subprocess.run(
        [sys.executable, "-m", "nbgrader", "export", "--to", "export.csv"],
        cwd=graded.course.root, capture_output=True, text=True, env=env, timeout=300,
    )
    assert export.returncode == 0, export.stderr[-2000:]
    # The formgrader renders an autograded notebook with its own template.
    from nbconvert.exporters import HTMLExporter
    from nbgrader.server_extensions.formgrader import handlers
    from traitlets.config import Config

    config = Config()
    config.HTMLExporter.template_name = "formgrade"
    config.HTMLExporter.extra_template_basedirs = [handlers.template_path]
    resources = {"assignment_id": ASSIGNMENT, "notebook_id": "adv", "submission_id": "x", "index": 0, "total": 1,
                 "base_url": "", "student": "aaa_wrong", "last_name": None, "first_name": None, "notebook_path": "/x"}
    page, _ = HTMLExporter(config=config).from_filename(str(graded.course.autograded / "aaa_wrong" / ASSIGNMENT / "adv.ipynb"), resources=resources)
    assert 'id="q_why"' in page and 'id="test_double_hidden"' in page
    with (graded.course.root / "export.csv").open(newline="") as handle:
        scores = {row["student_id"]: row["score"] for row in csv.DictReader(handle)}
    assert float(scores["aaa_correct"]) == 5.0 and float(scores["aaa_wrong"]) == 0.0


# -- crash safety ---------------------------------------------------------------------


def _gradebook_counts(db: Path) -> tuple[int, int, int]:
    with sqlite3.connect(db) as connection:
        submissions = connection.execute("select count(*) from submitted_assignment").fetchone()[0]
        grades = connection.execute("select count(*) from grade").fetchone()[0]
        try:
            statuses = connection.execute("select count(*) from autograder_status").fetchone()[0]
        except sqlite3.OperationalError:
            statuses = 0
    return submissions, grades, statuses


def test_what_tests_pass_to_student_code_never_reaches_later_cells(graded):
    if "hidden_echo" not in graded.rows:
        pytest.skip("the hidden_echo attack is not active here")
    notebook = nbformat.read(graded.course.autograded / "hidden_echo" / ASSIGNMENT / "adv.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", []))
    # The test cells called double() with [1, 2], linspace(-3, 3, 7) and a float64 batch; the last
    # cell, run after all of them, finds the student's list as the student's own cells left it.
    assert "SEEN 0 []" in printed, printed[-500:]
    assert "-3.0" not in printed and "1.0, 2.0" not in printed


def test_a_grader_killed_mid_run_loses_and_doubles_nothing(tmp_path):
    course = make_course(tmp_path / "course")
    release = release_notebook(course)
    marker = f"crashmarker{uuid.uuid4().hex[:12]}"
    # A detached child in every submission: it must die with the grader's sandbox too.
    child = f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', 'import time  # {marker}\\ntime.sleep(60)'], start_new_session=True)"
    students = ["s1", "s2", "s3", "s4"]
    for index, student in enumerate(students):
        attack = attacks.Attack(student, "", "correct" if index % 2 == 0 else "wrong", "graded", "", after=[child])
        submit(course, student, attacks.build(attack, release, {}))
    # Two pool processes, each with its zygote; their own TMPDIR shows what they leave behind.
    command = [sys.executable, "-m", "autograder", "grade", ASSIGNMENT, "--course", str(course.root), "--no-progress", "--workers", "2"]
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = dict(os.environ, TMPDIR=str(temp))
    grader = subprocess.Popen(command, cwd=course.root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    db = course.root / "gradebook.db"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and grader.poll() is None:
        if db.exists() and _gradebook_counts(db)[2] >= 1:
            break
        time.sleep(0.2)
    assert grader.poll() is None, f"the grader finished before it could be killed: {grader.stderr.read()[-2000:]}"
    grader.send_signal(signal.SIGKILL)
    grader.wait()
    leftovers = ["?"]
    for _ in range(50):
        # Pool processes carry the grader's command line; zygotes and sandboxes their TMPDIR folder.
        leftovers = processes_matching(marker, set()) + processes_matching(str(course.root), set()) + processes_matching(str(temp), set())
        if not leftovers:
            break
        time.sleep(0.2)
    assert not leftovers, f"processes outlived the killed grader: {leftovers}"
    submissions, grades, statuses = _gradebook_counts(db)
    # Each recorded submission is complete: all its grades are there, with its status.
    assert statuses >= 1 and submissions == statuses and grades == 5 * submissions
    with sqlite3.connect(db) as connection:
        nulls = connection.execute("select count(*) from grade g join grade_cells c on g.cell_id = c.id "
                                   "where c.cell_type = 'code' and g.auto_score is null").fetchone()[0]
    assert nulls == 0
    assert list(temp.glob("autograder-*")), "the killed grader left no temporary folder: the sweep below tests nothing"
    rerun = subprocess.run(command, cwd=course.root, capture_output=True, text=True, timeout=600, env=env)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert not list(temp.iterdir()), f"temporary folders left behind: {sorted(p.name for p in temp.iterdir())}"
    assert _gradebook_counts(db) == (4, 20, 4)
    with Gradebook(course.db_url) as gradebook:
        scores = {s: float(gradebook.find_submission(ASSIGNMENT, s).score) for s in students}
    assert scores == {"s1": 5.0, "s2": 0.0, "s3": 5.0, "s4": 0.0}
    time.sleep(1)
    assert not processes_matching(marker, set())
