"""The A06/A07 helpers: seeded models, the torch.optim.SGD reference run, list comparisons."""

import re

import nbformat
import pytest
import torch

import course_checks as cc
from conftest import REPO


def _batches(steps, n=6, d=16, classes=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(n, d, generator=generator)
    targets = torch.randint(0, classes, (n,), generator=generator)
    return [(inputs, targets)] * steps


def test_make_mlp_builds_linear_sigmoid_linear_with_the_requested_sizes():
    model = cc.make_mlp((16, 8, 2), seed=0)
    assert [type(layer).__name__ for layer in model] == ["Linear", "Sigmoid", "Linear"]
    assert model[0].weight.shape == (8, 16) and model[2].bias.shape == (2,)
    deeper = cc.make_mlp((5, 7, 7, 3), seed=1)
    assert [type(layer).__name__ for layer in deeper] == ["Linear", "Sigmoid", "Linear", "Sigmoid", "Linear"]


def test_make_mlp_is_deterministic_non_uniform_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    first, second = cc.make_mlp((4, 3, 2), seed=7), cc.make_mlp((4, 3, 2), seed=7)
    assert torch.equal(torch.rand(3), expected_draw), "make_mlp moved the global RNG"
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a, b) and a.requires_grad and a.is_leaf
        assert a.unique().numel() == a.numel(), "weights must all differ"
    other = cc.make_mlp((4, 3, 2), seed=8)
    assert not torch.equal(first[0].weight, other[0].weight)


def test_make_mlp_rejects_a_single_size():
    with pytest.raises(ValueError):
        cc.make_mlp((4,), seed=0)


def test_torch_sgd_run_matches_a_hand_written_optimizer_loop():
    batches, lrs = _batches(4), [0.5, 0.5, 0.05, 0.05]
    result = cc.torch_sgd_run((16, 8, 2), 0, batches, lrs, momentum=0.9, nesterov=True, weight_decay=0.01)
    model = cc.make_mlp((16, 8, 2), seed=0)
    buffers = [None] * 4
    losses = []
    for (inputs, targets), lr in zip(batches, lrs):
        loss = torch.nn.functional.cross_entropy(model(inputs), targets)
        grads = torch.autograd.grad(loss, list(model.parameters()))
        losses.append(loss.item())
        with torch.no_grad():
            for k, (p, g) in enumerate(zip(model.parameters(), grads)):
                g = g + 0.01 * p
                buffers[k] = g.clone() if buffers[k] is None else 0.9 * buffers[k] + g
                p -= lr * (g + 0.9 * buffers[k])
    assert all(isinstance(v, float) for v in result["losses"])
    assert result["losses"] == pytest.approx(losses, abs=1e-6)
    for got, want in zip(result["params"], model.parameters()):
        torch.testing.assert_close(got, want.detach(), rtol=0, atol=1e-6)
    assert not any(p.requires_grad for p in result["params"])


def test_torch_sgd_run_needs_one_learning_rate_per_batch():
    with pytest.raises(ValueError, match="learning rates"):
        cc.torch_sgd_run((4, 2), 0, _batches(3, d=4), [0.1, 0.1])


def test_check_each_close_names_the_entry_and_counts():
    cc.check_each_close([torch.ones(2), torch.zeros(3)], [torch.ones(2), torch.zeros(3)], what="params")
    with pytest.raises(AssertionError, match=r"Likely mistake: zero.*params\[1\]"):
        cc.check_each_close([torch.ones(2), torch.ones(3)], [torch.ones(2), torch.zeros(3)], what="params",
                            mistakes={"zero": [torch.ones(2), torch.ones(3)]})
    with pytest.raises(AssertionError, match=r"params\[1\].*Hint: zero") as failure:
        cc.check_each_close([torch.ones(2), torch.ones(3)], [torch.ones(2), torch.zeros(3)], what="params", hint="zero")
    assert cc.LIKELY not in str(failure.value), "a hint alone must not name a mistake"
    with pytest.raises(AssertionError, match="1 entries, expected 2"):
        cc.check_each_close([torch.ones(2)], [torch.ones(2), torch.zeros(3)], what="params")
    with pytest.raises(AssertionError, match="expected a list"):
        cc.check_each_close(torch.ones(2), [torch.ones(2)], what="params")


