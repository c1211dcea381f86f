"""The corrections the lectures teach: each claim is checked with torch here, and checked to be stated
in the lecture that teaches it (in its prose and in its committed outputs)."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import nbformat
import pytest
import torch
import torch.nn as nn

from conftest import REPO

LECTURES = REPO / "notebooks"


def lecture_text(stem: str) -> dict[str, str]:
    """The markdown, the code and the committed text outputs of notebooks/<stem>.ipynb, each as one string."""
    notebook = nbformat.read(LECTURES / f"{stem}.ipynb", as_version=4)
    parts = {"markdown": [], "code": [], "outputs": []}
    for cell in notebook.cells:
        parts["markdown" if cell.cell_type == "markdown" else "code"].append(cell.source)
        for output in cell.get("outputs", []):
            parts["outputs"].append(output.get("text", "") + output.get("data", {}).get("text/plain", ""))
    return {kind: "\n".join(texts) for kind, texts in parts.items()}


# --- softmax([1, 7, 2]) -------------------------------------------------------------------------------

def test_softmax_of_1_7_2_is_not_the_normalised_logits():
    probabilities = torch.softmax(torch.tensor([1.0, 7.0, 2.0], dtype=torch.float64), dim=0)
    assert [round(p, 4) for p in probabilities.tolist()] == [0.0025, 0.9909, 0.0067]
    assert not torch.allclose(probabilities, torch.tensor([0.1, 0.7, 0.2], dtype=torch.float64), atol=0.05)


def test_softmax_lecture_states_the_values_and_the_error():
    text = lecture_text("04_softmax")
    assert "[0.0025, 0.9909, 0.0067]" in text["markdown"], "lecture 04 must state softmax([1, 7, 2])"
    assert "[0.1, 0.7, 0.2]" in text["markdown"], "lecture 04 must name the wrong value it corrects"
    assert "tensor([0.0025, 0.9909, 0.0067])" in text["outputs"], "lecture 04 must compute softmax([1, 7, 2]) with torch"


# --- two green marbles ---------------------------------------------------------------------------------

def test_two_greens_from_three_green_two_red_is_a_product():
    bag = "GGGRR"
    pairs = list(itertools.permutations(range(5), 2))
    green_green = sum(bag[i] == bag[j] == "G" for i, j in pairs)
    assert Fraction(green_green, len(pairs)) == Fraction(3, 5) * Fraction(2, 4) == Fraction(3, 10)


def test_probability_lecture_states_the_product():
    text = lecture_text("05_probability_information")
    assert "3/5 × 2/4 = 0.3" in text["markdown"], "lecture 05 must state P(green, green) = 3/5 × 2/4 = 0.3"
    assert "not a sum" in text["markdown"] or "must be the product" in text["markdown"]
    assert "3/5 x 2/4 = 3/10 = 0.3" in text["outputs"], "lecture 05 must compute the marble probability"


# --- two-class softmax is the sigmoid of the logit difference -------------------------------------------

def test_two_class_softmax_is_sigmoid_of_the_difference():
    values = torch.tensor([-50.0, -7.5, -1.0, 0.0, 0.3, 2.0, 9.0, 50.0], dtype=torch.float64)
    a, b = torch.meshgrid(values, values, indexing="ij")
    first_class = torch.softmax(torch.stack([a, b], dim=-1), dim=-1)[..., 0]
    torch.testing.assert_close(first_class, torch.sigmoid(a - b), rtol=1e-12, atol=1e-15)
    # ... and not the sigmoid of one logit: softmax([2, 1])[0] = σ(1) ≠ σ(2)
    two, one = torch.tensor(2.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    assert not torch.isclose(torch.softmax(torch.stack([two, one]), dim=0)[0], torch.sigmoid(two))


def test_softmax_lecture_states_the_two_class_identity():
    text = lecture_text("04_softmax")
    assert r"\operatorname{softmax}([a, b])_0 = \sigma(a - b)" in text["markdown"]
    assert "assert torch.allclose(first_class, torch.sigmoid(A - B))" in text["code"], (
        "lecture 04 must check the two-class identity numerically"
    )


# --- the other corrections, each where its topic is taught ----------------------------------------------

def test_logsumexp_is_shift_equivariant_and_softmax_shift_invariant():
    z = torch.tensor([1.0, 7.0, 2.0], dtype=torch.float64)
    for b in (-5.0, 0.5, 100.0):
        torch.testing.assert_close(torch.logsumexp(z + b, dim=0), torch.logsumexp(z, dim=0) + b)
        torch.testing.assert_close(torch.softmax(z + b, dim=0), torch.softmax(z, dim=0))
    assert r"\operatorname{lse}(z + b\mathbf 1) = " in lecture_text("04_softmax")["markdown"]
    assert "shift-*equivariant*" in lecture_text("04_softmax")["markdown"]


def test_poisson_stirling_term():
    log_rates = torch.tensor([0.5, 1.0, 2.0, -1.0, 1.5], dtype=torch.float64)
    counts = torch.tensor([0.0, 1.0, 3.0, 7.0, 4.0], dtype=torch.float64)
    added = (nn.PoissonNLLLoss(full=True, reduction="none")(log_rates, counts)
             - nn.PoissonNLLLoss(reduction="none")(log_rates, counts))
    stirling = counts * torch.log(counts) - counts + 0.5 * torch.log(2 * math.pi * counts)
    torch.testing.assert_close(added, torch.where(counts > 1, stirling, torch.zeros_like(counts)))
    assert r"y\log y - y + \tfrac12\log(2\pi y)" in lecture_text("06_pytorch_loss_tour")["markdown"]


def test_bce_checks_targets_and_bce_with_logits_does_not():
    with pytest.raises(RuntimeError, match="between 0 and 1"):
        nn.BCELoss()(torch.tensor([0.3, 0.8]), torch.tensor([1.0, 2.0]))
    assert torch.isfinite(nn.BCEWithLogitsLoss()(torch.tensor([3.0, -1.0]), torch.tensor([2.0, 0.0])))
    text = lecture_text("06_pytorch_loss_tour")
    assert "BCEWithLogitsLoss does not check its targets" in text["markdown"]
    assert "BCELoss with target 2.0 raises RuntimeError" in text["outputs"]


def test_triplet_margin_loss_is_one_term_per_triplet():
    generator = torch.Generator().manual_seed(0)
    anchor, positive, negative = (torch.randn(3, 8, generator=generator, dtype=torch.float64) for _ in range(3))
    per_triplet = torch.clamp((anchor - positive + 1e-6).norm(dim=1) - (anchor - negative + 1e-6).norm(dim=1) + 1, min=0)
    per_component = torch.clamp((anchor - positive).abs() - (anchor - negative).abs() + 1, min=0).sum(dim=1)
    torch_loss = nn.TripletMarginLoss(margin=1.0, reduction="none")(anchor, positive, negative)
    torch.testing.assert_close(torch_loss, per_triplet)
    assert not torch.allclose(torch_loss, per_component)
    assert "one term per triplet" in lecture_text("06_pytorch_loss_tour")["markdown"]
