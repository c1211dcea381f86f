"""The A08/A09 helpers: the named 2-D objectives, the spiral data set and the seeded classifier."""

import math

import pytest
import torch
import torch.nn.functional as F

import course_checks as cc


def test_objectives_have_their_minimum_where_documented_and_are_differentiable():
    assert float(cc.rosenbrock(torch.tensor([1.0, 1.0]))) == 0.0
    assert float(cc.rosenbrock(torch.tensor([-1.5, 2.0]))) == pytest.approx(2.5**2 + 100 * 0.25**2)
    assert float(cc.quadratic_2d(torch.tensor([0.0, 0.0]))) == 0.0
    point = torch.tensor([-5.0, -2.0], dtype=torch.float64, requires_grad=True)
    cc.quadratic_2d(point).backward()
    assert point.grad.tolist() == pytest.approx([-1.0, -8.0])
    assert cc.OBJECTIVES_2D == {"rosenbrock": cc.rosenbrock, "quadratic": cc.quadratic_2d}


# -- a08: the premises the optimizer test cells build their mistake signatures on --


def test_a08_objectives_take_a_batch_of_points_as_columns():
    # adam_mistakes in the a08 trajectory tests follows several wrong Adams at once, one column each.
    points = torch.tensor([[-1.5, 0.3, 1.0], [2.0, -0.7, 1.0]], dtype=torch.float64)
    for objective in cc.OBJECTIVES_2D.values():
        batched = objective(points)
        assert batched.shape == (3,)
        for column in range(3):
            assert float(batched[column]) == float(objective(points[:, column]))


def _torch_steps(optimizer_class, param, grads, **hyper):
    reference = param.clone().requires_grad_(True)
    optimizer = optimizer_class([reference], **hyper)
    for grad in grads:
        reference.grad = grad.clone()
        optimizer.step()
    return reference.detach()


