"""Unit tests for the check helpers added for assignment 02, and for the a02 tests' own conventions."""

import pytest
import torch

import course_checks
from course_checks import ForbiddenCallError, check_runs, forbid


def test_check_runs_returns_the_result():
    assert check_runs(lambda x, scale=1: x * scale, 3, scale=2, what="double") == 6


def test_check_runs_turns_a_crash_into_a_diagnosis():
    def broadcast_bug(x):
        return x - x.max(dim=1).values

    with pytest.raises(AssertionError) as info:
        check_runs(broadcast_bug, torch.zeros(4, 3), what="softmax of a (4, 3) input", hint="use keepdim=True")
    message = str(info.value)
    # The call is described by shapes and dtypes; the author's hint is advice, never a claimed mistake.
    assert message.startswith("softmax of a (4, 3) input: broadcast_bug(tensor(4, 3) float32) raised RuntimeError: "
                              "The size of tensor a (3)")
    assert message.endswith(". Hint: use keepdim=True")
    assert course_checks.LIKELY not in message
    assert "\n" not in message


def test_check_runs_names_a_cause_the_exception_proves():
    def in_place(x):
        x -= x.max()
        return x

    leaf = torch.zeros(3, requires_grad=True)
    with pytest.raises(AssertionError) as info:
        check_runs(in_place, leaf, what="softmax of a leaf", hint="shift a new tensor")
    message = str(info.value)
    assert message.startswith("softmax of a leaf: " + course_checks.LIKELY + "an in-place operation")
    assert "Hint:" not in message


def test_check_runs_passes_failed_checks_and_unfinished_work_through():
    def unfinished():
        raise NotImplementedError()

    with pytest.raises(NotImplementedError):
        check_runs(unfinished, what="unfinished", hint="never shown")

    def forbidden():
        return torch.softmax(torch.zeros(2), dim=0)

    with forbid("torch.softmax", hint="from scratch"), pytest.raises(ForbiddenCallError) as info:
        check_runs(forbidden, what="softmax", hint="never shown")
    assert "never shown" not in str(info.value)


def test_check_runs_is_a_test_cell_name():
    assert "check_runs" in course_checks.__all__
    assert "check_runs" in course_checks.TEST_CELL_NAMES


@pytest.mark.parametrize("name", course_checks.LIBRARY_SOFTMAX + course_checks.LIBRARY_CROSS_ENTROPY)
def test_every_library_name_can_be_forbidden_and_is_restored(name):
    owner_name, _, attr = name.rpartition(".")
    owner = torch.Tensor if owner_name == "torch.Tensor" else eval(owner_name, {"torch": torch})
    original = getattr(owner, attr)
    with forbid(name, hint="from scratch"):
        with pytest.raises(ForbiddenCallError):
            if owner is torch.Tensor:
                getattr(torch.zeros(2, 3), attr)(1)
            elif attr == "cross_entropy" or attr == "nll_loss":
                getattr(owner, attr)(torch.zeros(2, 3), torch.tensor([0, 1]))
            else:
                getattr(owner, attr)(torch.zeros(2, 3), 1)
    assert getattr(owner, attr) is original


def test_library_names_are_test_cell_names():
    assert {"LIBRARY_SOFTMAX", "LIBRARY_CROSS_ENTROPY"} <= set(course_checks.__all__)
    assert {"LIBRARY_SOFTMAX", "LIBRARY_CROSS_ENTROPY"} <= course_checks.TEST_CELL_NAMES
