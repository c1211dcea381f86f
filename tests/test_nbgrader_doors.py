"""nbgrader's own doors grade with the sandboxed engine, release feedback, and show statuses.

The real commands, on a scratch copy of the course with a course-local exchange:

* ``nbgrader autograde``, ``NbGraderAPI.autograde`` (what the formgrader's Autograde
  button calls) and ``autograder grade`` give a submission that rebinds the check
  helpers to no-ops the same 0 and leave the same gradebook rows;
* the assignment goes out and back through the exchange (release, fetch, submit,
  collect), is autograded with ``nbgrader autograde``, and its feedback reaches the
  student through ``nbgrader generate_feedback``/``release_feedback`` (CLI and API)
  and ``nbgrader fetch_feedback``, without the hidden tests or what they passed in;
* tampered, timed-out, memory-limited and dead submissions are flagged in the
  gradebook with a comment naming what happened, and ``nbgrader export`` writes
  each submission's status and its answers awaiting manual grading.
"""

from __future__ import annotations

import csv
import html
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook
from nbgrader.apps import NbGraderAPI
from nbgrader.utils import get_username
from sqlalchemy import text

from autograder.collect import Submission
from autograder.course import Course
from autograder.grade import grade_assignment
from autograder import nbgrader_door
from autograder.nbgrader_door import SandboxedAutogradeExporter
from autograder.record import COMMENT_PREFIX, STATUS_TABLE, GradebookWriter
from autograder.release import generate_release
from autograder.samples import build_notebook, load_samples
from autograder.status import Status

from conftest import copy_course

ASSIGNMENT = "a01_encoding"
NOTEBOOK = "encoding.ipynb"
BIN = Path(sys.executable).parent

#: Rebinds every check helper to a no-op (in the module and in the notebook's namespace) and
#: answers with garbage: in the student's own kernel every check would pass.
CHEAT = '''
import contextlib, course_checks
def _nothing(*args, **kwargs):
    return args[0] if args else None
for _name in dir(course_checks):
    if _name.startswith("check") or _name == "_fail":
        setattr(course_checks, _name, _nothing)
        globals()[_name] = _nothing
course_checks.forbid = globals()["forbid"] = lambda *a, **k: contextlib.nullcontext()
'''
GARBAGE = {
    "one_hot_numpy": "def one_hot_numpy(labels, num_classes):\n    return np.zeros((1, 1))",
    "one_hot": "def one_hot(labels, num_classes):\n    return torch.zeros(1)",
    "from_one_hot": "def from_one_hot(encoded):\n    return torch.zeros(1)",
    "multi_hot": "def multi_hot(label_lists, num_classes):\n    return torch.zeros(1)",
    "smooth_labels": "def smooth_labels(encoded, eps):\n    return torch.zeros(1)",
}
#: Wraps the correct one_hot so that it keeps every input it is called with; a cell at the end prints them.
RECORDING_ONE_HOT = """
seen_inputs = []
_correct_one_hot = one_hot
def one_hot(labels, num_classes):
    seen_inputs.append(repr(labels))
    return _correct_one_hot(labels, num_classes)
"""
PRINT_SEEN = 'print("inputs seen by one_hot:", len(seen_inputs), seen_inputs)'


def _sample(course: Course, name: str) -> nbformat.NotebookNode:
    sample = next(s for s in load_samples(course, ASSIGNMENT) if s.student == name)
    return build_notebook(course, sample, NOTEBOOK)


def _cell(notebook: nbformat.NotebookNode, grade_id: str) -> nbformat.NotebookNode:
    return next(c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def _cheat(course: Course) -> nbformat.NotebookNode:
    notebook = _sample(course, "untouched")
    for grade_id, source in GARBAGE.items():
        _cell(notebook, grade_id).source = source
    _cell(notebook, "one_hot_numpy").source = CHEAT + "\n" + GARBAGE["one_hot_numpy"]
    return notebook


def _tampered(course: Course) -> nbformat.NotebookNode:
    notebook = _sample(course, "correct")
    _cell(notebook, "test_one_hot_basic").source = "pass"
    return notebook


def _submit(course: Course, student: str, notebook: nbformat.NotebookNode) -> Path:
    folder = course.submitted / student / ASSIGNMENT
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, folder / NOTEBOOK)
    return folder


