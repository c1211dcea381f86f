"""`autograder grade --device cpu|cuda|auto`.

Without CUDA: ``--device cuda`` is a one-line usage error (exit 2) and
``auto`` means cpu.  With CUDA (skipped elsewhere): the honest fixture
submissions score the same on the GPU as on the CPU, and a function that
makes its tensors on the CPU gets feedback naming the input's device.
"""

from __future__ import annotations

import sys

import pytest
import torch

from autograder import cli, sandbox
from autograder.errors import UsageError
from autograder.grade import grade_assignment, resolve_device

import attacks
from fixture import ASSIGNMENT, make_course, release_notebook, submit

CUDA = torch.cuda.is_available()
LIMITS = sandbox.Limits(cell_seconds=30, notebook_seconds=120, restarts=1)


@pytest.mark.skipif(CUDA, reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_one_line_usage_error(course, capsys, monkeypatch):
    with pytest.raises(UsageError, match="no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("auto") == "cpu"
    monkeypatch.setattr(sys, "argv", ["autograder", "grade", "a01_encoding", "--course", str(course.root), "--device", "cuda"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("autograder: error: --device cuda") and len(error.splitlines()) == 1


def test_bad_worker_count_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="--workers"):
        grade_assignment(None, "a01_encoding", workers=0)  # type: ignore[arg-type]


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_gpu_grades_like_cpu_and_explains_cpu_tensors(tmp_path):
    course = make_course(tmp_path / "course")
    release = release_notebook(course)
    for student in ("correct", "wrong"):
        submit(course, student, attacks.honest(student, release))
    on_cpu = "def double(x):\n    return 2 * x + torch.zeros(x.shape, dtype=x.dtype)"
    submit(course, "cpu_tensor", attacks.build(attacks.Attack("cpu_tensor", "", "correct", "graded", "", cells={"double": on_cpu}), release, {}))
    gpu_rows, _ = grade_assignment(course, ASSIGNMENT, progress=False, limits=LIMITS, device="cuda")
    cpu_rows, _ = grade_assignment(course, ASSIGNMENT, progress=False, limits=LIMITS, device="cpu")
    gpu = {r.student: r for r in gpu_rows}
    cpu = {r.student: r for r in cpu_rows}
    for student in ("correct", "wrong"):
        assert gpu[student].score == cpu[student].score, (gpu[student], cpu[student])
    assert cpu["cpu_tensor"].score == 5.0
    assert gpu["cpu_tensor"].score < 5.0
    assert any("input's device" in message for message in gpu["cpu_tensor"].failures.values()), gpu["cpu_tensor"].failures
