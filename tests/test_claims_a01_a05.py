"""Numbers and promises that assignments 01-05 state in their text, re-run on the pinned torch.

* A03: the gradient of the logits-form BCE at exactly z = 0, through each way of
  writing max(-z, 0), and the saturation numbers the written question quotes;
* A04 and A05: the float32 limits of exp under the names the course uses (the
  normal, subnormal and zero limits), and the table of A05;
* A04: the values its visible per-pixel test hard-codes (so the test cell need
  not show how to move the class axis);
* every written question carries a rubric for the TA, and the A04 quiz's
  visible checks do not reveal the key.
"""

from __future__ import annotations

import math
import re

import nbformat
import pytest
import torch
import torch.nn.functional as F

from conftest import REPO

ASSIGNMENTS = {
    "a01_encoding": "encoding.ipynb",
    "a02_cross_entropy": "cross_entropy.ipynb",
    "a03_binary_multilabel": "binary.ipynb",
    "a04_nll_api": "nll.ipynb",
    "a05_stability": "stability.ipynb",
}


def _cells(assignment):
    return nbformat.read(REPO / "source" / assignment / ASSIGNMENTS[assignment], as_version=4).cells


def _source(assignment):
    return "\n".join(cell.source for cell in _cells(assignment))


# -- A03: the gradient at z = 0 -------------------------------------------------


def _gradient_at_zero(softplus_neg):
    z = torch.zeros(2, 3, requires_grad=True)
    t = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    (gradient,) = torch.autograd.grad(((1 - t) * z + softplus_neg(z)).mean(), z)
    return gradient, t


def _tail(x):
    return torch.log1p(torch.exp(-x.abs()))


@pytest.mark.parametrize("name,softplus_neg", [
    ("F.softplus", lambda x: F.softplus(-x)),
    ("torch.logaddexp", lambda x: torch.logaddexp(torch.zeros_like(x), -x)),
    ("torch.maximum", lambda x: torch.maximum(-x, torch.zeros_like(x)) + _tail(x)),
    ("(|z| - z) / 2", lambda x: (x.abs() - x) / 2 + _tail(x)),
])
def test_a03_formulations_with_the_right_gradient_at_zero(name, softplus_neg):
    gradient, t = _gradient_at_zero(softplus_neg)
    assert torch.allclose(gradient, (0.5 - t) / 6), name


def test_a03_kinked_formulations_give_the_gradients_the_text_and_the_test_name():
    gradient, t = _gradient_at_zero(lambda x: torch.clamp(-x, min=0) + _tail(x))
    assert torch.equal(gradient, -t / 6)  # the text: -t / n instead of (0.5 - t) / n
    gradient, t = _gradient_at_zero(lambda x: torch.relu(-x) + _tail(x))
    assert torch.equal(gradient, (1 - t) / 6)
    z = torch.zeros(3, requires_grad=True)
    t = torch.tensor([0.0, 1.0, 0.0])
    (library,) = torch.autograd.grad(F.binary_cross_entropy_with_logits(z, t), z)
    assert torch.allclose(library, (0.5 - t) / 3)


def test_a03_reference_is_not_the_kinked_formula():
    solution = next(c.source for c in _cells("a03_binary_multilabel")
                    if c.metadata.get("nbgrader", {}).get("grade_id") == "bce_with_logits")
    assert "F.softplus(-z)" in solution and "torch.clamp(-z" not in solution


def test_a03_saturation_numbers_of_the_written_question():
    target = torch.ones(1)
    gradients = {}
    for value in (-30.0, -120.0):
        x = torch.tensor([value], requires_grad=True)
        (gradients[value],) = torch.autograd.grad(F.binary_cross_entropy(torch.sigmoid(x), target), x)
    assert f"{gradients[-30.0].item():.3f}" == "-0.094"
    assert gradients[-120.0].item() == 0.0
    assert torch.sigmoid(torch.tensor(-120.0)).item() == 0.0
    assert F.binary_cross_entropy(torch.sigmoid(torch.tensor([-120.0])), target).item() == 100.0


def test_a03_swapped_branch_difference_has_the_sign_the_message_states():
    z = torch.tensor([3.0, -2.0, 1.0, -0.5], dtype=torch.float64)
    t = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    p = torch.sigmoid(z)
    swapped = -torch.where(t == 1, 1 - p, p).log().mean()
    correct = F.binary_cross_entropy_with_logits(z, t)
    assert torch.allclose(swapped - correct, (z[t == 1].sum() - z[t == 0].sum()) / 4)


# -- A04 and A05: the limits of exp ---------------------------------------------


SMALLEST_SUBNORMAL_EXPONENT = {torch.float16: -24, torch.float32: -149, torch.float64: -1074}