def test_a08_torch_adam_is_the_formula_the_notebook_states():
    generator = torch.Generator().manual_seed(0)
    param = torch.randn(4, dtype=torch.float64, generator=generator)
    grads = [torch.randn(4, dtype=torch.float64, generator=generator) for _ in range(5)]
    lr, (beta1, beta2), eps = 0.1, (0.8, 0.99), 1e-3
    point, m, v = param, torch.zeros(4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
    for t, grad in enumerate(grads, start=1):
        m, v = beta1 * m + (1 - beta1) * grad, beta2 * v + (1 - beta2) * grad * grad
        point = point - lr * (m / (1 - beta1**t)) / ((v / (1 - beta2**t)).sqrt() + eps)
    got = _torch_steps(torch.optim.Adam, param, grads, lr=lr, betas=(beta1, beta2), eps=eps)
    assert torch.allclose(got, point, rtol=1e-13, atol=1e-15)


def test_a08_adamw_signatures_come_from_torch_optim():
    # "shrunk by 1 - weight_decay" is AdamW with weight_decay / lr; "shrunk after the step" is Adam times (1 - lr wd).
    generator = torch.Generator().manual_seed(1)
    param = torch.randn(3, dtype=torch.float64, generator=generator)
    grad = torch.randn(3, dtype=torch.float64, generator=generator)
    lr, weight_decay = 0.1, 0.5
    adam = _torch_steps(torch.optim.Adam, param, [grad], lr=lr)
    no_lr = _torch_steps(torch.optim.AdamW, param, [grad], lr=lr, weight_decay=weight_decay / lr)
    assert torch.allclose(no_lr, param * (1 - weight_decay) + (adam - param), rtol=1e-13, atol=1e-15)
    after = adam * (1 - lr * weight_decay)
    adamw = _torch_steps(torch.optim.AdamW, param, [grad], lr=lr, weight_decay=weight_decay)
    assert not torch.allclose(after, adamw, rtol=1e-6, atol=1e-9), "decaying after the step must be told apart"


def test_make_spirals_shapes_dtypes_balance_and_determinism():
    X, y = cc.make_spirals(50, num_classes=4, seed=3)
    assert X.shape == (200, 2) and X.dtype == torch.float32
    assert y.shape == (200,) and y.dtype == torch.long
    assert torch.bincount(y).tolist() == [50, 50, 50, 50]
    assert len(set(y[:20].tolist())) > 1, "rows must come shuffled, not sorted by class"
    X2, y2 = cc.make_spirals(50, num_classes=4, seed=3)
    assert torch.equal(X, X2) and torch.equal(y, y2)
    assert not torch.equal(X, cc.make_spirals(50, num_classes=4, seed=4)[0])


def test_make_spirals_leaves_the_global_rng_alone_and_rejects_bad_sizes():
    torch.manual_seed(5)
    expected = torch.rand(2)
    torch.manual_seed(5)
    cc.make_spirals(10)
    assert torch.equal(torch.rand(2), expected)
    with pytest.raises(ValueError):
        cc.make_spirals(0)
    with pytest.raises(ValueError):
        cc.make_spirals(10, num_classes=1)


def test_make_classifier_layout_determinism_and_global_rng():
    torch.manual_seed(11)
    expected = torch.rand(2)
    torch.manual_seed(11)
    model = cc.make_classifier(2, 16, 3, dropout=0.5, seed=2)
    assert torch.equal(torch.rand(2), expected), "make_classifier moved the global RNG"
    assert [type(layer).__name__ for layer in model] == ["Linear", "ReLU", "Dropout", "Linear"]
    assert model[0].weight.shape == (16, 2) and model[3].weight.shape == (3, 16) and model[2].p == 0.5
    assert model[0].weight.abs().max() <= 1 / math.sqrt(2) and model[3].weight.abs().max() <= 1 / 4
    again = cc.make_classifier(2, 16, 3, dropout=0.5, seed=2)
    for a, b in zip(model.parameters(), again.parameters()):
        assert torch.equal(a, b) and a.requires_grad and a.is_leaf
    assert not torch.equal(model[0].weight, cc.make_classifier(2, 16, 3, seed=3)[0].weight)


def test_make_classifier_starts_near_chance_on_spirals():
    X, y = cc.make_spirals(100, seed=0)
    for seed in range(3):
        with torch.no_grad():
            loss = F.cross_entropy(cc.make_classifier(2, 64, 3, seed=seed)(X), y).item()
        assert abs(loss - math.log(3)) < 0.1


# -- a09: the premises the training-loop test cells build their mistake signatures on --


def _loader_order(dataset, seed=None, batch_size=5):
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    return [batch for batch in torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator)]


def test_a09_loader_orders_that_tell_shuffling_mistakes_apart():
    X, y = cc.make_spirals(7, seed=3)
    dataset = torch.utils.data.TensorDataset(X, y)
    seeded = torch.cat([labels for _, labels in _loader_order(dataset, 42)])
    # A DataLoader over row indices shuffles exactly like one over the TensorDataset (alt_index_loader relies on it).
    indices = torch.cat(_loader_order(range(len(X)), 42))
    assert torch.equal(y[indices], seeded)
    # The global-seed and fixed-seed mistakes give orders of their own, so their signatures cannot name each other.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(42)
        global_seed = torch.cat([labels for _, labels in _loader_order(dataset)])
    fixed = torch.cat([labels for _, labels in _loader_order(dataset, 0)])
    orders = [seeded, global_seed, fixed, y]
    assert all(not torch.equal(a, b) for i, a in enumerate(orders) for b in orders[i + 1:])


