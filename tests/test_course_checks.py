"""The check helpers fail when they should, pass when they should, and say why."""

import numpy as np
import pytest
import torch

import course_checks as cc


def test_check_close_passes_within_tolerance():
    cc.check_close(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0 + 1e-7]), what="x")


def test_check_close_names_the_worst_index_and_the_hint():
    with pytest.raises(AssertionError) as info:
        cc.check_close(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[1.0, 2.0], [3.5, 4.0]]), what="probs", hint="keepdim")
    message = str(info.value)
    assert "probs" in message and "(1, 0)" in message and "got 3" in message and "expected 3.5" in message
    assert message.endswith("Likely mistake: keepdim")


def test_check_close_reports_shape_mismatch_before_values():
    with pytest.raises(AssertionError, match=r"shape \(2, 2\), expected \(2,\)"):
        cc.check_close(torch.zeros(2, 2), torch.zeros(2), what="y")


def test_check_close_treats_matching_infinities_as_equal_but_not_nan_against_number():
    cc.check_close(torch.tensor([float("-inf")]), torch.tensor([float("-inf")]), what="lse")
    with pytest.raises(AssertionError, match="1 of 1"):
        cc.check_close(torch.tensor([float("nan")]), torch.tensor([1.0]), what="loss")


def test_check_close_rejects_non_numeric_results():
    with pytest.raises(AssertionError, match="is a NoneType"):
        cc.check_close(None, torch.zeros(1), what="result")


def test_shape_dtype_and_finite_checks():
    cc.check_shape(torch.zeros(3, 4), (3, 4), what="t")
    with pytest.raises(AssertionError, match=r"\(4, 3\)"):
        cc.check_shape(torch.zeros(4, 3), (3, 4), what="t")
    cc.check_dtype(torch.zeros(1, dtype=torch.long), torch.long, what="t")
    with pytest.raises(AssertionError, match="torch.float32"):
        cc.check_dtype(torch.zeros(1), torch.long, what="t")
    with pytest.raises(AssertionError, match="2 non-finite"):
        cc.check_finite(torch.tensor([1.0, float("inf"), float("nan")]), what="t")


def test_check_not_mutated_catches_in_place_changes():
    def subtract_max_in_place(z):
        z -= z.max()
        return z

    with pytest.raises(AssertionError, match="changed its input in place"):
        cc.check_not_mutated(subtract_max_in_place, torch.tensor([1.0, 2.0]), what="softmax")
    result = cc.check_not_mutated(lambda z: z - z.max(), torch.tensor([1.0, 2.0]), what="softmax")
    assert torch.equal(result, torch.tensor([-1.0, 0.0]))


def test_check_raises():
    cc.check_raises(ValueError, int, "x", what="int('x')")
    with pytest.raises(AssertionError, match="returned normally"):
        cc.check_raises(ValueError, int, "3", what="int('3')")
    with pytest.raises(AssertionError, match="raised ZeroDivisionError, expected ValueError"):
        cc.check_raises(ValueError, lambda: 1 / 0, what="division")


def test_forbid_blocks_every_spelling_and_restores_them():
    x = torch.tensor([1.0, 2.0])
    with cc.forbid("torch.softmax", "torch.Tensor.softmax", "torch.nn.functional.softmax", hint="write it yourself"):
        for call in (lambda: torch.softmax(x, 0), lambda: x.softmax(0), lambda: torch.nn.functional.softmax(x, 0)):
            with pytest.raises(cc.ForbiddenCallError, match="write it yourself"):
                call()
    assert torch.allclose(torch.softmax(x, 0), x.softmax(0))


def test_rel_error():
    assert cc.rel_error(torch.zeros(3), torch.zeros(3)) == 0.0
    assert cc.rel_error(np.array([1.0]), np.array([1.0 + 2e-6])) == pytest.approx(1e-6, rel=1e-3)


def test_answer_digest_ignores_case_spaces_and_quotes():
    assert cc.answer_digest(" B ") == cc.answer_digest("b")
    assert cc.answer_digest('say "hi"') == cc.answer_digest("say 'hi'")
    assert cc.answer_digest("a") != cc.answer_digest("b")
    key = cc.answer_digest("q1: b")
    cc.check_choice(" (B) ", key, what="q1")
    with pytest.raises(AssertionError, match="no answer given"):
        cc.check_choice(None, key, what="q1")
    with pytest.raises(AssertionError, match="not the right answer"):
        cc.check_choice("c", key, what="q1")
    with pytest.raises(AssertionError, match="not one of the options"):
        cc.check_choice("e", key, what="q1")
