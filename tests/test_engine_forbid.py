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


def test_forbidden_event_names_the_function_behind_a_dispatcher_event():
    from course_checks import LIBRARY_SOFTMAX, forbidden_event

    assert forbidden_event(["aten::exp", "aten::_softmax"], LIBRARY_SOFTMAX) == ("aten::_softmax", "torch.softmax")
    assert forbidden_event(["aten::exp", "aten::sum", "aten::div"], LIBRARY_SOFTMAX) is None
    assert forbidden_event(["Optimizer.step#MySGD.step"], ["torch.optim.SGD"]) == ("Optimizer.step#MySGD.step", "torch.optim.SGD")
    assert forbidden_event(["Optimizer.step#SGD.step"], ["torch.nn.functional.one_hot"]) is None


def _forbidden_names_in_the_course() -> set[str]:
    """Every "torch...." name a source notebook's test cells forbid, directly or through a tuple."""
    import json
    import re

    from conftest import REPO

    names = set(course_checks.LIBRARY_SOFTMAX + course_checks.LIBRARY_CROSS_ENTROPY)
    for path in (REPO / "source").glob("*/*.ipynb"):
        for cell in json.loads(path.read_text())["cells"]:
            source = "".join(cell["source"])
            for match in re.finditer(r"(?:forbid\(|(?:forbidden|library)\s*=\s*\()([^)]*)\)", source):
                names.update(re.findall(r"[\"'](torch\.[\w.]+)[\"']", match.group(1)))
    return names


def test_every_function_the_course_forbids_is_watched_in_the_dispatcher():
    names = _forbidden_names_in_the_course()
    assert len(names) > 10, names
    unwatched = sorted(name for name in names if course_checks.forbidden_event(
        [*course_checks.DISPATCHER_EVENTS.get(name, ()), f"Optimizer.step#{name.rpartition('.')[2]}.step"], [name]) is None)
    assert not unwatched, f"forbidden by name only (add their dispatcher events to course_checks.DISPATCHER_EVENTS): {unwatched}"


@pytest.mark.parametrize("qualname", sorted(course_checks.DISPATCHER_EVENTS))
def test_each_watched_function_really_leaves_its_events(qualname):
    # The table is checked against the pinned torch: calling the function shows one of its events.
    import torch.nn.functional as F

    from autograder.worker import DispatcherWatch

    x = torch.randn(3, 4)
    square_sum = lambda y: (y * y).sum()  # noqa: E731
    needs_grad = lambda: x.clone().requires_grad_()  # noqa: E731
    calls = {
        "torch.nn.functional.one_hot": lambda: F.one_hot(torch.tensor([0, 2]), 3),
        "torch.nn.functional.nll_loss": lambda: F.nll_loss(x.log_softmax(1), torch.tensor([0, 1, 2])),
        "torch.nn.functional.cross_entropy": lambda: F.cross_entropy(x, torch.tensor([0, 1, 2])),
        "torch.nn.functional.binary_cross_entropy": lambda: F.binary_cross_entropy(x.sigmoid(), torch.rand(3, 4)),
        "torch.nn.functional.binary_cross_entropy_with_logits": lambda: F.binary_cross_entropy_with_logits(x, torch.rand(3, 4)),
        "torch.binary_cross_entropy_with_logits": lambda: torch.binary_cross_entropy_with_logits(x, torch.rand(3, 4), None, None, 1),
        "torch.nn.functional.softplus": lambda: F.softplus(x),
        "torch.sigmoid": lambda: torch.sigmoid(x),
        "torch.Tensor.sigmoid": lambda: x.sigmoid(),
        "torch.nn.functional.sigmoid": lambda: F.sigmoid(x),
        "torch.special.expit": lambda: torch.special.expit(x),
        "torch.Tensor.backward": lambda: square_sum(needs_grad()).backward(),
        "torch.autograd.backward": lambda: torch.autograd.backward(square_sum(needs_grad())),
        "torch.autograd.grad": lambda: torch.autograd.grad(square_sum(y := needs_grad()), y),
        "torch.func.grad": lambda: torch.func.grad(square_sum)(x),
        "torch.func.grad_and_value": lambda: torch.func.grad_and_value(square_sum)(x),
        "torch.func.jacrev": lambda: torch.func.jacrev(lambda y: y * y)(x),
        "torch.func.vjp": lambda: torch.func.vjp(lambda y: y * y, x)[1](torch.ones(3, 4)),
    }
    owner, attr = course_checks._resolve(qualname)
    call = calls.get(qualname) or (lambda: getattr(x, attr)(1) if owner is torch.Tensor else getattr(owner, attr)(x, 1))
    with DispatcherWatch(torch) as watch:
        call()
    assert not watch.broken
    assert course_checks.forbidden_event(watch.events, [qualname]) is not None, (qualname, watch.events)
