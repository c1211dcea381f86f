"""The gradebook on a real PostgreSQL server: a class graded in parallel, a run killed and rerun.

nbgrader takes any SQLAlchemy ``db_url`` (``c.CourseDirectory.db_url``); so does the engine,
including its own status table (``autograder_status``).  The server is Debian's ``postgresql``
(installed with apt-get when missing and we are root), started by the fixture as an
unprivileged user on a unix socket in a temporary folder, and stopped at the end.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from autograder.course import Course
from autograder.grade import grade_assignment
from autograder.record import PROVENANCE_FIELDS, STATUS_TABLE
from autograder.samples import load_samples, submit_sample
from autograder.status import Status

from conftest import copy_course

psycopg2 = pytest.importorskip("psycopg2")

ASSIGNMENT = "a01_encoding"
BIN = Path(sys.executable).parent
#: The class: the correct and untouched samples and the first buggy ones (enough for two workers
#: and a kill mid-way, few enough to grade three times quickly).
CLASS_SIZE = 16
#: initdb refuses to run as root; the server runs as this user when the tests do.
SERVER_USER = "nobody"


def _postgres_bindir() -> Path:
    """Debian's PostgreSQL binaries, installed with apt-get when missing (as root only)."""

    def found() -> list[Path]:
        return sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))

    if not found() and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-qq", "postgresql"]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
            subprocess.run(install, env=env, capture_output=True)
    if not found():
        if os.geteuid() == 0:
            pytest.fail("PostgreSQL is missing and `apt-get install postgresql` failed")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql, as root)")
    return found()[-1].parent


class Server:
    def __init__(self, folder: Path) -> None:
        self.folder = folder  # the unix socket lives here

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://postgres@/{database}?host={self.folder}"

    def connect(self, database: str = "postgres"):
        connection = psycopg2.connect(host=str(self.folder), user="postgres", dbname=database)
        connection.autocommit = True
        return connection

    def create_database(self, name: str) -> str:
        connection = self.connect()  # autocommit: CREATE DATABASE runs outside a transaction
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {name}")
        finally:
            connection.close()
        return self.url(name)

    def query(self, database: str, sql: str, *args) -> list[tuple]:
        connection = self.connect(database)
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, args)
                return cursor.fetchall()
        finally:
            connection.close()


