"""course_checks.forbid tells the grader which rules are active, so it can repeat them in the sandbox."""

import pytest
import torch

import course_checks
from course_checks import ForbiddenCallError, active_forbids, forbid


def test_active_forbids_lists_open_blocks_outermost_first():
    assert active_forbids() == ()
    with forbid("torch.softmax", hint="outer"):
        with forbid("torch.nn.functional.one_hot", "torch.Tensor.max"):
            assert active_forbids() == ((("torch.softmax",), "outer"), (("torch.nn.functional.one_hot", "torch.Tensor.max"), None))
        assert active_forbids() == ((("torch.softmax",), "outer"),)
    assert active_forbids() == ()


def test_lifting_restores_the_real_functions_only_inside_the_block():
    with forbid("torch.softmax", "torch.Tensor.softmax"):
        with forbid("torch.softmax"):
            with course_checks._forbids_lifted():
                assert torch.softmax(torch.zeros(2), 0).tolist() == [0.5, 0.5]
                assert torch.zeros(2).softmax(0).tolist() == [0.5, 0.5]
            with pytest.raises(ForbiddenCallError):
                torch.softmax(torch.zeros(2), 0)
        with pytest.raises(ForbiddenCallError):
            torch.zeros(2).softmax(0)
    assert torch.softmax(torch.zeros(2), 0).tolist() == [0.5, 0.5]


def test_a_misspelt_name_leaves_nothing_patched():
    real = torch.softmax
    with pytest.raises((AttributeError, ModuleNotFoundError)):
        with forbid("torch.softmax", "torch.no_such_function_here"):
            pass
    assert torch.softmax is real and active_forbids() == ()
