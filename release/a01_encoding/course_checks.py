"""Check helpers shared by every assignment's visible and hidden tests.

Each check raises ``AssertionError`` with a one-line message that says what
was checked, what went wrong, and -- through ``hint`` -- the mistake that
most likely caused it.  The same module is imported by the notebooks a
student runs and by the grader, so a message a student sees while working
is the message the grader writes into their feedback.

Test cells may use only: names defined by the student's solution cells,
``torch``, ``np``, ``math``, ``F`` and the names exported here (see
``TEST_CELL_NAMES``).  That contract lets the grader run tests outside the
student's process.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import math
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

__all__ = [
    "rel_error",
    "check",
    "check_close",
    "check_shape",
    "check_dtype",
    "check_finite",
    "check_not_mutated",
    "check_raises",
    "answer_digest",
    "forbid",
    "ForbiddenCallError",
]



class ForbiddenCallError(AssertionError):
    """A from-scratch exercise called the library function it should replace."""


def _fail(message: str, hint: str | None) -> None:
    if hint:
        message = f"{message}. Likely mistake: {hint}"
    raise AssertionError(message)


def _as_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    return torch.as_tensor(value)


def rel_error(x: Any, y: Any) -> float:
    """Largest elementwise |x - y| / max(1e-8, |x| + |y|); 0.0 when both are 0."""
    x = _as_tensor(x).detach().double()
    y = _as_tensor(y).detach().double()
    if x.numel() == 0:
        return 0.0
    denom = (x.abs() + y.abs()).clamp_min(1e-8)
    return float(((x - y).abs() / denom).max())


def check(condition: bool, message: str, *, hint: str | None = None) -> None:
    """Plain assertion with a diagnosis; for checks no other helper covers."""
    if not condition:
        _fail(message, hint)


def check_shape(value: Any, shape: Sequence[int], *, what: str, hint: str | None = None) -> None:
    actual = tuple(getattr(value, "shape", ()))
    if actual != tuple(shape):
        _fail(f"{what} has shape {actual}, expected {tuple(shape)}", hint)


def check_dtype(value: Any, dtype: Any, *, what: str, hint: str | None = None) -> None:
    actual = getattr(value, "dtype", type(value).__name__)
    if actual != dtype:
        _fail(f"{what} has dtype {actual}, expected {dtype}", hint)


def check_finite(value: Any, *, what: str, hint: str | None = None) -> None:
    tensor = _as_tensor(value)
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        _fail(f"{what} has {bad} non-finite value(s) (nan or inf)", hint)


def check_close(
    actual: Any,
    expected: Any,
    *,
    what: str,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    hint: str | None = None,
) -> None:
    """Compare values like ``torch.allclose`` and say where and by how much they differ."""
    if not isinstance(actual, (torch.Tensor, np.ndarray, int, float, list, tuple)):
        _fail(f"{what} is a {type(actual).__name__}, expected a tensor or number", hint)
    got = _as_tensor(actual).detach()
    want = _as_tensor(expected).detach()
    if got.shape != want.shape:
        _fail(f"{what} has shape {tuple(got.shape)}, expected {tuple(want.shape)}", hint)
    if got.numel() == 0:
        return
    got64, want64 = got.double(), want.double()
    both_nan = torch.isnan(got64) & torch.isnan(want64)
    same_inf = torch.isinf(got64) & (got64 == want64)
    within = (got64 - want64).abs() <= atol + rtol * want64.abs()
    ok = both_nan | same_inf | within
    if bool(ok.all()):
        return
    diff = torch.where(ok, torch.zeros_like(got64), (got64 - want64).abs().nan_to_num(math.inf))
    flat = int(diff.argmax())
    where = tuple(int(i) for i in np.unravel_index(flat, tuple(got.shape))) if got.dim() else ()
    bad = int((~ok).sum())
    _fail(
        f"{what}: {bad} of {got.numel()} value(s) off; worst at index {where}: "
        f"got {got64.reshape(-1)[flat].item():.6g}, expected {want64.reshape(-1)[flat].item():.6g} "
        f"(rtol={rtol:g}, atol={atol:g})",
        hint,
    )


def _clone_args(values: Any) -> Any:
    if isinstance(values, torch.Tensor):
        return values.detach().clone()
    if isinstance(values, np.ndarray):
        return values.copy()
    if isinstance(values, (list, tuple)):
        return type(values)(_clone_args(v) for v in values)
    if isinstance(values, dict):
        return {k: _clone_args(v) for k, v in values.items()}
    return values


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and bool(torch.equal(a.detach(), b))
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def check_not_mutated(fn: Callable[..., Any], *args: Any, what: str, hint: str | None = None, **kwargs: Any) -> Any:
    """Call ``fn`` and fail if it changed any of its arguments in place; return its result."""
    before = _clone_args((args, kwargs))
    result = fn(*args, **kwargs)
    if not _same((args, kwargs), before):
        _fail(f"{what} changed its input in place", hint or "use `x = x - ...` instead of `x -= ...`")
    return result


def check_raises(
    exception: type[BaseException], fn: Callable[..., Any], *args: Any, what: str, hint: str | None = None, **kwargs: Any
) -> None:
    """Fail unless ``fn(*args, **kwargs)`` raises ``exception``."""
    try:
        fn(*args, **kwargs)
    except exception:
        return
    except Exception as err:  # noqa: BLE001 - the wrong exception is a finding, not a crash
        _fail(f"{what} raised {type(err).__name__}, expected {exception.__name__}", hint)
    _fail(f"{what} returned normally, expected it to raise {exception.__name__}", hint)


def _resolve(qualname: str) -> tuple[Any, str]:
    module_name, _, attr = qualname.rpartition(".")
    try:
        return importlib.import_module(module_name), attr
    except ModuleNotFoundError:
        owner_name, _, owner_attr = module_name.rpartition(".")
        return getattr(importlib.import_module(owner_name), owner_attr), attr


#: The forbid(...) blocks open right now, outermost first.  The grader reads
#: them (``active_forbids``) to repeat each rule inside the sandboxed process
#: that runs the student's code, and lifts them (``_forbids_lifted``) while its
#: own machinery copies values across.
_ACTIVE_FORBIDS: list[tuple[tuple[str, ...], str | None, list[tuple[Any, str, Any]]]] = []


def active_forbids() -> tuple[tuple[tuple[str, ...], str | None], ...]:
    """The forbid(...) blocks open now, outermost first, as ``(qualnames, hint)``."""
    return tuple((names, hint) for names, hint, _ in _ACTIVE_FORBIDS)


@contextlib.contextmanager
def _forbids_lifted() -> Iterator[None]:
    """Put the real functions back for the duration of the block, then forbid them again."""
    patched = [(owner, attr, getattr(owner, attr), original) for _, _, saved in _ACTIVE_FORBIDS for owner, attr, original in saved]
    for owner, attr, _, original in reversed(patched):
        setattr(owner, attr, original)
    try:
        yield
    finally:
        for owner, attr, refusing, _ in patched:
            setattr(owner, attr, refusing)


@contextlib.contextmanager
def forbid(*qualnames: str, hint: str | None = None) -> Iterator[None]:
    """Make the named library functions raise while the block runs.

    Names are dotted strings (``"torch.softmax"``, ``"torch.Tensor.softmax"``)
    so the grader can forward the same rule into a sandboxed process.
    """
    saved: list[tuple[Any, str, Any]] = []
    try:
        for qualname in qualnames:
            owner, attr = _resolve(qualname)
            original = getattr(owner, attr)

            def refuse(*_args: Any, _name: str = qualname, **_kwargs: Any) -> Any:
                message = f"this exercise is from scratch, but your code called {_name}"
                raise ForbiddenCallError(f"{message}. Likely mistake: {hint}" if hint else message)

            functools.update_wrapper(refuse, original, updated=())
            saved.append((owner, attr, original))
            setattr(owner, attr, refuse)
    except BaseException:
        # A misspelt name must not leave the earlier ones patched for good: the
        # grader runs every student's tests in one process.
        for owner, attr, original in reversed(saved):
            setattr(owner, attr, original)
        raise
    _ACTIVE_FORBIDS.append((tuple(qualnames), hint, saved))
    try:
        yield
    finally:
        _ACTIVE_FORBIDS.pop()
        for owner, attr, original in reversed(saved):
            setattr(owner, attr, original)


# -- self-checking answers ---------------------------------------------------
# "Predict the output" questions ship only a digest of the right answer, so a
# student can check an answer without being able to read the key.

_ANSWER_SALT = "lossfn-course"


def answer_digest(answer: Any) -> str:
    """A short digest of a normalised answer: case, spaces and quotes don't matter."""
    import hashlib

    normal = " ".join(str(answer).strip().lower().replace('"', "'").split())
    return hashlib.sha256(f"{_ANSWER_SALT}:{normal}".encode()).hexdigest()[:16]