@pytest.fixture(scope="module")
def postgres():
    bindir = _postgres_bindir()
    # A short path: a unix socket's path must fit in 107 bytes.
    folder = Path(tempfile.mkdtemp(prefix="pg-", dir="/tmp"))
    as_user: dict = {}
    if os.geteuid() == 0:
        shutil.chown(folder, user=SERVER_USER)
        as_user = {"user": SERVER_USER, "group": "nogroup" if _has_group("nogroup") else None, "extra_groups": []}
        as_user = {k: v for k, v in as_user.items() if v is not None}
    data = folder / "data"
    env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C", "HOME": str(folder)}
    run = dict(cwd=folder, env=env, capture_output=True, text=True, **as_user)
    done = subprocess.run([bindir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-locale",
                           "--encoding=UTF8", "--no-sync"], **run)
    assert done.returncode == 0, done.stdout + done.stderr
    options = f"-k {folder} -c listen_addresses='' -c fsync=off -c max_connections=50"
    done = subprocess.run([bindir / "pg_ctl", "-D", data, "-o", options, "-l", folder / "server.log", "-w", "-t", "60", "start"], **run)
    assert done.returncode == 0, done.stdout + done.stderr + _read(folder / "server.log")
    try:
        yield Server(folder)
    finally:
        subprocess.run([bindir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"], **run)
        shutil.rmtree(folder, ignore_errors=True)


def _has_group(name: str) -> bool:
    import grp

    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""


def _course_on(server: Server, database: str, destination: Path) -> Course:
    """A fresh copy of the course whose nbgrader_config.py points the gradebook at ``database``."""
    course = copy_course(destination)
    url = server.create_database(database)
    with (course.root / "nbgrader_config.py").open("a") as config:
        config.write(f"\n# the test's PostgreSQL gradebook\nc.CourseDirectory.db_url = {url!r}\n")
    course = Course.open(course.root)
    assert course.db_url == url
    return course


def _state(server: Server, database: str) -> dict[str, tuple]:
    """student -> (status, score, number of grade rows) as the gradebook holds it; fails on any
    doubled row."""
    submissions = server.query(
        database,
        "SELECT s.student_id, count(*) FROM submitted_assignment s JOIN assignment a ON a.id = s.assignment_id "
        "WHERE a.name = %s GROUP BY s.student_id",
        ASSIGNMENT,
    )
    assert all(count == 1 for _, count in submissions), f"doubled submissions: {submissions}"
    statuses = server.query(database, f"SELECT student, count(*) FROM {STATUS_TABLE} WHERE assignment = %s GROUP BY student",
                            ASSIGNMENT)
    assert all(count == 1 for _, count in statuses), f"doubled status rows: {statuses}"
    grades = dict(server.query(
        database,
        "SELECT s.student_id, count(g.id) FROM submitted_assignment s JOIN assignment a ON a.id = s.assignment_id "
        "JOIN submitted_notebook n ON n.assignment_id = s.id JOIN grade g ON g.notebook_id = n.id "
        "WHERE a.name = %s GROUP BY s.student_id",
        ASSIGNMENT,
    ))
    doubled = server.query(
        database,
        "SELECT notebook_id, cell_id, count(*) FROM grade GROUP BY notebook_id, cell_id HAVING count(*) > 1",
    )
    assert not doubled, f"doubled grades: {doubled}"
    scores = dict(server.query(
        database,
        "SELECT s.student_id, sum(coalesce(g.manual_score, g.auto_score, 0) + coalesce(g.extra_credit, 0)) "
        "FROM submitted_assignment s JOIN assignment a ON a.id = s.assignment_id "
        "JOIN submitted_notebook n ON n.assignment_id = s.id JOIN grade g ON g.notebook_id = n.id "
        "WHERE a.name = %s GROUP BY s.student_id",
        ASSIGNMENT,
    ))
    status = dict(server.query(database, f"SELECT student, status FROM {STATUS_TABLE} WHERE assignment = %s", ASSIGNMENT))
    return {student: (status[student], float(scores.get(student, 0)), grades.get(student, 0)) for student in status}


def _submit_class(course: Course) -> list:
    samples = load_samples(course, ASSIGNMENT)
    chosen = [s for s in samples if s.student in ("correct", "untouched")]
    chosen += [s for s in samples if s not in chosen][: CLASS_SIZE - len(chosen)]
    for sample in chosen:
        submit_sample(course, sample, sample.student)
    return chosen


def _grade_cells(server: Server, database: str) -> int:
    return server.query(
        database,
        "SELECT count(*) FROM grade_cells g JOIN base_cell b ON b.id = g.id JOIN notebook n ON n.id = b.notebook_id "
        "JOIN assignment a ON a.id = n.assignment_id WHERE a.name = %s",
        ASSIGNMENT,
    )[0][0]


@pytest.fixture(scope="module")
def graded_once(postgres: Server, tmp_path_factory: pytest.TempPathFactory):
    """a01's sample class graded with two workers into PostgreSQL, in one uninterrupted run."""
    course = _course_on(postgres, "class_once", tmp_path_factory.mktemp("pg-once") / "course")
    samples = _submit_class(course)
    rows, _ = grade_assignment(course, ASSIGNMENT, progress=False, workers=2)
    return course, samples, {row.student: row for row in rows}


def test_a_class_graded_with_two_workers_lands_in_postgresql(postgres, graded_once):
    course, samples, rows = graded_once
    assert set(rows) == {s.student for s in samples}
    state = _state(postgres, "class_once")
    assert set(state) == set(rows), "every student has one submission and one status row in PostgreSQL"
    cells = _grade_cells(postgres, "class_once")
    for student, row in rows.items():
        status, score, grades = state[student]
        assert status == str(row.status), f"{student}: the status table says {status}, grading reported {row.status}"
        assert score == pytest.approx(row.score), f"{student}: gradebook score {score}, grades.csv {row.score}"
        assert grades == cells, f"{student}: {grades} grade rows, the assignment has {cells} graded cells"
    assert rows["correct"].status == Status.GRADED and rows["correct"].failures == {}
    assert rows["untouched"].score == 0
    for sample in samples:
        if sample.expect_failed:
            assert set(sample.expect_failed) <= set(rows[sample.student].failures), f"{sample.student}: {rows[sample.student].failures}"
    # The status table carries the provenance columns on PostgreSQL too.
    columns = {name for (name,) in postgres.query(
        "class_once", "SELECT column_name FROM information_schema.columns WHERE table_name = %s", STATUS_TABLE)}
    assert set(PROVENANCE_FIELDS) <= columns


def test_a_run_killed_mid_way_and_rerun_loses_and_doubles_nothing(postgres, graded_once, tmp_path):
    _, samples, expected = graded_once
    course = _course_on(postgres, "class_killed", tmp_path / "course")
    assert {s.student for s in _submit_class(course)} == set(expected)
    command = [str(BIN / "autograder"), "grade", ASSIGNMENT, "--course", str(course.root), "--workers", "2", "--no-progress"]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    grader = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    recorded = 0
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and grader.poll() is None:
            try:
                recorded = postgres.query("class_killed", f"SELECT count(*) FROM {STATUS_TABLE}")[0][0]
            except psycopg2.Error:  # the table does not exist until the first submission is recorded
                recorded = 0
            if recorded >= 3:
                break
            time.sleep(0.05)
    finally:
        os.killpg(grader.pid, signal.SIGKILL)
        grader.wait()
    stderr = grader.stderr.read().decode(errors="replace")
    assert grader.returncode == -signal.SIGKILL, f"the grader ended before it was killed: {stderr[-2000:]}"
    partial = _state(postgres, "class_killed")
    cells = _grade_cells(postgres, "class_killed")
    assert 0 < len(partial) < len(expected), f"killed after {len(partial)} of {len(expected)} submissions"
    for student, (status, score, grades) in partial.items():
        # Each submission was recorded whole, in one transaction, or not at all.
        assert (status, score) == (str(expected[student].status), pytest.approx(expected[student].score)), student
        assert grades == cells, f"{student}: {grades} grade rows after the kill, expected {cells}"
    submitted = {s for (s,) in postgres.query("class_killed", "SELECT student_id FROM submitted_assignment")}
    assert submitted == set(partial), f"submission rows without a status: {submitted - set(partial)}"

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    final = _state(postgres, "class_killed")
    assert set(final) == set(expected), f"lost: {set(expected) - set(final)}"
    for student, row in expected.items():
        status, score, grades = final[student]
        assert status == str(row.status), f"{student}: {status} after the rerun, {row.status} in one run"
        assert score == pytest.approx(row.score), f"{student}: {score} after the rerun, {row.score} in one run"
        assert grades == cells, f"{student}: {grades} grade rows, expected {cells}"
    (student_rows,) = postgres.query("class_killed", "SELECT count(*) FROM student")
    assert student_rows[0] == len(expected), "each student once in nbgrader's student table"


def test_nbgrader_export_reads_statuses_from_postgresql(postgres, graded_once):
    course, _, rows = graded_once
    done = subprocess.run([str(BIN / "nbgrader"), "export", "--to", "pg_grades.csv"], cwd=course.root,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    import csv

    with (course.root / "pg_grades.csv").open(newline="") as handle:
        exported = {line["student_id"]: line for line in csv.DictReader(handle) if line["assignment"] == ASSIGNMENT}
    assert set(exported) == set(rows)
    for student, row in rows.items():
        assert exported[student]["status"] == str(row.status), f"{student}: nbgrader export says {exported[student]['status']}"


def test_an_old_status_table_gets_the_provenance_columns_on_postgresql(postgres):
    from nbgrader.api import Gradebook
    from sqlalchemy import text

    from autograder.record import _with_provenance, _write_status

    url = postgres.create_database("old_status")
    postgres.query("old_status", f"CREATE TABLE {STATUS_TABLE} (assignment VARCHAR(128) NOT NULL, student VARCHAR(128) NOT NULL, "
                   "status VARCHAR(32) NOT NULL, detail TEXT, sandbox VARCHAR(64), graded_at VARCHAR(40), "
                   "PRIMARY KEY (assignment, student)); SELECT 1")
    _with_provenance.discard(url)
    with Gradebook(url) as gradebook:
        for _ in range(2):  # written twice: updated in place, not doubled
            _write_status(gradebook.db, ASSIGNMENT, "s1", Status.TAMPERED, "test cell edited", "bwrap", {"runner": "local"})
            gradebook.db.commit()
        rows = gradebook.db.execute(text(f"SELECT student, status, runner FROM {STATUS_TABLE}")).all()
    assert [tuple(r) for r in rows] == [("s1", "tampered", "local")]
