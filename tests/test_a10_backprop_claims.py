"""What assignment 10's text claims about torch and about its own fixtures, re-run on the pinned torch.

The notebook states a subgradient convention (torch's ReLU passes no gradient at exactly 0), a
stability claim (a plain exp(z) / exp(z).sum() is nan at logits of +-1000), a worked example
(hidden unit 3 is off for both samples), a gradient-check level and a spiral run that learns.
Each is checked here with the source notebook's own setup and solution code.
"""

from __future__ import annotations

import math

import nbformat
import pytest
import torch
import torch.nn.functional as F

from conftest import REPO

NOTEBOOK = REPO / "source" / "a10_backprop" / "backprop.ipynb"


def _markdown() -> str:
    return "\n".join(c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "markdown")


@pytest.fixture(scope="module")
def solution():
    """The namespace of the setup cell and every solution cell of the instructor notebook."""
    namespace: dict = {}
    for cell in nbformat.read(NOTEBOOK, as_version=4).cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and (meta.get("grade_id") == "setup" or meta.get("solution")):
            exec(compile(cell.source, meta["grade_id"], "exec"), namespace)  # noqa: S102 - our own notebook
    return namespace


def test_torch_relu_passes_no_gradient_at_exactly_zero():
    for relu in (torch.relu, F.relu, torch.nn.ReLU()):
        z = torch.tensor([-1.0, 0.0, 1.0], requires_grad=True)
        relu(z).sum().backward()
        assert z.grad.tolist() == [0.0, 0.0, 1.0]
    assert "the same convention as PyTorch's autograd" in _markdown()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_plain_softmax_is_nan_at_1000_and_torch_softmax_is_not(dtype):
    z = torch.tensor([[1000.0, 0.0, -1000.0]], dtype=dtype)
    assert torch.isnan(z.exp() / z.exp().sum(dim=1, keepdim=True)).any()
    assert torch.isfinite(torch.softmax(z, dim=1)).all()
    assert "overflows to `nan`" in _markdown()


def test_weight_decay_convention_has_gradient_lambda_w():
    weight = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    (0.3 / 2 * (weight ** 2).sum()).backward()
    assert torch.allclose(weight.grad, 0.3 * weight.detach())


def test_worked_example_has_a_hidden_unit_off_for_both_samples(solution):
    params = solution["init_params"](3, 4, 2, seed=2)
    X = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.8, -1.5]])
    y = torch.tensor([1, 0])
    logits, cache = solution["mlp_forward"](X, params)
    assert bool(((X @ params["W1"].T + params["b1"])[:, 3] < 0).all())
    grads = solution["mlp_backward"](y, params, cache, 0.1)
    assert grads["b1"][3].item() == 0.0
    assert torch.equal(grads["W1"][3], 0.1 * params["W1"][3])
    assert "hidden unit 3 is negative for both samples" in _markdown()


def test_the_gradient_check_demo_agrees_to_better_than_1e_7(solution):
    generator = torch.Generator().manual_seed(3)
    X = torch.randn(8, 4, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (8,), generator=generator)
    params = solution["init_params"](4, 6, 3, seed=3, dtype=torch.float64)
    _, cache = solution["mlp_forward"](X, params)
    by_hand = solution["mlp_backward"](y, params, cache, 0.01)
    numerical = solution["numerical_gradients"](X, y, params, 0.01)
    for name in by_hand:
        a, b = by_hand[name], numerical[name]
        assert float(((a - b).abs() / (a.abs() + b.abs()).clamp_min(1e-8)).max()) < 1e-7
    assert "better than $10^{-7}$" in _markdown()


def test_the_spiral_run_learns_and_spikes_before_the_rate_drops(solution):
    X, y = solution["make_spirals"](30, 3, seed=0)
    schedule = [3.0] * 70 + [1.0] * 30
    trained, losses = solution["train_sgd"](X, y, solution["init_params"](2, 64, 3, seed=0), 1e-3, schedule)
    accuracy = (solution["mlp_forward"](X, trained)[0].argmax(dim=1) == y).float().mean().item()
    assert accuracy == 1.0 and losses[-1] < 0.3 < losses[0]
    # Spikes: the loss rises by more than half at some step under the large rate, never after the drop.
    assert any(b > 1.5 * a for a, b in zip(losses[:70], losses[1:71]))
    assert all(b <= a for a, b in zip(losses[71:], losses[72:]))
    assert all(math.isfinite(v) for v in losses)
    assert "schedule = [3.0] * 70 + [1.0] * 30" in "\n".join(
        c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells)


def test_torch_sgd_weight_decay_adds_lambda_theta_to_every_parameter_biases_included():
    layer = torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in layer.parameters()]
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.5, weight_decay=0.2)
    for p in layer.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for old, new in zip(before, layer.parameters()):
        assert torch.allclose(new.detach(), old - 0.5 * 0.2 * old)
    assert "biases included unless you put them in a parameter group" in _markdown()