# -- assignment 02 (softmax and cross-entropy) --------------------------------
# A student function that crashes on a fixture (a broadcast error from a
# missing keepdim, say) would otherwise report only PyTorch's message; this
# turns the crash into a diagnosis that names the likely mistake.


def check_runs(fn: Callable[..., Any], *args: Any, what: str, hint: str | None = None, **kwargs: Any) -> Any:
    """Call ``fn`` and return its result; if it raises, fail with the error and ``hint``.

    Failed checks (``AssertionError``) and unfinished exercises
    (``NotImplementedError``) pass through unchanged: they already say what is wrong.
    """
    try:
        return fn(*args, **kwargs)
    except (AssertionError, NotImplementedError):
        raise
    except Exception as err:  # noqa: BLE001 - the crash is the finding
        first_line = (str(err).strip().splitlines() or [""])[0]
        _fail(f"{what} raised {type(err).__name__}: {first_line}", hint)


#: Library softmax functions a from-scratch exercise must not call: ``forbid(*LIBRARY_SOFTMAX)``.
LIBRARY_SOFTMAX = (
    "torch.softmax",
    "torch.Tensor.softmax",
    "torch.nn.functional.softmax",
    "torch.special.softmax",
    "torch.log_softmax",
    "torch.Tensor.log_softmax",
    "torch.nn.functional.log_softmax",
    "torch.special.log_softmax",
)