def _hand_run(batches, lrs, update, sizes=(16, 8, 2), seed=0, reduction="mean"):
    """A run with a hand-written update(state, gradient, lr) -> (state, step), as a buggy submission writes it."""
    model = cc.make_mlp(sizes, seed=seed)
    params = list(model.parameters())
    states, losses = [None] * len(params), []
    for (inputs, targets), lr in zip(batches, lrs):
        loss = torch.nn.functional.cross_entropy(model(inputs), targets, reduction=reduction)
        grads = torch.autograd.grad(loss, params)
        losses.append(loss.item())
        with torch.no_grad():
            for k, (p, g) in enumerate(zip(params, grads)):
                states[k], step = update(states[k], g, lr)
                p += step
    return {"losses": losses, "params": [p.detach().clone() for p in params]}


def test_a07_mistake_signatures_are_torch_sgd_runs():
    """A07's tests name mistakes by runs of torch_sgd_run with other settings; each identity holds."""
    batches, lrs = _batches(5), [0.3, 0.3, 0.3, 0.1, 0.1]

    def never_reset(total, g, lr):  # .grad never reset: each step uses the sum of all gradients so far
        total = g.clone() if total is None else total + g
        return total, -lr * total

    def dampened_first(buf, g, lr, dampening=0.5):  # buf starts at zero, so the first step is dampened too
        buf = (1 - dampening) * g if buf is None else 0.9 * buf + (1 - dampening) * g
        return buf, -lr * buf

    def stale_lookahead(buf, g, lr):  # Nesterov along the previous step's buffer
        new = g.clone() if buf is None else 0.9 * buf + g
        return new, -lr * (g if buf is None else g + 0.9 * buf)

    def plain(_, g, lr):
        return None, -lr * g

    identities = [
        (_hand_run(batches, lrs, never_reset), cc.torch_sgd_run((16, 8, 2), 0, batches, lrs, momentum=1.0)),
        (_hand_run(batches, lrs, dampened_first),
         cc.torch_sgd_run((16, 8, 2), 0, batches, [lr * 0.5 for lr in lrs], momentum=0.9)),
        (_hand_run(batches, lrs, stale_lookahead), cc.torch_sgd_run((16, 8, 2), 0, batches, lrs, momentum=0.9)),
        (_hand_run(batches, lrs, plain, reduction="sum"), cc.torch_sgd_run((16, 8, 2), 0, batches, [lr * 6 for lr in lrs])),
    ]
    for hand, reference in identities:
        cc.check_each_close(hand["params"], reference["params"], what="params", roundings=64 * len(lrs))
    summed_losses = identities[-1][1]["losses"]
    cc.check_close(torch.tensor(identities[-1][0]["losses"], dtype=torch.float32),
                   torch.tensor([6 * v for v in summed_losses], dtype=torch.float32), what="losses", roundings=64 * len(lrs))


def test_a07_trajectory_tolerance_separates_correct_updates_from_mistakes():
    """roundings=64*steps passes float32 updates written another way and fails every named mistake by far."""
    batches, lrs = _batches(10), [0.5] * 5 + [0.05] * 5
    reference = cc.torch_sgd_run((16, 8, 2), 0, batches, lrs, momentum=0.9, dampening=0.1, weight_decay=0.01)

    model = cc.make_mlp((16, 8, 2), seed=0)
    params, buffers = list(model.parameters()), [None] * 4
    for (inputs, targets), lr in zip(batches, lrs):
        grads = torch.autograd.grad(torch.nn.functional.cross_entropy(model(inputs), targets), params)
        with torch.no_grad():
            for k, (p, g) in enumerate(zip(params, grads)):
                g = g.double() + 0.01 * p.double()
                buffers[k] = g if buffers[k] is None else 0.9 * buffers[k] + 0.9 * g
                p.copy_(p.double() - lr * buffers[k])
    cc.check_each_close([p.detach() for p in params], reference["params"], what="params", roundings=64 * len(lrs))
    tol = cc.tolerance(torch.float32, roundings=64 * len(lrs)).rtol
    for wrong in (dict(dampening=0.0, weight_decay=0.01), dict(dampening=0.1, weight_decay=0.0)):
        mistake = cc.torch_sgd_run((16, 8, 2), 0, batches, lrs, momentum=0.9, **wrong)
        worst = max(float(((a - b).abs() / (1 + b.abs())).max()) for a, b in zip(mistake["params"], reference["params"]))
        assert worst > 10 * tol, f"{wrong}: a dropped hyperparameter moves the parameters only {worst:.2g}"


