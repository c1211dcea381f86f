"""The check helpers fail when they should, pass when they should, and say why."""

import numpy as np
import pytest
import torch

import course_checks as cc


def test_check_close_passes_within_tolerance():
    cc.check_close(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0 + 1e-7]), what="x")


def test_check_close_names_the_worst_index_and_adds_the_hint_as_advice():
    with pytest.raises(AssertionError) as info:
        cc.check_close(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[1.0, 2.0], [3.5, 4.0]]), what="probs", hint="keepdim")
    message = str(info.value)
    assert "probs" in message and "(1, 0)" in message and "got 3" in message and "expected 3.5" in message
    assert message.endswith("Hint: keepdim") and "Likely mistake" not in message


def test_check_close_reports_shape_mismatch_before_values():
    with pytest.raises(AssertionError, match=r"shape \(2, 2\), expected shape \(2,\)"):
        cc.check_close(torch.zeros(2, 2), torch.zeros(2), what="y")


# -- the tolerance policy ------------------------------------------------------------


def test_tolerance_comes_from_the_working_dtype():
    eps32, eps64 = torch.finfo(torch.float32).eps, torch.finfo(torch.float64).eps
    assert cc.tolerance(torch.float32) == (64 * eps32, 64 * eps32)
    assert cc.tolerance(torch.float64) == (64 * eps64, 64 * eps64)
    assert cc.tolerance(torch.float32, roundings=8, scale=1000) == (8 * eps32, 8 * 1000 * eps32)
    assert cc.tolerance(None) == (0.0, 0.0)
    assert cc.working_dtype(torch.zeros(1), torch.zeros(1, dtype=torch.float64)) == torch.float32
    assert cc.working_dtype(1.5, 2.5) == torch.float64
    assert cc.working_dtype(torch.zeros(1, dtype=torch.long), 3) is None


def test_one_float32_ulp_passes_and_a_float32_answer_fails_a_float64_exercise():
    reference = torch.linspace(0.1, 1.0, 7, dtype=torch.float64)
    one_ulp_off = torch.nextafter(reference.float(), torch.tensor(2.0))
    cc.check_close(one_ulp_off, reference, what="float32 answer")
    with pytest.raises(AssertionError, match="agree only to float32 precision"):
        cc.check_close(one_ulp_off.double(), reference, what="float64 answer")


def test_standard_stable_forms_pass_at_logits_of_1000_in_float32():
    logits = torch.tensor([[1000.0, 0.0, -1000.0], [1e4, -1e4, 0.0], [-1000.0, -1000.0, -1000.0]])
    labels = torch.tensor([2, 1, 0])
    exact = torch.nn.functional.cross_entropy(logits.double(), labels, reduction="none")
    picked = logits[torch.arange(3), labels]
    shifted = logits - logits.max(dim=1, keepdim=True).values
    forms = {
        "lse - z[y]": torch.logsumexp(logits, dim=1) - picked,
        "-(z - logsumexp(z))[y]": -(logits - torch.logsumexp(logits, dim=1, keepdim=True))[torch.arange(3), labels],
        "hand max-shift": -(shifted - shifted.exp().sum(dim=1, keepdim=True).log())[torch.arange(3), labels],
        "torch": torch.nn.functional.cross_entropy(logits, labels, reduction="none"),
    }
    for name, value in forms.items():
        cc.check_close(value, exact, what=name, scale=1e4)
    with pytest.raises(AssertionError):
        cc.check_close(forms["torch"] * 1.001, exact, what="wrong", scale=1e4)


def test_a_finite_value_never_matches_an_infinite_one():
    cc.check_close(torch.tensor([float("inf"), 1.0]), torch.tensor([float("inf"), 1.0]), what="lse")
    with pytest.raises(AssertionError, match="1 of 2"):
        cc.check_close(torch.tensor([1e30, 1.0]), torch.tensor([float("inf"), 1.0]), what="lse")
    with pytest.raises(AssertionError) as info:
        cc.check_close(torch.tensor([2.0]), torch.tensor([1.0]), what="x", mistakes={"overflow": torch.tensor([float("inf")])})
    assert "Likely mistake" not in str(info.value)


def test_integers_compare_exactly():
    cc.check_close(torch.tensor([1, 2]), torch.tensor([1, 2]), what="labels")
    with pytest.raises(AssertionError, match="1 of 2"):
        cc.check_close(torch.tensor([1, 3]), torch.tensor([1, 2]), what="labels")


# -- mistake signatures and neutral diagnoses --------------------------------------


