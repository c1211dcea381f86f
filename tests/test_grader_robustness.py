"""The grader survives what a submission holds: its own failures, oversized files, deep trees, long outputs.

A failure of the grader's own on one submission names the student and records everyone else.
"""

from __future__ import annotations

import csv
import os

import pytest

import attacks
from autograder import grade as grade_module
from autograder import job as job_module
from autograder import cgroups, sandbox
from autograder.collect import Submission
from autograder.execute import KernelSession, _text
from autograder.record import MAX_TIMESTAMP_BYTES, _timestamp
from autograder.grade import grade_assignment
from autograder.record import stored_statuses
from autograder.status import Status
from fixture import ASSIGNMENT, children_left, children_now, make_course, orphans_come_here, release_notebook, submit


@pytest.mark.parametrize("workers", [1, 2])
def test_a_grader_failure_on_one_submission_does_not_stop_the_class(tmp_path, monkeypatch, capsys, workers):
    course = make_course(tmp_path / "course")
    release = release_notebook(course)
    for student in ("aaa_correct", "mmm_unlucky", "zzz_correct"):
        submit(course, student, attacks.honest("correct", release))
    real_plan = job_module.plan_notebook

    def plan_that_fails_for_one(submitted, trusted):
        if any("unlucky" in str(cell.get("source", "")) for cell in submitted.cells):
            raise KeyError("a bug of the grader's own")
        return real_plan(submitted, trusted)

    notebook = (course.submitted / "mmm_unlucky" / ASSIGNMENT / "adv.ipynb")
    notebook.write_text(notebook.read_text().replace("Doubling is linear", "unlucky: doubling is linear"))
    monkeypatch.setattr(job_module, "plan_notebook", plan_that_fails_for_one)

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


def test_an_oversized_timestamp_is_not_parsed(tmp_path):
    course = make_course(tmp_path / "course")
    folder = course.submitted / "s" / ASSIGNMENT
    folder.mkdir(parents=True)
    submission = Submission("s", ASSIGNMENT, folder)
    (folder / "timestamp.txt").write_text("2026-11-30 10:00:00.000000 UTC")
    assert _timestamp(course, submission).year == 2026
    (folder / "timestamp.txt").write_text("1" * 1_500_000)
    assert (folder / "timestamp.txt").stat().st_size > MAX_TIMESTAMP_BYTES
    assert _timestamp(course, submission) is None


def test_cut_output_keeps_the_notice_that_it_was_cut():
    assert _text("short", limit=10) == "short"
    cut = _text("x" * 50 + "\ud800", limit=10)
    assert cut.startswith("x" * 10) and cut.endswith("[... 41 more characters dropped by the grader]\n")


def test_trees_of_any_depth_are_removed(tmp_path):
    root = tmp_path / "scratch"
    root.mkdir()
    # Deeper than PATH_MAX and than Python's recursion limit: built one level at a time, as a student would.
    folder = os.open(root, os.O_RDONLY)
    for _ in range(1500):
        os.mkdir("d", dir_fd=folder)
        inner = os.open("d", os.O_RDONLY, dir_fd=folder)
        os.close(folder)
        folder = inner
    os.close(os.open("f", os.O_CREAT | os.O_WRONLY, dir_fd=folder))
    os.close(folder)
    sandbox.remove_tree(root)
    assert not root.exists()
    sandbox.remove_tree(root)  # already gone: nothing to do, no error