def test_new_helpers_are_exported_to_test_cells():
    for name in ("make_mlp", "torch_sgd_run", "check_each_close"):
        assert name in cc.__all__ and name in cc.TEST_CELL_NAMES


# -- A06's "predict the output" key, re-checked on the pinned torch -----------

def _fresh_w():
    return torch.tensor([1.0, 2.0], requires_grad=True)


def _quiz_outcomes():
    outcomes = {}
    w = _fresh_w()
    (3 * w).sum().backward()
    (3 * w).sum().backward()
    outcomes["accumulate"] = w.grad.tolist()
    w = _fresh_w()
    loss = (w * w).sum()
    loss.backward()
    try:
        loss.backward()
        outcomes["second_backward"] = w.grad.tolist()
    except RuntimeError:
        outcomes["second_backward"] = "RuntimeError"
    w = _fresh_w()
    with torch.no_grad():
        z = w * 2
    outcomes["no_grad"] = (z.requires_grad, z.is_leaf)
    w = _fresh_w()
    d = w.detach()
    d[0] = 10.0
    outcomes["detach"] = (w.tolist(), w.requires_grad)
    w = _fresh_w()
    loss = (w * w).sum()
    loss.backward(retain_graph=True)
    try:
        loss.backward()
        outcomes["retain_graph"] = w.grad.tolist()
    except RuntimeError:
        outcomes["retain_graph"] = "RuntimeError"
    w = _fresh_w()
    (w * w).sum().backward()
    try:
        with torch.no_grad():
            w -= 0.5 * w.grad
        outcomes["no_grad_update"] = (w.tolist(), w.requires_grad, w.is_leaf)
    except RuntimeError:
        outcomes["no_grad_update"] = "RuntimeError"
    return outcomes


def test_a06_quiz_key_matches_pinned_torch():
    meaning = {
        "accumulate": {"a": [3.0, 3.0], "b": [6.0, 6.0], "c": [3.0, 6.0], "d": None},
        "second_backward": {"a": [4.0, 8.0], "b": [2.0, 4.0], "c": "RuntimeError", "d": [0.0, 0.0]},
        "no_grad": {"a": (True, False), "b": (True, True), "c": (False, False), "d": (False, True)},
        "detach": {"a": ([10.0, 2.0], True), "b": ([1.0, 2.0], True), "c": "RuntimeError", "d": ([10.0, 2.0], False)},
        "retain_graph": {"a": [2.0, 4.0], "b": [4.0, 8.0], "c": "RuntimeError", "d": [0.0, 0.0]},
        "no_grad_update": {"a": ([0.0, 0.0], True, True), "b": ([0.0, 0.0], False, False), "c": "RuntimeError",
                           "d": ([1.0, 2.0], True, True)},
    }
    # The key as the assignment holds it (the practice self-check cell and the graded hidden tests),
    # so a changed key cannot go unchecked here.
    notebook = nbformat.read(REPO / "source" / "a06_gradients" / "gradients.ipynb", as_version=4)
    digests = dict(re.findall(r'check_choice\(answers\.get\("(\w+)"\), "([0-9a-f]{16})"', "\n".join(c.source for c in notebook.cells)))
    assert set(digests) == set(meaning), f"the notebook checks {sorted(digests)}"
    for question, outcome in _quiz_outcomes().items():
        right = [letter for letter, value in meaning[question].items() if value == outcome]
        assert len(right) == 1, f"{question}: outcome {outcome!r} matches options {right}"
        cc.check_choice(right[0], digests[question], what=f"question {question}")


# -- A06: the hidden checks admit every standard float32 formulation -----------
# Tolerances below float32's eps once failed a hand max-shifted softmax that differs
# from autograd by one ulp.  These run the notebook's own test cells, in-process,
# against the standard ways of writing each answer.

def _a06_test_cells():
    notebook = nbformat.read(REPO / "source" / "a06_gradients" / "gradients.ipynb", as_version=4)
    return {cell.metadata["nbgrader"]["grade_id"]: cell.source for cell in notebook.cells
            if cell.metadata.get("nbgrader", {}).get("grade") and not cell.metadata["nbgrader"].get("solution")}


