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


# --- lecture 03: which activations are zero-centred, and what the vanishing-gradient demo shows ---------------

def test_only_tanh_and_selu_are_zero_centred():
    inputs = torch.randn(100_000, generator=torch.Generator().manual_seed(2))
    means = {name: activation(inputs).mean().item() for name, activation in {
        "tanh": torch.tanh, "SELU": nn.functional.selu, "leaky ReLU": nn.functional.leaky_relu,
        "ELU": nn.functional.elu, "ReLU": nn.functional.relu}.items()}
    assert abs(means["tanh"]) < 0.01 and abs(means["SELU"]) < 0.01
    assert round(means["leaky ReLU"], 2) == 0.39 and round(means["ELU"], 2) == 0.16
    # the exact values: E[ReLU(X)] = 1/sqrt(2 pi), leaky ReLU keeps 0.99 of it
    assert math.isclose(means["leaky ReLU"], 0.99 / math.sqrt(2 * math.pi), abs_tol=0.01)
    text = lecture_text("03_activations")
    assert "Tanh, ELU and SELU outputs are centred" not in text["markdown"]
    assert "about 0.39" in text["markdown"] and "about 0.16" in text["markdown"]
    assert "leaky ReLU (a = 0.01) on N(0, 1) inputs: +0.393" in text["outputs"]
    assert "ELU                   on N(0, 1) inputs: +0.158" in text["outputs"]