def _nbgrader(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run([str(BIN / "nbgrader"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check:
        assert done.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def _rows(course: Course, student: str) -> dict:
    """Everything the gradebook holds about one submission, but the time it was graded."""
    with Gradebook(course.db_url) as gradebook:
        submission = gradebook.find_submission(ASSIGNMENT, student)
        notebook = submission.notebooks[0]
        rows = {
            "score": submission.score,
            "flagged": notebook.flagged,
            "grades": sorted((g.cell.name, g.auto_score, g.manual_score, g.needs_manual_grade) for g in notebook.grades),
            "comments": sorted((c.cell.name, c.auto_comment) for c in notebook.comments),
            "status": tuple(gradebook.db.execute(
                text(f"SELECT status, detail, sandbox FROM {STATUS_TABLE} WHERE assignment = :a AND student = :s"),
                {"a": ASSIGNMENT, "s": student},
            ).one()),
        }
        gradebook.db.commit()
    return rows


def _api(course: Course) -> NbGraderAPI:
    """The API as the formgrader builds it: the course's nbgrader_config.py loaded."""
    return NbGraderAPI(config=course.config())


@pytest.fixture(scope="module")
def doors(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("doors")
    course = copy_course(root / "course")
    exchange = root / "exchange"
    exchange.mkdir()
    exchange.chmod(0o777)
    with (course.root / "nbgrader_config.py").open("a") as config:
        config.write(f"\n# the test's course-local exchange\nc.Exchange.root = {str(exchange)!r}\n")
    generate_release(course, ASSIGNMENT)
    return course, exchange, root


def test_the_config_routes_autograde_to_the_engine(doors):
    course, _, _ = doors
    config = course.config()
    assert config.Autograde.exporter_class == "autograder.nbgrader_door.SandboxedAutogradeExporter"
    assert config.ExportApp.plugin_class == "autograder.nbgrader_export.StatusCsvExportPlugin"
    # nbgrader's own preprocessors (Execute among them) are never run by the exporter.
    with pytest.raises(Exception, match="from their files"):
        SandboxedAutogradeExporter().from_notebook_node(nbformat.v4.new_notebook())


def test_every_door_gives_a_cheat_the_trusted_score(doors, monkeypatch):
    course, _, _ = doors
    _submit(course, "cheat", _cheat(course))

    rows, _ = grade_assignment(course, ASSIGNMENT, ["cheat"], progress=False, workers=1)
    assert (rows[0].status, rows[0].score) == (Status.GRADED, 0.0), rows[0]
    trusted = _rows(course, "cheat")
    assert trusted["score"] == 0.0
    assert all(auto == 0.0 for name, auto, _, _ in trusted["grades"] if name.startswith("test_")), trusted["grades"]

    done = _nbgrader(course.root, "autograde", ASSIGNMENT, "--student", "cheat", "--force")
    assert "with the sandboxed autograder" in done.stderr
    assert _rows(course, "cheat") == trusted
    autograded = nbformat.read(course.autograded / "cheat" / ASSIGNMENT / NOTEBOOK, as_version=4)
    # The trusted check ran, not the student's no-op.
    outputs = _cell(autograded, "test_one_hot_basic").outputs
    assert [o.output_type for o in outputs] == ["error"] and "expected shape (3, 3)" in outputs[0].evalue, outputs

    result = _api(course).autograde(ASSIGNMENT, "cheat")
    assert result["success"], result
    assert _rows(course, "cheat") == trusted

    # In the formgrader's Jupyter server (other threads running) the engine runs in its own process.
    monkeypatch.setattr(nbgrader_door, "needs_own_process", lambda: True)
    result = _api(course).autograde(ASSIGNMENT, "cheat")
    assert result["success"], result
    assert "in a fresh process" in result["log"]
    assert _rows(course, "cheat") == trusted

    # Without --force, nbgrader skips what is already autograded, as it always does.
    done = _nbgrader(course.root, "autograde", ASSIGNMENT, "--student", "cheat")
    assert "Skipping existing assignment" in done.stderr
    assert _rows(course, "cheat") == trusted


def test_an_ungradable_submission_fails_in_nbgrader_with_its_status(doors):
    course, _, _ = doors
    folder = _submit(course, "broken", _sample(course, "correct"))
    (folder / NOTEBOOK).write_bytes(b"\xef\xbb\xbf" + (folder / NOTEBOOK).read_bytes())  # UTF-8 with a BOM
    result = _api(course).autograde(ASSIGNMENT, "broken")
    assert not result["success"]
    assert "invalid notebook" in result["log"] + result.get("error", "")
    rows = _rows(course, "broken")
    assert rows["status"][0] == str(Status.INVALID_NOTEBOOK)
    assert rows["flagged"] is True
    assert all(needs for _, _, _, needs in rows["grades"])
    assert not (course.autograded / "broken" / ASSIGNMENT).exists()


def _strip_html(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", page))


def _hidden_lines(course: Course) -> list[str]:
    source = nbformat.read(course.source / ASSIGNMENT / NOTEBOOK, as_version=4)
    lines: list[str] = []
    for cell in source.cells:
        inside = False
        for line in cell.source.splitlines():
            if "BEGIN HIDDEN TESTS" in line:
                inside = True
            elif "END HIDDEN TESTS" in line:
                inside = False
            elif inside and len(line.strip()) >= 25:
                lines.append(line.strip())
    assert lines, "a01 has hidden tests"
    return lines


def _test_inputs(course: Course, call: str) -> set[str]:
    """The repr of every literal ``torch.tensor([...])`` a test cell passes to ``call``, hidden tests included."""
    import torch

    source = nbformat.read(course.source / ASSIGNMENT / NOTEBOOK, as_version=4)
    found = set()
    for cell in source.cells:
        if cell.metadata.get("nbgrader", {}).get("grade") and call in cell.source:
            for literal in re.findall(r"torch\.tensor\((\[[-0-9, ]*\])\)", cell.source):
                found.add(repr(torch.tensor(eval(literal))))
    assert len(found) >= 4, found
    return found


def test_feedback_reaches_the_student_through_the_exchange(doors):
    course, exchange, root = doors
    student_home = root / "student"
    student_home.mkdir()
    cache = root / "cache"
    student = ["--course", "lossfn", f"--Exchange.root={exchange}", f"--Exchange.cache={cache}"]

    _nbgrader(course.root, "release_assignment", ASSIGNMENT, "--force")
    _nbgrader(student_home, "fetch_assignment", ASSIGNMENT, *student)
    notebook = _sample(course, "correct")
    _cell(notebook, "one_hot").source += "\n" + RECORDING_ONE_HOT
    notebook.cells.append(nbformat.v4.new_code_cell(PRINT_SEEN))
    nbformat.write(notebook, student_home / ASSIGNMENT / NOTEBOOK)
    _nbgrader(student_home, "submit", ASSIGNMENT, *student)

    _nbgrader(course.root, "collect", ASSIGNMENT)
    me = get_username()
    submitted = course.submitted / me / ASSIGNMENT
    assert (submitted / "timestamp.txt").is_file() and (submitted / "submission_secret.txt").is_file()

    _nbgrader(course.root, "autograde", ASSIGNMENT, "--student", me)
    autograded = course.autograded / me / ASSIGNMENT
    for name in ("timestamp.txt", "submission_secret.txt"):
        assert (autograded / name).read_bytes() == (submitted / name).read_bytes()
    assert _rows(course, me)["status"][0] == str(Status.GRADED)

    _nbgrader(course.root, "generate_feedback", ASSIGNMENT, "--student", me)
    _nbgrader(course.root, "release_feedback", ASSIGNMENT, "--student", me)
    # The formgrader's buttons: the same through the API.
    api = _api(course)
    for result in (api.generate_feedback(ASSIGNMENT, me), api.release_feedback(ASSIGNMENT, me)):
        assert result["success"], result

    _nbgrader(student_home, "fetch_feedback", ASSIGNMENT, *student)
    fetched = list((student_home / ASSIGNMENT / "feedback").glob(f"*/{NOTEBOOK.replace('.ipynb', '.html')}"))
    assert len(fetched) == 1, fetched
    page = _strip_html(fetched[0].read_text(encoding="utf-8"))
    assert "passed" in page
    for line in _hidden_lines(course):
        assert line not in page, f"the feedback shows a hidden test line: {line}"
    # The test cells called one_hot in copies of the student's process: nothing they passed
    # in was left for the student's own later cell to print (it shows the notebook's own calls).
    printed = next(line for line in page.splitlines() if line.startswith("inputs seen by one_hot:"))
    for literal in _test_inputs(course, "one_hot("):
        assert literal not in printed, f"a test's input reached the feedback: {literal}"


@pytest.mark.parametrize("status", [Status.TAMPERED, Status.TIMEOUT, Status.MEMORY_LIMIT, Status.KERNEL_DIED])
def test_a_status_is_flagged_where_the_ta_grades(doors, status):
    course, _, _ = doors
    student = f"flag_{str(status).replace(' ', '_')}"
    folder = _submit(course, student, _sample(course, "correct"))
    detail = f"what happened to {student}"
    with GradebookWriter(course) as writer:
        writer.graded(Submission(student, ASSIGNMENT, folder), [], status, detail, "test")
    rows = _rows(course, student)
    assert rows["flagged"] is True
    assert rows["comments"] and all(comment.startswith(f"{COMMENT_PREFIX}{status}: {detail}") for _, comment in rows["comments"])
    # Graded cleanly afterwards: the grader's own flag and note come down.
    with GradebookWriter(course) as writer:
        writer.graded(Submission(student, ASSIGNMENT, folder), [], Status.GRADED, "", "test")
    rows = _rows(course, student)
    assert rows["flagged"] is False
    assert not any((comment or "").startswith(COMMENT_PREFIX) for _, comment in rows["comments"])


def test_a_flag_a_ta_set_survives_a_clean_regrade(doors):
    course, _, _ = doors
    folder = _submit(course, "ta_flagged", _sample(course, "correct"))
    with GradebookWriter(course) as writer:
        writer.graded(Submission("ta_flagged", ASSIGNMENT, folder), [], Status.GRADED, "", "test")
    with Gradebook(course.db_url) as gradebook:
        gradebook.find_submission(ASSIGNMENT, "ta_flagged").notebooks[0].flagged = True
        gradebook.db.commit()
    with GradebookWriter(course) as writer:
        writer.graded(Submission("ta_flagged", ASSIGNMENT, folder), [], Status.GRADED, "", "test")
    assert _rows(course, "ta_flagged")["flagged"] is True


def test_nbgrader_export_has_status_and_manual_pending(doors):
    course, _, root = doors
    _submit(course, "tampered", _tampered(course))
    _nbgrader(course.root, "autograde", ASSIGNMENT, "--student", "tampered", "--force")
    tampered = _rows(course, "tampered")
    assert tampered["status"][0] == str(Status.TAMPERED) and tampered["flagged"] is True
    assert any("test_one_hot_basic" in (comment or "") for _, comment in tampered["comments"])
    # The note reaches the student's feedback too.
    assert _api(course).generate_feedback(ASSIGNMENT, "tampered")["success"]
    feedback = _strip_html((course.root / "feedback" / "tampered" / ASSIGNMENT / "encoding.html").read_text(encoding="utf-8"))
    assert "Autograder: tampered: test cell 'test_one_hot_basic' was edited" in feedback
    timeout_folder = _submit(course, "timed_out", _sample(course, "correct"))
    with GradebookWriter(course) as writer:
        writer.graded(Submission("timed_out", ASSIGNMENT, timeout_folder), [], Status.TIMEOUT, "ran past its time", "test")
    with Gradebook(course.db_url) as gradebook:
        gradebook.update_or_create_student("absent", first_name="Ada, Jr.")
        gradebook.db.commit()

    target = root / "export.csv"
    _nbgrader(course.root, "export", "--to", str(target))
    with target.open(newline="", encoding="utf-8") as handle:
        lines = {row["student_id"]: row for row in csv.DictReader(handle) if row["assignment"] == ASSIGNMENT}
    assert lines["tampered"]["status"] == "tampered"
    assert "test_one_hot_basic" in lines["tampered"]["status_detail"]
    assert lines["tampered"]["manual_pending"] == "1"  # the written answer
    assert float(lines["tampered"]["score"]) == tampered["score"]
    assert (lines["timed_out"]["status"], lines["timed_out"]["status_detail"]) == ("timeout", "ran past its time")
    with Gradebook(course.db_url) as gradebook:
        submission = gradebook.find_submission(ASSIGNMENT, "timed_out")
        pending = sum(1 for nb in submission.notebooks for g in nb.grades if g.needs_manual_grade)
    assert lines["timed_out"]["manual_pending"] == str(pending)
    assert (lines["absent"]["status"], lines["absent"]["manual_pending"], lines["absent"]["first_name"]) == ("missing", "0", "Ada, Jr.")


def test_only_short_regular_submission_files_reach_autograded(tmp_path):
    """timestamp.txt and submission_secret.txt come from the student: a link, a FIFO or a long
    file is not copied (nor read: a FIFO would block)."""
    from autograder.record import MAX_TIMESTAMP_BYTES, _copy_submission_files

    submitted, staged = tmp_path / "submitted", tmp_path / "staged"
    submitted.mkdir()
    staged.mkdir()
    (submitted / "timestamp.txt").write_text("2026-11-30 10:00:00.000000 UTC")
    (submitted / "submission_secret.txt").write_text("0123abcd")
    _copy_submission_files(submitted, staged)
    assert (staged / "timestamp.txt").read_text() == "2026-11-30 10:00:00.000000 UTC"
    assert (staged / "submission_secret.txt").read_text() == "0123abcd"

    for path in staged.iterdir():
        path.unlink()
    (submitted / "timestamp.txt").write_text("1" * (MAX_TIMESTAMP_BYTES + 1))
    (submitted / "submission_secret.txt").unlink()
    os.mkfifo(submitted / "submission_secret.txt")
    _copy_submission_files(submitted, staged)
    (submitted / "timestamp.txt").unlink()
    (submitted / "timestamp.txt").symlink_to(tmp_path / "elsewhere.txt")
    (tmp_path / "elsewhere.txt").write_text("2026-11-30 10:00:00.000000 UTC")
    _copy_submission_files(submitted, staged)
    assert list(staged.iterdir()) == []


def test_the_formgraders_server_grades_in_a_fresh_process(monkeypatch):
    """The button's request runs in the Jupyter server: the engine must not fork it (nor load torch there)."""
    monkeypatch.delitem(sys.modules, "jupyter_server.serverapp", raising=False)
    monkeypatch.setattr(nbgrader_door.threading, "active_count", lambda: 1)
    assert not nbgrader_door.needs_own_process()
    monkeypatch.setitem(sys.modules, "jupyter_server.serverapp", object())
    assert nbgrader_door.needs_own_process()
    monkeypatch.delitem(sys.modules, "jupyter_server.serverapp")
    monkeypatch.setattr(nbgrader_door.threading, "active_count", lambda: 3)
    assert nbgrader_door.needs_own_process()