#: Library losses and log-sum-exp a from-scratch cross-entropy must not call.
LIBRARY_CROSS_ENTROPY = (
    "torch.nn.functional.cross_entropy",
    "torch.nn.functional.nll_loss",
    "torch.logsumexp",
    "torch.Tensor.logsumexp",
    "torch.special.logsumexp",
)

__all__ += ["check_runs", "LIBRARY_SOFTMAX", "LIBRARY_CROSS_ENTROPY"]


# -- assignments 06 and 07: models and optimizer references from plain data --
# A grader that runs test cells in a separate process cannot hand a student a
# live model or optimizer, only the recipe for one: layer sizes and a seed.

__all__ += ["make_mlp", "torch_sgd_run", "check_each_close"]


def make_mlp(sizes: Sequence[int], seed: int = 0) -> torch.nn.Sequential:
    """``nn.Sequential(Linear, Sigmoid, Linear, ...)`` for ``sizes`` such as ``(16, 8, 2)``.

    Weights and biases come from a seeded normal, so the same arguments always
    give the same model and no two weights are equal (a constant start can hide
    a wrong update).  The global random state is left alone.
    """
    if len(sizes) < 2:
        raise ValueError("make_mlp needs at least an input and an output size")
    generator = torch.Generator().manual_seed(seed)
    layers: list[torch.nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        if layers:
            layers.append(torch.nn.Sigmoid())
        # skip_init: the default init would draw from, and so move, the global RNG.
        layer = torch.nn.utils.skip_init(torch.nn.Linear, fan_in, fan_out)
        with torch.no_grad():
            layer.weight.copy_(torch.randn(fan_out, fan_in, generator=generator) / math.sqrt(fan_in))
            layer.bias.copy_(0.1 * torch.randn(fan_out, generator=generator))
        layers.append(layer)
    return torch.nn.Sequential(*layers)


def torch_sgd_run(
    sizes: Sequence[int],
    seed: int,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    lrs: Sequence[float],
    *,
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> dict[str, list]:
    """Reference run: ``torch.optim.SGD`` on ``make_mlp(sizes, seed)`` with cross-entropy.

    Step ``k`` uses batch ``batches[k]`` and learning rate ``lrs[k]``.  Returns
    ``{"losses": [loss before each step, as float], "params": [parameters after the last step]}``.
    """
    if len(batches) != len(lrs):
        raise ValueError(f"{len(batches)} batches but {len(lrs)} learning rates")
    model = make_mlp(sizes, seed)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=lrs[0], momentum=momentum, dampening=dampening,
        nesterov=nesterov, weight_decay=weight_decay,
    )
    losses = []
    for (inputs, targets), lr in zip(batches, lrs):
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(inputs), targets)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return {"losses": losses, "params": [p.detach().clone() for p in model.parameters()]}