@pytest.mark.parametrize("dtype,normal,subnormal,zero", [
    (torch.float16, -9.70, -16.64, -17.33),
    (torch.float32, -87.34, -103.28, -103.97),
    (torch.float64, -708.40, -744.44, -745.13),
])
def test_a05_table_of_limits(dtype, normal, subnormal, zero):
    smallest = 2.0 ** SMALLEST_SUBNORMAL_EXPONENT[dtype]
    zero_limit = math.log(smallest) - math.log(2)  # ln(smallest / 2); smallest / 2 is 0 in float64 itself
    assert round(math.log(torch.finfo(dtype).tiny), 2) == normal
    assert round(math.log(smallest), 2) == subnormal
    assert round(zero_limit, 2) == zero
    # exp is exactly 0 just below the zero limit and the smallest subnormal just above it
    x = torch.tensor([zero_limit - 0.01, zero_limit + 0.01], dtype=torch.float64).to(dtype)
    below, above = torch.exp(x).tolist()
    assert below == 0.0 and above == smallest
    # below the normal limit, exp is subnormal: smaller than tiny, but not 0
    inside = torch.exp(torch.tensor(math.log(torch.finfo(dtype).tiny) - 1.0, dtype=torch.float64).to(dtype)).item()
    assert 0.0 < inside < torch.finfo(dtype).tiny
    assert f"{subnormal:.2f}".replace("-", "−") in _source("a05_stability")
    assert f"{zero:.2f}".replace("-", "−") in _source("a05_stability")


def test_a04_quotes_the_same_float32_limits_as_a05():
    text = _source("a04_nll_api")
    assert "-87.34" in text and "-103.97" in text and "normal limit" in text
    assert "about $-104$" not in text
    assert math.log(torch.finfo(torch.float32).max) == pytest.approx(88.72, abs=5e-3)


def test_a04_hard_coded_pixelwise_values():
    generator = torch.Generator().manual_seed(46)
    logits = torch.randn(2, 3, 4, 5, generator=generator) + 2.0
    target = torch.randint(0, 5, (2, 3, 4), generator=generator)
    exact = logits.double()
    values = {
        "expected": F.cross_entropy(exact.permute(0, 3, 1, 2), target).item(),
        "raw logits": F.nll_loss(exact.permute(0, 3, 1, 2), target).item(),
        "no dim": (-F.log_softmax(exact, dim=1).gather(3, target.unsqueeze(3)).mean()).item(),
    }
    cell = next(c.source for c in _cells("a04_nll_api")
                if c.metadata.get("nbgrader", {}).get("grade_id") == "test_pixelwise_ce_basic")
    for name, value in values.items():
        assert repr(value) in cell, f"{name}: {value!r} is not the value the visible test hard-codes"
    assert "permute" not in cell


# -- assessment -----------------------------------------------------------------


@pytest.mark.parametrize("assignment", sorted(ASSIGNMENTS))
def test_every_written_question_has_a_rubric(assignment):
    written = [c for c in _cells(assignment)
               if c.metadata.get("nbgrader", {}).get("solution") and c.metadata["nbgrader"].get("grade")
               and c.cell_type == "markdown"]
    assert written, f"{assignment}: no written question"
    for cell in written:
        points = cell.metadata["nbgrader"]["points"]
        assert f"**Rubric for the TA ({points} points).**" in cell.source, cell.metadata["nbgrader"]["grade_id"]
        bullet_points = sum(float(p) for p in re.findall(r"^- \*(\d+(?:\.\d+)?) points?:\*", cell.source, re.M))
        assert bullet_points == points, f"{assignment}: the rubric's points add up to {bullet_points}, not {points}"


def test_a04_quiz_visible_checks_do_not_reveal_the_key():
    quiz = [c for c in _cells("a04_nll_api")
            if c.metadata.get("nbgrader", {}).get("grade_id", "").startswith("test_quiz_")]
    assert len(quiz) == 12
    for cell in quiz:
        visible = cell.source.split("### BEGIN HIDDEN TESTS")[0]
        assert "check_choice" not in visible and not re.search(r'"[0-9a-f]{16}"', visible), cell.metadata["nbgrader"]
        assert "check_choice" in cell.source.split("### BEGIN HIDDEN TESTS")[1]
    total = sum(c.metadata["nbgrader"]["points"] for c in _cells("a04_nll_api")
                if c.metadata.get("nbgrader", {}).get("grade") and "points" in c.metadata["nbgrader"])
    quiz_points = sum(c.metadata["nbgrader"]["points"] for c in quiz)
    assert quiz_points / total <= 0.25, f"the quiz is {quiz_points} of {total} points"


@pytest.mark.parametrize("assignment", sorted(ASSIGNMENTS))
def test_sum_reduction_is_not_said_to_scale_every_optimizer(assignment):
    text = _source(assignment)
    assert "(and so the effective learning rate)" not in text
