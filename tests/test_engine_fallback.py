"""Without bubblewrap, grading still runs: resource limits, a process-group kill, a loud warning, and grades.csv says so."""

import csv
import time
import uuid

from autograder import sandbox
from autograder.grade import grade_assignment

import attacks
from fixture import ASSIGNMENT, make_course, processes_matching, release_notebook, submit


def test_grading_without_bubblewrap_is_limited_killed_and_flagged(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(sandbox.MODE_VARIABLE, "none")
    course = make_course(tmp_path / "course")
    release = release_notebook(course)
    marker = f"fallbackmarker{uuid.uuid4().hex[:12]}"
    child = f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', 'import time  # {marker}\\ntime.sleep(60)'])"
    loop = next(a for a in attacks.ATTACKS if a.student == "infinite_loop")
    submit(course, "correct", attacks.build(attacks.Attack("correct", "", "correct", "graded", "", after=[child]), release, {}))
    submit(course, "infinite_loop", attacks.build(loop, release, {}))
    limits = sandbox.Limits(cell_seconds=4, notebook_seconds=30, memory_bytes=2 * 2**30, restarts=1)
    rows, csv_path = grade_assignment(course, ASSIGNMENT, None, progress=False, limits=limits)
    by_student = {row.student: row for row in rows}
    assert by_student["correct"].score == 5 and by_student["correct"].status.value == "graded"
    assert by_student["infinite_loop"].score == 4 and by_student["infinite_loop"].status.value == "timeout"
    assert {row["sandbox"] for row in csv.DictReader(csv_path.open())} == {sandbox.RLIMITS_ONLY}
    assert "WITHOUT a sandbox" in capsys.readouterr().err
    time.sleep(1)
    assert not processes_matching(marker, set())