def check_each_close(
    actual: Any,
    expected: Sequence[Any],
    *,
    what: str,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    hint: str | None = None,
) -> None:
    """``check_close`` on two equally long sequences of tensors (a model's parameters, say)."""
    if not isinstance(actual, (list, tuple)):
        _fail(f"{what} is a {type(actual).__name__}, expected a list of {len(expected)} tensors", hint)
    if len(actual) != len(expected):
        _fail(f"{what} has {len(actual)} entries, expected {len(expected)}", hint)
    for index, (got, want) in enumerate(zip(actual, expected)):
        check_close(got, want, what=f"{what}[{index}]", rtol=rtol, atol=atol, hint=hint)


# -- assignments 08 and 09: 2-D objectives, a generated data set, a classifier --
# Optimizer paths are compared on objectives the grader can rebuild by name, and
# training loops on data and models it can rebuild from a seed: nothing is
# downloaded and no live object crosses the student boundary.

__all__ += ["rosenbrock", "quadratic_2d", "OBJECTIVES_2D", "make_spirals", "make_classifier"]


def rosenbrock(point: torch.Tensor) -> torch.Tensor:
    """(1 - x)^2 + 100 (y - x^2)^2 at ``point = (x, y)``: a curved valley with its minimum 0 at (1, 1)."""
    x, y = point[0], point[1]
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def quadratic_2d(point: torch.Tensor) -> torch.Tensor:
    """0.1 x^2 + 2 y^2: a bowl 20 times steeper along y than along x, minimum 0 at (0, 0)."""
    x, y = point[0], point[1]
    return 0.1 * x**2 + 2 * y**2


#: The objectives an exercise may name by string.
OBJECTIVES_2D = {"rosenbrock": rosenbrock, "quadratic": quadratic_2d}