def _a06_names(source):
    names = {name: getattr(cc, name) for name in cc.__all__}
    names.update(torch=torch, F=torch.nn.functional, np=cc.np, math=cc.math)
    names["linear_ce_loss"] = lambda X, y, W, b: torch.nn.functional.cross_entropy(X @ W.T + b, y)
    exec(source, names)
    return names


A06_LOGIT_GRADS = {
    "torch.softmax": """
def softmax_ce_logit_grad(logits, y):
    p = torch.softmax(logits, dim=1)
    return (p - F.one_hot(y, logits.shape[1]).to(p.dtype)) / logits.shape[0]
""",
    "exp(z - logsumexp(z))": """
def softmax_ce_logit_grad(logits, y):
    p = (logits - torch.logsumexp(logits, dim=1, keepdim=True)).exp()
    return (p - F.one_hot(y, logits.shape[1]).to(p.dtype)) / len(y)
""",
    "hand max-shift": """
def softmax_ce_logit_grad(logits, y):
    e = (logits - logits.max(dim=1, keepdim=True).values).exp()
    grad = e / e.sum(dim=1, keepdim=True)
    grad[torch.arange(len(y)), y] -= 1
    return grad / len(y)
""",
    "hand max-shift row by row, float64 inside": """
def softmax_ce_logit_grad(logits, y):
    rows = []
    for z, label in zip(logits.double(), y.tolist()):
        e = (z - z.max()).exp()
        p = e / e.sum()
        p[label] -= 1
        rows.append(p / len(y))
    return torch.stack(rows).to(logits.dtype)
""",
}

A06_LINEAR_GRADS = """
def linear_ce_grads(X, W, b, y):
    Z = X @ W.T + b
    dZ = softmax_ce_logit_grad(Z, y)
    shifted = Z - Z.max(dim=1, keepdim=True).values
    loss = (shifted.exp().sum(dim=1).log() - shifted[torch.arange(len(y)), y]).mean()
    return loss, torch.einsum("nc,nd->cd", dZ, X), dZ.sum(dim=0)
"""


@pytest.mark.parametrize("form", sorted(A06_LOGIT_GRADS))
def test_a06_gradient_checks_accept_every_standard_softmax(form):
    cells = _a06_test_cells()
    names = _a06_names(A06_LOGIT_GRADS[form] + A06_LINEAR_GRADS)
    for grade_id in ("test_logit_grad_example", "test_logit_grad_edge_cases",
                     "test_linear_ce_grads_example", "test_linear_ce_grads_shapes"):
        exec(cells[grade_id], dict(names))


A06_NUMERICAL_GRADS = {
    "assign and restore": """
def numerical_grad_W(X, y, W, b, h=1e-5):
    X, b, W = X.double(), b.double(), W.detach().clone().double()
    grad = torch.zeros_like(W)
    for index in np.ndindex(*W.shape):
        original = W[index].item()
        W[index] = original + h
        plus = linear_ce_loss(X, y, W, b).item()
        W[index] = original - h
        minus = linear_ce_loss(X, y, W, b).item()
        W[index] = original
        grad[index] = (plus - minus) / (2 * h)
    return grad
""",
    "W + e with a summed loss divided by N": """
def numerical_grad_W(X, y, W, b, h=1e-5):
    X, b, W = X.double(), b.double(), W.double()
    loss = lambda V: F.cross_entropy(X @ V.T + b, y, reduction="sum") / len(y)
    grad = torch.zeros_like(W)
    for index in np.ndindex(*W.shape):
        e = torch.zeros_like(W)
        e[index] = h
        grad[index] = (loss(W + e) - loss(W - e)) / (2 * h)
    return grad
""",
}


@pytest.mark.parametrize("form", sorted(A06_NUMERICAL_GRADS))
def test_a06_numerical_gradient_checks_accept_correct_probes(form):
    cells = _a06_test_cells()
    names = _a06_names(A06_NUMERICAL_GRADS[form])
    for grade_id in ("test_numerical_grad_example", "test_numerical_grad_float64", "test_numerical_grad_float32_inputs"):
        exec(cells[grade_id], dict(names))