def sigmoid_gradient_ratio(gain, depth=20, width=64, batch=128, seed=0):
    """Lecture 03's demo: first-layer over last-layer weight-gradient norm of a deep sigmoid MLP."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    layers = [nn.Linear(width, width) for _ in range(depth)]
    for layer in layers:
        nn.init.xavier_normal_(layer.weight, gain=gain)
        nn.init.zeros_(layer.bias)
    h = torch.randn(batch, width, generator=generator)
    for layer in layers:
        h = torch.sigmoid(layer(h))
    h.pow(2).mean().backward()
    return layers[0].weight.grad.norm().item() / layers[-1].weight.grad.norm().item()


def test_sigmoid_vanishing_gradient_depends_on_the_gain():
    plain, with_gain = sigmoid_gradient_ratio(1.0), sigmoid_gradient_ratio(4.0)
    assert 1e-14 < plain < 1e-12          # about 4^-20: plain Glorot loses a factor 4 per layer
    assert 1e-5 < with_gain < 1e-4        # the sigmoid's own effect, once the weights compensate its slope
    text = lecture_text("03_activations")
    assert "even in the best case the gradient shrinks like $4^{-L}$" not in text["markdown"]
    assert "gain" in text["markdown"] and "3 \\times 10^{-5}" in text["markdown"]
    assert f"ratio {plain:.0e}" in text["outputs"] and f"ratio {with_gain:.0e}" in text["outputs"]


# --- lecture 07: the three small-end limits of float32 exp ---------------------------------------------------

def test_float32_exp_limits():
    tiny = torch.finfo(torch.float32).tiny
    assert round(math.log(tiny), 2) == -87.34                   # normal limit
    assert round(math.log(2.0 ** -149), 2) == -103.28           # subnormal limit
    assert round(math.log(2.0 ** -150), 2) == -103.97           # zero point
    assert 0 < torch.exp(torch.tensor(-88.0)).item() < tiny     # subnormal below the normal limit
    assert torch.exp(torch.tensor(-103.5)).item() == 2.0 ** -149
    assert torch.exp(torch.tensor(-103.96)).item() == 2.0 ** -149
    assert torch.exp(torch.tensor(-103.98)).item() == 0.0
    # the zero point on the float32 grid: the largest float32 whose exp is 0 sits just below ln(2^-150)
    grid = torch.linspace(-104.0, -103.9, 200_001, dtype=torch.float64).float().unique()
    largest_zero = grid[torch.exp(grid) == 0].max().item()
    assert math.log(2.0 ** -150) - 1e-5 < largest_zero < math.log(2.0 ** -150)
    text = lecture_text("07_floating_point_logsumexp")
    for name in ("**normal limit**", "**subnormal limit**", "**zero point**"):
        assert name in text["markdown"], f"lecture 07 must name the {name}"
    assert "Underflow to 0 below −103.28" not in text["markdown"]
    assert "−103.97" in text["markdown"] and "−87.34" in text["markdown"] and "−103.28" in text["markdown"]
    assert "exp( -103.98) in float32 = 0.0000e+00" in text["outputs"]


# --- lecture 02: the slope of e^{-kt} on a log axis ----------------------------------------------------------

def test_exponential_decay_slope_depends_on_the_log_base():
    k, t = 1 / 400, torch.arange(0, 600, dtype=torch.float64)
    curve = torch.exp(-k * t)
    slope_ln = ((curve[-1].log() - curve[0].log()) / (t[-1] - t[0])).item()
    slope_decades = ((curve[-1].log10() - curve[0].log10()) / (t[-1] - t[0])).item()
    assert math.isclose(slope_ln, -k, rel_tol=1e-9)
    assert math.isclose(slope_decades, -k / math.log(10), rel_tol=1e-9)
    text = lecture_text("02_exp_logistic_log")
    assert "**natural** log" in text["markdown"] and "-k/\\ln 10" in text["markdown"]
    assert "slope of log10 y = -0.001086 = -k/ln 10 = -0.001086" in text["outputs"]


# --- lecture 06 (and everywhere): 'sum' scales SGD's step by N, not Adam's ----------------------------------

def distance_moved(optimizer_class, reduction, steps=5, **options):
    logits = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    trained = logits.clone().requires_grad_(True)
    optimizer = optimizer_class([trained], **options)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(trained, torch.tensor([0, 2, 1, 2]), reduction=reduction).backward()
        optimizer.step()
    return (trained.detach() - logits).norm().item()


def test_sum_reduction_scales_the_sgd_step_not_the_adam_step():
    sgd_ratio = distance_moved(torch.optim.SGD, "sum", steps=1, lr=0.1) / distance_moved(torch.optim.SGD, "mean", steps=1, lr=0.1)
    adam_ratio = distance_moved(torch.optim.Adam, "sum", lr=0.1) / distance_moved(torch.optim.Adam, "mean", lr=0.1)
    assert math.isclose(sgd_ratio, 4.0, rel_tol=1e-5)      # one SGD step is exactly N = 4 times longer
    assert math.isclose(adam_ratio, 1.0, rel_tol=0.01)
    for stem in ("06_pytorch_loss_tour", "10_gradient_descent", "12_adaptive_optimizers", "13_training_loop_anatomy"):
        assert "multiplies the effective learning rate by $N$." not in lecture_text(stem)["markdown"]
    assert "with Adam, RMSProp or AdaGrad it changes almost nothing" in lecture_text("06_pytorch_loss_tour")["markdown"]
    outputs = lecture_text("06_pytorch_loss_tour")["outputs"]
    assert "SGD : distance moved with 'sum' / with 'mean': after 1 step 4.000" in outputs
    assert "Adam: distance moved with 'sum' / with 'mean': after 1 step 1.000, after 5 steps 1.000" in outputs


# --- lecture 09: the step-size sweep is drawn with h growing to the right ------------------------------------

def test_no_lecture_inverts_an_axis():
    for path in sorted(LECTURES.glob("*.ipynb")):
        code = lecture_text(path.stem)["code"]
        assert "invert_xaxis" not in code and "invert_yaxis" not in code, f"{path.name} inverts an axis"
    assert "The step size grows to the right" in lecture_text("09_gradient_checking")["markdown"]


# --- lecture 10: the batch-size plot's title agrees with the printed results ---------------------------------

def test_batch_size_title_matches_the_printed_gaps():
    text = lecture_text("10_gradient_descent")
    assert "small batches make more progress" not in text["code"]
    assert "Per epoch: B = 20 ends lowest; B = 1 stalls at its noise floor" in text["code"]
    gaps = {}
    for line in text["outputs"].splitlines():
        if "updates in 30 epochs, final loss - optimum = " in line:
            gaps[line.split(":")[0].strip()] = float(line.rsplit("= ", 1)[1])
    assert gaps["mini-batch, B = 20"] < gaps["SGD, B = 1"] < gaps["batch GD, B = 200"], gaps


# --- lectures 10-12: the bowl 0.05 u^2 + 1.5 v^2 from (4, 1.5), and what torch.optim does on it ----------------

def bowl_path(steps, **sgd_options):
    curvatures = torch.tensor([0.1, 3.0], dtype=torch.float64)
    point = torch.tensor([4.0, 1.5], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.SGD([point], **sgd_options)
    for _ in range(steps):
        optimizer.zero_grad()
        (0.5 * (curvatures * point ** 2).sum()).backward()
        optimizer.step()
    return point.detach()


def test_gradient_descent_on_the_bowl_follows_the_closed_form():
    for lr in (0.5, 0.75):
        expected = torch.tensor([4.0 * (1 - 0.1 * lr) ** 20, 1.5 * (1 - 3.0 * lr) ** 20], dtype=torch.float64)
        torch.testing.assert_close(bowl_path(20, lr=lr), expected, rtol=1e-12, atol=1e-12)
    assert round(4.0 * 0.95 ** 20, 1) == 1.4
    text = lecture_text("10_gradient_descent")
    assert "0.05\\,u^2 + 1.5\\,v^2" in text["markdown"] and "$\\eta < 2/3$" in text["markdown"]
    assert "shrunk from 4 to about 1.4" in text["markdown"]
    assert "lr = 0.5: factors (0.950, -0.50); after 20 steps (u, v) = (1.4339," in text["outputs"]


def test_nesterov_has_a_smaller_stable_range_than_the_heavy_ball():
    mu, curvature = 0.5, 3.0
    assert 2 * (1 + mu) / (1 + 2 * mu) / curvature == 0.5        # Nesterov's limit on this bowl
    assert bowl_path(200, lr=0.55, momentum=mu).abs().max() < 1e-6
    assert bowl_path(200, lr=0.55, momentum=mu, nesterov=True).abs().max() > 1e6
    assert "that is $\\eta < 0.5$, and $\\eta = 0.55$" in lecture_text("11_momentum_nesterov")["markdown"]


def test_adam_bias_correction_and_decoupled_decay():
    # constant gradient: every bias-corrected step is lr long; uncorrected, the first would be 0.1 / sqrt(0.001) = 3.16 lr
    p = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([p], lr=1e-3)
    for step in range(1, 11):
        before = p.detach().clone()
        p.grad = torch.tensor([0.5, -0.002], dtype=torch.float64)
        optimizer.step()
        torch.testing.assert_close((p.detach() - before).abs(), torch.full((2,), 1e-3, dtype=torch.float64), rtol=1e-5, atol=0)
        if step == 1:
            state = optimizer.state[p]
            assert round((state["exp_avg"] / state["exp_avg_sq"].sqrt())[0].item(), 4) == 3.1623
    # zero gradient: AdamW shrinks by (1 - lr * wd), Adam's L2 term moves every weight by about lr
    moved = {}
    for optimizer_class in (torch.optim.Adam, torch.optim.AdamW):
        weights = torch.tensor([2.0, -0.5, 0.01], dtype=torch.float64, requires_grad=True)
        optimizer = optimizer_class([weights], lr=0.1, weight_decay=0.1)
        weights.grad = torch.zeros(3, dtype=torch.float64)
        optimizer.step()
        moved[optimizer_class.__name__] = weights.detach()
    torch.testing.assert_close(moved["AdamW"], torch.tensor([1.98, -0.495, 0.0099], dtype=torch.float64))
    torch.testing.assert_close(moved["Adam"], torch.tensor([1.9, -0.4, -0.09], dtype=torch.float64), rtol=0, atol=1e-6)
    text = lecture_text("12_adaptive_optimizers")
    assert "$0.1/\\sqrt{0.001} \\approx 3.16$" in text["markdown"] and "overshoots to $-0.09$" in text["markdown"]
    assert "without the correction:                          [3.1623," in text["outputs"]