def make_spirals(
    num_per_class: int, num_classes: int = 3, *, noise: float = 0.2, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Interleaved 2-D spiral arms, one per class: ``(X, y)`` with X float32 (N, 2), y long (N,).

    Rows come in a seeded random order, so any prefix is a fair sample of every
    class.  The arms are not linearly separable: a linear model stays near
    chance, a small MLP reaches well above 90 %.  The global RNG is untouched.
    """
    if num_per_class < 1 or num_classes < 2:
        raise ValueError("make_spirals needs at least one point per class and two classes")
    generator = torch.Generator().manual_seed(seed)
    radius = torch.linspace(0.05, 1.0, num_per_class)
    points, labels = [], []
    for label in range(num_classes):
        start = label * 2 * math.pi / num_classes
        angle = start + 1.25 * math.pi * radius + noise * torch.randn(num_per_class, generator=generator)
        points.append(torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1))
        labels.append(torch.full((num_per_class,), label, dtype=torch.long))
    order = torch.randperm(num_per_class * num_classes, generator=generator)
    return torch.cat(points)[order].float(), torch.cat(labels)[order]


def make_classifier(
    in_features: int, hidden: int, num_classes: int, *, dropout: float = 0.0, seed: int = 0
) -> torch.nn.Sequential:
    """``nn.Sequential(Linear, ReLU, Dropout(dropout), Linear)``, the same for the same arguments.

    Weights follow PyTorch's default uniform(-1/sqrt(fan_in), 1/sqrt(fan_in))
    but from a seeded generator, so the global RNG is untouched.  The Dropout
    layer is always there (p may be 0), so ``model[0]`` and ``model[3]`` are
    always the two Linear layers; with ``dropout > 0`` train and eval mode differ.
    """
    generator = torch.Generator().manual_seed(seed)
    layers = []
    for fan_in, fan_out in ((in_features, hidden), (hidden, num_classes)):
        # skip_init: the default init would draw from, and so move, the global RNG.
        layer = torch.nn.utils.skip_init(torch.nn.Linear, fan_in, fan_out)
        bound = 1.0 / math.sqrt(fan_in)
        with torch.no_grad():
            layer.weight.copy_((2 * torch.rand(fan_out, fan_in, generator=generator) - 1) * bound)
            layer.bias.copy_((2 * torch.rand(fan_out, generator=generator) - 1) * bound)
        layers.append(layer)
    return torch.nn.Sequential(layers[0], torch.nn.ReLU(), torch.nn.Dropout(dropout), layers[1])


# -- assignment 04 (predict-the-output quiz) ----------------------------------
# The release leaves each quiz answer as None ahead of nbgrader's
# `raise NotImplementedError()` stub.  An unanswered question must say so,
# and what to delete, instead of reporting a wrong answer; an answer that is
# not an option's letter must say that, not "wrong".

__all__.append("check_choice")


def check_choice(answer: Any, digest: str, *, what: str, choices: str = "abcd", hint: str | None = None) -> None:
    """Check a multiple-choice answer, one letter of ``choices``, against the key's digest.

    The digest is ``answer_digest(f"{what}: {key}")``: qualifying the letter
    with the question keeps two questions with the same key from showing the
    same digest.
    """
    letters = ", ".join(repr(c) for c in choices)
    if answer is None or (isinstance(answer, str) and not answer.strip()):
        _fail(f"{what}: no answer given yet; set it to one of {letters} "
              "and delete the `raise NotImplementedError()` line", None)
    letter = str(answer).strip().strip("()").strip().lower()
    if len(letter) != 1 or letter not in choices:
        _fail(f"{what}: {answer!r} is not one of the options {letters}", "answer with the option's letter only, e.g. 'b'")
    if answer_digest(f"{what}: {letter}") != digest:
        _fail(f"{what}: {letter!r} is not the right answer", hint)


# -- assignments 03 and 05: a multi-label image tagger --------------------------
# Assignment 03 evaluates a model with 19 sigmoid outputs, the shape of the
# image tagger in the course notes, built from torch alone (no torchvision).

__all__ += ["multilabel_image_model"]


def multilabel_image_model(num_labels: int = 19, *, seed: int = 0, dropout: float = 0.5) -> torch.nn.Sequential:
    """A small image tagger: (N, 3, H, W) images to (N, num_labels) logits, one per label.

    A convolutional trunk, dropout and a Linear head with one output per label,
    small enough to run on a CPU in milliseconds.  It returns logits (no
    sigmoid), for ``BCEWithLogitsLoss``.  The same seed gives the same weights,
    and the global RNG is left as it was.  With ``dropout > 0``, training and
    evaluation mode give different outputs.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, kernel_size=3, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(8, 16, kernel_size=3, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Dropout(dropout),
            torch.nn.Linear(16, num_labels),
        )


#: Names besides the student's own that a test cell may use: every section's exports.
TEST_CELL_NAMES = frozenset({"torch", "np", "math", "F", *__all__})