def test_a_mistake_is_named_only_when_the_answer_matches_what_it_produces():
    expected = torch.tensor([0.5, 1.5, 2.0])
    mistakes = {"summing instead of averaging": 3 * expected, "forgetting the minus sign": -expected}
    with pytest.raises(AssertionError) as info:
        cc.check_close(3 * expected, expected, what="loss", mistakes=mistakes, hint="divide by N")
    assert str(info.value).startswith("Likely mistake: summing instead of averaging. loss: ")
    assert "Hint" not in str(info.value)
    with pytest.raises(AssertionError) as info:
        cc.check_close(2 * expected, expected, what="loss", mistakes=mistakes, hint="divide by N")
    assert "Likely mistake" not in str(info.value) and str(info.value).endswith("Hint: divide by N")


@pytest.mark.parametrize(
    "actual,expected,phrase",
    [
        (-torch.tensor([1.0, -2.0, 3.0]), torch.tensor([1.0, -2.0, 3.0]), "opposite sign"),
        (6 * torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 3.0]), "N = 6 times the expected value"),
        (torch.tensor([1.0, 2.0, 3.0]) / 6, torch.tensor([1.0, 2.0, 3.0]), "1/N = 1/6 times"),
        (7 * torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 3.0]), "exactly 7 times"),
        (torch.tensor([1.5, 2.5, 3.5]), torch.tensor([1.0, 2.0, 3.0]), "off by the same constant, +0.5"),
        (torch.arange(9.0).reshape(3, 3).T, torch.arange(9.0).reshape(3, 3), "transpose"),
        (torch.tensor([1.0, float("nan")]), torch.tensor([1.0, 2.0]), "1 nan at index 1 where the expected value is finite"),
        (torch.tensor([[0.2, 0.3], [0.8, 0.7]]), torch.tensor([[0.4, 0.6], [0.5, 0.5]]), "sum to 1 along dim 0; the expected ones along dim 1"),
    ],
)
def test_describe_difference_sees_common_patterns(actual, expected, phrase):
    with pytest.raises(AssertionError) as info:
        cc.check_close(actual, expected, what="value", sizes={"N": 6})
    assert phrase in str(info.value)


def test_shape_mistakes_and_shape_patterns():
    with pytest.raises(AssertionError, match=r"^Likely mistake: reduced without keepdim"):
        cc.check_shape(torch.zeros(4), (4, 1), what="max", mistakes={"reduced without keepdim": (4,)})
    with pytest.raises(AssertionError, match=r"\(the transpose\)"):
        cc.check_shape(torch.zeros(3, 4), (4, 3), what="grad")
    with pytest.raises(AssertionError, match=r"dimension 1 is missing"):
        cc.check_shape(torch.zeros(4), (4, 1), what="max")


def test_check_type_tells_a_tensor_from_a_python_float():
    cc.check_type(0.5, float, what="loss")
    with pytest.raises(AssertionError, match=r"is a torch.Tensor of shape \(\), expected a float"):
        cc.check_type(torch.tensor(0.5), float, what="loss")


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


def test_check_not_mutated_catches_values_requires_grad_and_grad():
    def subtract_max_in_place(z):
        z -= z.max()
        return z

    with pytest.raises(AssertionError, match="argument 1 had 2 of 2 value"):
        cc.check_not_mutated(subtract_max_in_place, torch.tensor([1.0, 2.0]), what="softmax")
    with pytest.raises(AssertionError, match="switched to requires_grad=True"):
        cc.check_not_mutated(lambda z: z.requires_grad_() * 1, torch.tensor([1.0, 2.0]), what="softmax")

    def fill_grad(z):
        z.grad = torch.ones_like(z)
        return z.detach()

    with pytest.raises(AssertionError, match=r"argument 'z'.grad was set"):
        cc.check_not_mutated(fill_grad, z=torch.tensor([1.0, 2.0], requires_grad=True), what="softmax")
    result = cc.check_not_mutated(lambda z: z - z.max(), torch.tensor([1.0, 2.0]), what="softmax")
    assert torch.equal(result, torch.tensor([-1.0, 0.0]))
    cc.check_not_mutated(lambda z: z * 2, torch.tensor([float("nan"), 1.0]), what="nan stays nan")


def test_a_crashing_call_is_described_by_shapes_and_dtypes_and_a_proven_cause_comes_first():
    message = cc.call_failure("softmax", (torch.zeros(2, 3), [1, 2]), {"dim": 1}, RuntimeError("boom\nmore"))
    assert message == "softmax(tensor(2, 3) float32, [1, 2], dim=1) raised RuntimeError: boom"
    leaf = torch.zeros(2, requires_grad=True)
    try:
        leaf -= 1
    except RuntimeError as err:
        message = cc.call_failure("shift", (leaf,), {}, err)
    assert message.startswith("Likely mistake: an in-place operation") and "tensor(2,) float32, requires_grad" in message


def test_check_raises():
    cc.check_raises(ValueError, int, "x", what="int('x')")
    with pytest.raises(AssertionError, match="returned normally"):
        cc.check_raises(ValueError, int, "3", what="int('3')")
    with pytest.raises(AssertionError, match="raised ZeroDivisionError, expected it to raise ValueError"):
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
