"""Runners on Dask, with real parts: a ``dask scheduler`` and ``autograder runner`` processes on loopback.

A small a01 class graded through two runners scores exactly as local grading,
with each row's provenance; a runner SIGKILLed mid-run costs nothing (every
submission graded, each recorded once); a submission that kills the grading
process on every try ends with a status after a bounded number of tries;
``--device cuda`` with no GPU runner, a scheduler with no runner and a
scheduler that does not answer all fail fast; a student's cell reaches
neither the scheduler's nor the runner's port, nor the network.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest

from autograder import sandbox
from autograder.errors import UsageError
from autograder.grade import grade_assignment
from autograder.job import PINNED_TORCH
from autograder.record import stored_statuses
from autograder.runner import RunnerClient, RunnerSettings, settings_from_config
from autograder.samples import load_samples, submit_sample
from autograder.status import Status

from conftest import REPO, copy_course

ASSIGNMENT = "a01_encoding"
#: A correct answer, a buggy one (a named mistake) and the untouched release.
CLASS = ["correct", "max_not_argmax", "untouched"]
STARTUP_SECONDS = 600  # a runner imports torch and warms its sandbox; on a loaded CI machine that takes a while
FAULTS = Path(__file__).with_name("runner_faults.py")
#: The default limits, with time for a sandbox to start on a loaded CI machine (a start that times out is a
#: status of its own, and would make the comparisons below compare load, not grading).
LIMITS = sandbox.Limits(startup_seconds=600)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Cluster:
    """A scheduler and runners started by this test module, each in its own process group."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.processes: dict[str, subprocess.Popen] = {}

    def _start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "wb")  # noqa: SIM115 - the process owns it
        env = dict(os.environ, PYTHONPATH=str(REPO))
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=REPO, env=env,
                                   start_new_session=True)
        log.close()
        self.processes[name] = process
        return process

    def start_scheduler(self) -> None:
        dask = Path(sys.executable).with_name("dask")
        self._start("scheduler", [str(dask), "scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"])
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"the scheduler did not start: {self.log('scheduler')}")

    def start_runner(self, name: str) -> subprocess.Popen:
        return self._start(name, [sys.executable, str(FAULTS), "runner", "--scheduler", self.address, "--name", name])

    def wait_for(self, names: set[str]) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        with RunnerClient(RunnerSettings(self.address), "auto", check=False) as client:
            while not names <= set(client.runners()):
                for name in names:
                    if self.processes[name].poll() is not None:
                        raise RuntimeError(f"runner {name} ended: {self.log(name)}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"runners {names} did not connect: {[self.log(n) for n in names]}")
                time.sleep(0.5)

    def kill(self, name: str) -> None:
        process = self.processes[name]
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")[-3000:]

    def close(self) -> None:
        for name in list(self.processes):
            self.kill(name)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start_scheduler()
        cluster.start_runner("runner-a")
        cluster.start_runner("runner-b")
        cluster.wait_for({"runner-a", "runner-b"})
        yield cluster
    finally:
        cluster.close()


def _make_course(folder: Path, students: list[str]):
    course = copy_course(folder)
    samples = {sample.student: sample for sample in load_samples(course, ASSIGNMENT)}
    for student in students:
        submit_sample(course, samples[student], student)
    return course


def _summary(rows) -> dict:
    return {row.student: (str(row.status), row.score, row.max_score, sorted(row.failures.items())) for row in rows}


def _submissions_per_student(course) -> dict[str, int]:
    with sqlite3.connect(course.root / "gradebook.db") as db:
        found = db.execute(
            "SELECT student.id, COUNT(*) FROM submitted_assignment JOIN student ON student.id = submitted_assignment.student_id "
            "GROUP BY student.id"
        ).fetchall()
    return dict(found)


PROBE = """
import socket
for label, port in (("scheduler", {scheduler}), ("runner", {runner})):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=3).close()
        print("PROBE", label, "REACHED")
    except OSError as error:
        print("PROBE", label, "BLOCKED", type(error).__name__)
try:
    socket.create_connection(("1.1.1.1", 53), timeout=3).close()
    print("PROBE network REACHED")
except OSError as error:
    print("PROBE network BLOCKED", type(error).__name__)
"""


def _runner_port(cluster: Cluster) -> int:
    with RunnerClient(RunnerSettings(cluster.address), "auto", check=False) as client:
        info = client.client.scheduler_info(n_workers=-1)["workers"]
    return int(next(iter(info)).rsplit(":", 1)[1])


def test_a_class_graded_on_runners_scores_as_local_grading(cluster, tmp_path):
    local_course = _make_course(tmp_path / "local", CLASS)
    local, _ = grade_assignment(local_course, ASSIGNMENT, CLASS, progress=False, workers=1, device="cpu", limits=LIMITS)

    course = _make_course(tmp_path / "runners", CLASS)
    rows, csv_path = grade_assignment(course, ASSIGNMENT, CLASS, progress=False, device="cpu", limits=LIMITS,
                                      runners=RunnerSettings(cluster.address))
    assert _summary(rows) == _summary(local), "runners and local grading disagree on the same class"
    assert _submissions_per_student(course) == {student: 1 for student in CLASS}
    for row in rows:
        assert row.provenance["runner"] in ("runner-a", "runner-b"), row.provenance
        assert row.provenance["device"] == "cpu" and row.provenance["torch"].split("+")[0] == PINNED_TORCH
        assert row.provenance["host"] == socket.gethostname()
    assert {row.provenance["runner"] for row in local} == {"local"}
    text = csv_path.read_text()
    assert text.splitlines()[0].endswith("runner,host,device,torch,cuda"), text.splitlines()[0]
    assert "runner-a" in text or "runner-b" in text
    with sqlite3.connect(course.root / "gradebook.db") as db:
        runners = dict(db.execute("SELECT student, runner FROM autograder_status WHERE assignment = ?", (ASSIGNMENT,)).fetchall())
    assert set(runners) == set(CLASS) and set(runners.values()) <= {"runner-a", "runner-b"}


@pytest.mark.skipif(sandbox.sandbox_mode() != sandbox.BUBBLEWRAP, reason="only bubblewrap isolates the network")
def test_a_student_cell_reaches_no_dask_port_and_no_network(cluster, tmp_path):
    course = _make_course(tmp_path / "course", ["correct"])
    folder = course.submitted / "prober" / ASSIGNMENT
    folder.mkdir(parents=True)
    for path in (course.submitted / "correct" / ASSIGNMENT).glob("*.ipynb"):
        notebook = nbformat.read(path, as_version=4)
        notebook.cells.append(nbformat.v4.new_code_cell(PROBE.format(scheduler=cluster.port, runner=_runner_port(cluster))))
        nbformat.write(notebook, folder / path.name)
    rows, _ = grade_assignment(course, ASSIGNMENT, ["prober"], progress=False, device="cpu",
                               limits=LIMITS, runners=RunnerSettings(cluster.address))
    assert rows[0].status == Status.GRADED, (rows[0].status, rows[0].detail)
    assert rows[0].provenance["runner"] in ("runner-a", "runner-b")
    printed = "".join(
        output.get("text", "")
        for path in (course.autograded / "prober" / ASSIGNMENT).glob("*.ipynb")
        for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )
    for label in ("scheduler", "runner", "network"):
        assert f"PROBE {label} BLOCKED" in printed, f"a student cell reached the {label}: {printed[-2000:]}"
    assert "REACHED" not in printed, printed


def test_a_poison_submission_ends_with_a_status_after_bounded_tries(cluster, tmp_path):
    course = _make_course(tmp_path / "course", ["correct"])
    samples = {sample.student: sample for sample in load_samples(course, ASSIGNMENT)}
    submit_sample(course, samples["correct"], "poison")
    rows, _ = grade_assignment(course, ASSIGNMENT, ["correct", "poison"], progress=False, device="cpu", limits=LIMITS,
                               runners=RunnerSettings(cluster.address, tries=2))
    by_student = {row.student: row for row in rows}
    assert by_student["correct"].status == Status.GRADED and by_student["correct"].score > 0
    poison = by_student["poison"]
    assert poison.status == Status.GRADER_ERROR, poison
    assert "every one of 2 tries" in poison.detail, poison.detail
    assert stored_statuses(course, ASSIGNMENT)["poison"][0] == str(Status.GRADER_ERROR)
    assert _submissions_per_student(course) == {"correct": 1, "poison": 1}


def test_cuda_without_a_gpu_runner_fails_fast(cluster, tmp_path):
    course = _make_course(tmp_path / "course", ["correct"])
    started = time.monotonic()
    with pytest.raises(UsageError, match="no GPU runner is connected"):
        grade_assignment(course, ASSIGNMENT, ["correct"], progress=False, device="cuda", runners=RunnerSettings(cluster.address))
    assert time.monotonic() - started < 30
    assert not (course.root / "gradebook.db").exists() or not _submissions_per_student(course)


def test_the_command_line_refuses_cuda_without_a_gpu_runner_in_one_line(cluster, tmp_path):
    course = _make_course(tmp_path / "course", ["correct"])
    autograder = Path(sys.executable).with_name("autograder")
    result = subprocess.run([str(autograder), "grade", ASSIGNMENT, "--course", str(course.root), "--scheduler", cluster.address,
                             "--device", "cuda", "--no-progress"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0 and "no GPU runner is connected" in result.stderr, result.stderr


def test_no_runner_and_no_scheduler_fail_fast(tmp_path):
    course = _make_course(tmp_path / "course", ["correct"])
    nobody = f"tcp://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(UsageError, match="no Dask scheduler answered"):
        grade_assignment(course, ASSIGNMENT, ["correct"], progress=False, device="cpu",
                         runners=RunnerSettings(nobody, connect_seconds=3))
    assert time.monotonic() - started < 30
    lonely = Cluster(tmp_path / "lonely")
    lonely.folder.mkdir()
    try:
        lonely.start_scheduler()
        with pytest.raises(UsageError, match="no runner is connected"):
            grade_assignment(course, ASSIGNMENT, ["correct"], progress=False, device="cpu", runners=RunnerSettings(lonely.address))
    finally:
        lonely.close()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_a_gpu_runner_is_refused_where_torch_sees_no_gpu():
    autograder = Path(sys.executable).with_name("autograder")
    result = subprocess.run([str(autograder), "runner", "--scheduler", f"tcp://127.0.0.1:{free_port()}", "--gpu"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip() == "autograder: error: --gpu: torch sees no CUDA device here (torch.cuda.is_available() is False)"


def test_the_scheduler_can_be_set_in_nbgrader_config(course):
    config = course.config()
    assert settings_from_config(config) is None
    config.Runners.scheduler = "tcp://grading-host:8786"
    config.Runners.tries = 5
    assert settings_from_config(config) == RunnerSettings("tcp://grading-host:8786", tries=5)
    assert settings_from_config(config, "tcp://other:1").scheduler == "tcp://other:1"
    config.Runners.retries = 5
    with pytest.raises(UsageError, match="c.Runners.retries is not a runner setting"):
        settings_from_config(config)


def test_the_pinned_torch_is_pyproject_s():
    import tomllib

    pins = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"torch=={PINNED_TORCH}" in pins


def test_a_runner_killed_mid_run_loses_and_doubles_nothing(cluster, tmp_path):
    """Last in this module: it kills one of the module's runners (a third one joins, as a late runner would)."""
    students = ["correct", "max_not_argmax", "untouched", "alt_loops"]
    course = _make_course(tmp_path / "course", students)
    outcome: dict = {}

    def grade() -> None:
        try:
            outcome["rows"], _ = grade_assignment(course, ASSIGNMENT, students, progress=False, device="cpu", limits=LIMITS,
                                                  runners=RunnerSettings(cluster.address))
        except BaseException as err:  # noqa: BLE001 - reported by the test below
            outcome["error"] = err

    grader = threading.Thread(target=grade)
    grader.start()
    with RunnerClient(RunnerSettings(cluster.address), "auto", check=False) as client:
        deadline = time.monotonic() + STARTUP_SECONDS
        victim = None
        while victim is None and time.monotonic() < deadline:
            busy = client.client.processing()
            names = {address: info["name"] for address, info in client.client.scheduler_info(n_workers=-1)["workers"].items()}
            victim = next((names[address] for address, keys in busy.items() if keys and address in names), None)
            time.sleep(0.2)
    assert victim is not None, "no runner ever took a job"
    cluster.kill(victim)
    cluster.start_runner("runner-c")
    grader.join(STARTUP_SECONDS)
    assert not grader.is_alive(), "grading did not finish after a runner was killed"
    assert "error" not in outcome, outcome.get("error")
    rows = outcome["rows"]
    assert sorted(row.student for row in rows) == sorted(students)
    assert all(row.status == Status.GRADED for row in rows), [(row.student, row.status, row.detail) for row in rows]
    scores = {row.student: row.score for row in rows}
    assert scores["correct"] == scores["alt_loops"] > scores["max_not_argmax"] > scores["untouched"] == 0, scores
    assert _submissions_per_student(course) == {student: 1 for student in students}