def test_a09_train_mode_dropout_output_is_a_masked_forward_pass():
    """test_evaluate_eval_mode names a missing model.eval() when every row is one of the 16 masked passes."""
    X, _ = cc.make_spirals(10, seed=8)
    model = cc.make_classifier(2, 4, 3, dropout=0.5, seed=4).double()
    with torch.no_grad():
        hidden = torch.relu(model[0](X.double()))
        model.train()
        torch.manual_seed(0)
        noisy = model(X.double())
        model.eval()
        clean = model(X.double())
    masks = torch.tensor([[(k >> unit) & 1 for unit in range(4)] for k in range(16)], dtype=torch.float64)
    candidates = model[3](hidden[None] * masks[:, None, :] * 2)
    nearest = (candidates - noisy[None]).abs().amax(dim=2).argmin(dim=0)
    assert torch.allclose(candidates[nearest, torch.arange(30)], noisy)
    assert not torch.allclose(noisy, clean)


def test_a09_softmax_before_cross_entropy_has_the_floor_the_notebook_derives():
    logits = torch.tensor([[50.0, -50.0, -50.0]])
    assert F.cross_entropy(logits.softmax(dim=1), torch.tensor([0])).item() == pytest.approx(math.log(1 + 2 / math.e))


# -- a09: a crash is named only by the error message its mistake raises ---------
# The samples for these mistakes crash in every cell that trains, so the suite's
# sample check can only look for the raw error there (named = false); this runs
# the two cells that name them, in-process, against each sample's function.


def _a09_cell_and_samples(grade_id):
    import tomllib

    import nbformat
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from conftest import REPO

    notebook = nbformat.read(REPO / "source" / "a09_training_loop" / "training.ipynb", as_version=4)
    cell = next(c.source for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)
    samples = {s["student"]: s for s in tomllib.loads((REPO / "samples" / "a09_training_loop.toml").read_text())["sample"]}

    def names_with(student, function):
        names = {name: getattr(cc, name) for name in cc.__all__}
        names.update(torch=torch, F=F, np=cc.np, math=math, nn=nn, DataLoader=DataLoader, TensorDataset=TensorDataset)
        exec(samples[student]["cells"][function], names)
        return names

    return cell, names_with


@pytest.mark.parametrize("student,mistake", [
    ("parameters_not_called", "model.parameters passed to the optimizer without calling it"),
    ("parameters_generator_reused", "a model.parameters() generator used up before it reached the optimizer"),
    ("item_on_batch", ".item() on a tensor with one value per sample"),
])
def test_a09_train_one_epoch_crashes_are_named(student, mistake):
    cell, names_with = _a09_cell_and_samples("test_train_one_epoch")
    with pytest.raises(AssertionError) as failure:
        exec(cell, names_with(student, "train_one_epoch"))
    assert str(failure.value).startswith(f"{cc.LIKELY}{mistake}"), str(failure.value)


def test_a09_train_one_epoch_names_float64_inputs():
    cell, names_with = _a09_cell_and_samples("test_train_one_epoch")
    with pytest.raises(AssertionError) as failure:
        exec(cell, names_with("float64_inputs", "train_one_epoch"))
    assert str(failure.value).startswith(f"{cc.LIKELY}float64 inputs fed to the float32 model"), str(failure.value)


def test_a09_evaluate_names_item_on_a_batch_and_float64_inputs():
    cell, names_with = _a09_cell_and_samples("test_evaluate")
    with pytest.raises(AssertionError) as failure:
        exec(cell, names_with("evaluate_float64_inputs", "evaluate"))
    assert str(failure.value).startswith(f"{cc.LIKELY}float64 inputs fed to the float32 model"), str(failure.value)

    def item_on_batch(model, X, y, batch_size, device):
        """evaluate with the per-sample comparisons turned into a number without summing them first."""
        model.eval()
        with torch.no_grad():
            logits = model(X.float())
        correct = (logits.argmax(dim=1) == y).item()
        return {"loss": F.cross_entropy(logits, y).item(), "accuracy": correct / len(X), "logits": logits}

    names = names_with("evaluate_float64_inputs", "evaluate")
    names["evaluate"] = item_on_batch
    with pytest.raises(AssertionError) as failure:
        exec(cell, names)
    assert str(failure.value).startswith(f"{cc.LIKELY}.item() on a tensor with one value per sample"), str(failure.value)