def test_leftover_folders_of_dead_graders_are_swept(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(sandbox.tempfile, "tempdir", None)
    dead = tmp_path / f"{sandbox.TEMP_PREFIX}scratch-999999999-abc"
    dead.mkdir()
    mine = sandbox.temp_folder("scratch")
    foreign = tmp_path / "autograder-notours"
    foreign.mkdir()
    assert sandbox.sweep_leftovers() == 1
    assert not dead.exists() and mine.exists() and foreign.exists()


@pytest.mark.skipif(cgroups.layout() is None, reason="no writable control groups on this machine")
def test_a_sandbox_is_one_control_group_capped_at_one_cpu(tmp_path):
    limits = sandbox.Limits(cell_seconds=30, notebook_seconds=60, memory_bytes=2**30, processes=32)
    session = KernelSession(sandbox.prepare_scratch([]), limits, sandbox.sandbox_mode())
    try:
        record = session.run_cell(0, "import os\nprint(open('/proc/self/cgroup').read())")
        worker = session.worker
        assert worker.group is not None, "the worker was not given a control group"
        assert worker.group.name in record.outputs[0]["text"], "the worker's process is not in its group"
        assert worker.group.memory_limit() == limits.memory_bytes
        # Four busy children for two seconds: the group as a whole gets at most one CPU, so their
        # CPU time stays near the wall time (on an idle machine without the quota it is 2-4 times that).
        busy = ("import os, time\nstart = time.time()\nchildren = []\nfor _ in range(4):\n    pid = os.fork()\n"
                "    if pid == 0:\n        end = time.time() + 2\n        while time.time() < end:\n            pass\n"
                "        os._exit(0)\n    children.append(pid)\nfor pid in children:\n    os.waitpid(pid, 0)\n"
                "print(sum(os.times()[2:4]), time.time() - start)")
        used, wall = map(float, session.run_cell(1, busy).outputs[0]["text"].split())
        assert used <= 1.25 * wall + 0.3, f"four busy processes used {used:.1f} CPU-s in {wall:.1f} s: more than one CPU"
        name = worker.group.name
    finally:
        session.close()
    assert not any(name in str(path) for folder in cgroups.layout().folders() for path in folder.iterdir()), "the group outlived its worker"


def test_a_notebook_s_outputs_together_stay_within_their_limit(tmp_path):
    limits = sandbox.Limits(cell_seconds=30, notebook_seconds=60, notebook_output_bytes=120_000)
    session = KernelSession(sandbox.prepare_scratch([]), limits, sandbox.sandbox_mode())
    try:
        records = [session.run_cell(index, "print('x' * 50_000)") for index in range(5)]
    finally:
        session.close()
    texts = ["".join(o.get("text", "") for o in record.outputs) for record in records]
    assert [len(t) for t in texts[:2]] == [50_001] * 2, "cells within the notebook's budget keep their output"
    for text in texts[2:]:
        assert text.startswith("[output dropped by the grader") and len(text) < 200


def test_one_wall_clock_budget_covers_the_grader_s_own_work(tmp_path, monkeypatch):
    from autograder import execute
    from autograder.collect import plan_notebook, read_submitted, trusted_notebooks

    course = make_course(tmp_path / "course")
    submit(course, "slow", attacks.honest("correct", release_notebook(course)))
    trusted = trusted_notebooks(course, ASSIGNMENT)["adv.ipynb"]
    plan = plan_notebook(read_submitted(course.submitted / "slow" / ASSIGNMENT / "adv.ipynb"), trusted)
    real_run_test = execute.run_test
    clock = {"now": 0.0}

    def slow_checks(*args, **kwargs):
        clock["now"] += 100.0  # the grader's own work on the values takes 100 s per test cell
        return real_run_test(*args, **kwargs)

    monkeypatch.setattr(execute, "run_test", slow_checks)
    monkeypatch.setattr(execute, "_clock", lambda: clock["now"])
    limits = sandbox.Limits(cell_seconds=30, notebook_seconds=60, startup_seconds=60)  # 180 s of grading time
    result = execute.run_notebook("adv.ipynb", plan, sandbox.prepare_scratch([]), limits, sandbox.sandbox_mode())
    timeouts = [e for e in result.events if e.kind == "timeout"]
    assert timeouts and "180 s of grading time" in timeouts[0].detail
    graded = [v for v in result.verdicts.values() if v.interrupted is None]
    assert len(graded) == 2 and all(v.passed for v in graded), "the tests within the budget were graded as usual"
    assert all(v.interrupted == "gave up" for v in result.verdicts.values() if v not in graded)


def test_grading_some_students_merges_into_the_class_grades_csv(tmp_path):
    course = make_course(tmp_path / "course")
    release = release_notebook(course)
    for student, base in (("ann", "correct"), ("bob", "wrong"), ("cy", "correct")):
        submit(course, student, attacks.honest(base, release))
    grade_assignment(course, ASSIGNMENT, None, progress=False)
    submit(course, "bob", attacks.honest("correct", release))
    _, csv_path = grade_assignment(course, ASSIGNMENT, ["bob"], progress=False)
    with csv_path.open() as handle:
        scores = {row["student"]: row["score"] for row in csv.DictReader(handle)}
    assert scores == {"ann": "5", "bob": "5", "cy": "5"}, scores


def test_grader_work_stuck_in_c_code_is_stopped_at_the_submission_s_budget(tmp_path, monkeypatch):
    # A regular expression that backtracks for minutes holds the interpreter in C code, where
    # no alarm can interrupt it: only killing the process that grades the submission stops it.
    import re

    course = make_course(tmp_path / "course")
    release = release_notebook(course)
    for student in ("aaa_correct", "mmm_stuck", "zzz_correct"):
        submit(course, student, attacks.honest("correct", release))
    notebook = course.submitted / "mmm_stuck" / ASSIGNMENT / "adv.ipynb"
    notebook.write_text(notebook.read_text().replace("Doubling is linear", "stuck: doubling is linear"))
    real_plan = job_module.plan_notebook

    def plan_stuck_in_c_for_one(submitted, trusted):
        if any("stuck" in str(cell.get("source", "")) for cell in submitted.cells):
            re.match(r"(a+)+$", "a" * 32 + "b")
        return real_plan(submitted, trusted)

    monkeypatch.setattr(job_module, "plan_notebook", plan_stuck_in_c_for_one)
    real_budget = grade_module.submission_budget
    monkeypatch.setattr(grade_module, "submission_budget", lambda limits, submission, trusted:
                        10.0 if submission.student == "mmm_stuck" else real_budget(limits, submission, trusted))
    already = children_now()
    with orphans_come_here():
        rows, _ = grade_assignment(course, ASSIGNMENT, None, progress=False, workers=2)
        left = children_left(before=already)

    by_student = {row.student: row for row in rows}
    stuck = by_student["mmm_stuck"]
    assert stuck.status == Status.TIMEOUT and stuck.score == 0, (stuck.status, stuck.detail)
    assert "10 s budget" in stuck.detail
    assert stored_statuses(course, ASSIGNMENT)["mmm_stuck"][0] == "timeout"
    assert by_student["aaa_correct"].status == Status.GRADED and by_student["aaa_correct"].score == 5
    assert by_student["zzz_correct"].status == Status.GRADED and by_student["zzz_correct"].score == 5
    assert not left, f"a pool process or sandbox outlived grading: {left}"
    assert not list((course.autograded / "mmm_stuck").glob(f".{ASSIGNMENT}.*")), "a staging folder was left behind"
