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
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np
import torch

__all__ = [
    "rel_error",
    "tolerance",
    "Tolerance",
    "check",
    "check_close",
    "check_shape",
    "check_dtype",
    "check_type",
    "check_finite",
    "check_not_mutated",
    "check_raises",
    "describe_difference",
    "answer_digest",
    "forbid",
    "ForbiddenCallError",
]


class ForbiddenCallError(AssertionError):
    """A from-scratch exercise called the library function it should replace."""


# -- messages -------------------------------------------------------------------
# A message names a mistake ("Likely mistake: X") only when the student's output
# is what mistake X produces: the check computed that buggy output itself and
# compared.  Otherwise it says neutrally what differs and adds the author's
# advice as "Hint: ...".  The named mistake comes first, so it is what a reader
# sees before the numbers.

LIKELY = "Likely mistake: "
HINT = "Hint: "


def _fail(message: str, hint: str | None = None, *, mistake: str | None = None) -> None:
    if mistake:
        message = f"{LIKELY}{mistake}. {message}"
    elif hint:
        message = f"{message}. {HINT}{hint}"
    raise AssertionError(message)


def _as_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, (bool, int, float, np.number)) or (isinstance(value, (list, tuple)) and not _holds_tensor(value)):
        # Through numpy: a Python float is a float64, as the policy counts it (torch would round it to float32).
        array = np.asarray(value)
        if array.dtype != object:
            return torch.from_numpy(array.copy())
    return torch.as_tensor(value)


def _holds_tensor(value: Any) -> bool:
    """Whether a (nested) list or tuple holds a tensor anywhere."""
    return any(isinstance(v, torch.Tensor) or (isinstance(v, (list, tuple)) and _holds_tensor(v)) for v in value)


def rel_error(x: Any, y: Any) -> float:
    """Largest elementwise |x - y| / max(1e-8, |x| + |y|); 0.0 when both are 0."""
    x = _as_tensor(x).detach().double()
    y = _as_tensor(y).detach().double()
    if x.numel() == 0:
        return 0.0
    denom = (x.abs() + y.abs()).clamp_min(1e-8)
    return float(((x - y).abs() / denom).max())


# -- the tolerance policy ---------------------------------------------------------
# One rule for every numeric comparison (docs/authoring.md, "Tolerances"):
#
#   rtol = roundings * eps(dtype),   atol = rtol * max(1, scale)
#   pass when |got - want| <= atol + rtol * |want|   (elementwise)
#
# * dtype is the working precision: the least precise floating dtype among the
#   answer and the reference (a Python float counts as float64).  A float32
#   answer is judged at float32's eps, 1.19e-7, never at float64's 2.2e-16.
# * roundings is how many roundings a correct implementation can accumulate on
#   the way to one value; 64 covers every closed form in the course with room
#   for a different but correct order of operations.  Long runs (an optimizer's
#   trajectory, a loop over a data set) pass more.
# * scale is the largest magnitude a correct implementation may cancel: at
#   logits of +-1000, z - logsumexp(z) loses 1000 * eps to cancellation however
#   it is written, so a check of log-probabilities at +-1000 passes scale=1000.
# References should be computed in float64 where they must be exact, so that
# the whole allowance belongs to the student's float32 arithmetic.

DEFAULT_ROUNDINGS = 64

_PYTHON_FLOAT = torch.float64


def _precision(value: Any) -> torch.dtype | None:
    """The floating dtype ``value`` was computed in; None for exact (integer, bool) values."""
    if isinstance(value, torch.Tensor):
        return value.dtype if (value.is_floating_point() or value.is_complex()) else None
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.zeros(0, dtype=value.dtype)).dtype if value.dtype.kind in "fc" else None
    if isinstance(value, (np.floating,)):
        return _precision(np.asarray(value))
    if isinstance(value, float):
        return _PYTHON_FLOAT
    if isinstance(value, (list, tuple)):
        return working_dtype(*value)
    return None


def working_dtype(*values: Any) -> torch.dtype | None:
    """The least precise floating dtype among ``values``; None when all are exact."""
    found = [p for p in map(_precision, values) if p is not None]
    if not found:
        return None
    return max(found, key=lambda d: torch.finfo(d.to_real() if d.is_complex else d).eps)


class Tolerance(NamedTuple):
    """How far apart two values may be: ``|got - want| <= atol + rtol * |want|``."""

    rtol: float
    atol: float

    def __str__(self) -> str:
        return f"rtol {self.rtol:.2g}" if self.rtol == self.atol else f"rtol {self.rtol:.2g}, atol {self.atol:.2g}"


EXACT = Tolerance(0.0, 0.0)


def tolerance(dtype: torch.dtype | None, *, roundings: float = DEFAULT_ROUNDINGS, scale: float = 1.0) -> Tolerance:
    """The tolerance the policy allows in ``dtype``: exact for integer and bool values."""
    if dtype is None:
        return EXACT
    real = dtype.to_real() if dtype.is_complex else dtype
    rtol = float(roundings) * torch.finfo(real).eps
    return Tolerance(rtol, rtol * max(1.0, float(scale)))


def check(condition: bool, message: str, *, hint: str | None = None, mistake: str | None = None) -> None:
    """Plain assertion; ``mistake=`` only when ``condition`` tests that mistake's own output."""
    if not condition:
        _fail(message, hint, mistake=mistake)


def _shape_text(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def check_shape(
    value: Any,
    shape: Sequence[int],
    *,
    what: str,
    hint: str | None = None,
    mistakes: dict[str, Sequence[int]] | None = None,
) -> None:
    """Fail unless ``value`` has ``shape``; ``mistakes`` maps a mistake to the shape it produces."""
    if not isinstance(value, (torch.Tensor, np.ndarray)):
        _fail(f"{what} is a {type(value).__name__}, expected shape {_shape_text(shape)} (a tensor)", hint)
    actual = tuple(value.shape)
    if actual == tuple(shape):
        return
    for mistake, produced in (mistakes or {}).items():
        if actual == tuple(produced):
            _fail(f"{what} has shape {_shape_text(actual)}, expected shape {_shape_text(shape)}", mistake=mistake)
    _fail(f"{what} has shape {_shape_text(actual)}, expected shape {_shape_text(shape)}{_shape_pattern(actual, tuple(shape))}", hint)


def _shape_pattern(actual: tuple, shape: tuple) -> str:
    if len(actual) == len(shape) >= 2 and actual == shape[::-1]:
        return " (the transpose)"
    if len(actual) + 1 == len(shape) and any(actual == shape[:d] + shape[d + 1:] for d in range(len(shape))):
        dims = [d for d in range(len(shape)) if actual == shape[:d] + shape[d + 1:]]
        return f" (dimension {dims[0]} is missing)" if len(dims) == 1 else " (a dimension is missing)"
    if len(actual) == len(shape) + 1 and any(shape == actual[:d] + actual[d + 1:] and actual[d] == 1 for d in range(len(actual))):
        return " (an extra dimension of size 1)"
    if math.prod(actual) == math.prod(shape):
        return " (same number of elements, arranged differently)"
    return ""


def check_dtype(value: Any, dtype: Any, *, what: str, hint: str | None = None, mistakes: dict[str, Any] | None = None) -> None:
    """Fail unless ``value`` has ``dtype``; ``mistakes`` maps a mistake to the dtype it produces."""
    actual = getattr(value, "dtype", type(value).__name__)
    if actual != dtype:
        named = next((mistake for mistake, produced in (mistakes or {}).items() if actual == produced), None)
        _fail(f"{what} has dtype {actual}, expected dtype {dtype}", hint, mistake=named)


def check_type(value: Any, kind: type | tuple[type, ...], *, what: str, hint: str | None = None) -> None:
    """Fail unless ``value`` is an instance of ``kind`` (a Python float, say, not a 0-d tensor)."""
    if isinstance(kind, type) and kind is float and isinstance(value, bool):
        _fail(f"{what} is a bool, expected a float", hint)
    if not isinstance(value, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        detail = f" of shape {_shape_text(value.shape)}" if isinstance(value, torch.Tensor) else ""
        _fail(f"{what} is a {type(value).__module__ + '.' if type(value).__module__ not in ('builtins',) else ''}"
              f"{type(value).__name__}{detail}, expected a {names}", hint)


def check_finite(value: Any, *, what: str, hint: str | None = None) -> None:
    tensor = _as_tensor(value)
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        bad = ~torch.isfinite(tensor)
        _fail(f"{what} has {int(bad.sum())} non-finite value(s) (nan or inf){_positions(bad)}", hint)


def _positions(mask: torch.Tensor, limit: int = 3) -> str:
    if mask.dim() == 0:
        return ""
    where = [tuple(int(i) for i in index) for index in mask.nonzero()[:limit]]
    shown = ", ".join(str(w[0]) if len(w) == 1 else str(w) for w in where)
    more = ", ..." if int(mask.sum()) > limit else ""
    return f" at index {shown}{more}"


def _format(value: float) -> str:
    return f"{value:.6g}"


def _matches(got64: torch.Tensor, want64: torch.Tensor, tol: Tolerance) -> torch.Tensor:
    """Elementwise: equal within ``tol``, or the same nan/inf."""
    both_nan = torch.isnan(got64) & torch.isnan(want64)
    same_inf = torch.isinf(got64) & (got64 == want64)
    # Only finite expected values have a tolerance: |finite - inf| <= inf would hold.
    within = torch.isfinite(want64) & ((got64 - want64).abs() <= tol.atol + tol.rtol * want64.abs())
    return both_nan | same_inf | within


def _close(got: Any, want: Any, tol: Tolerance) -> bool:
    try:
        got64, want64 = _as_tensor(got).detach().double(), _as_tensor(want).detach().double()
    except (TypeError, ValueError, RuntimeError):
        return False
    return got64.shape == want64.shape and bool(_matches(got64, want64, tol).all())


def _factor_name(factor: float, sizes: dict[str, float]) -> str:
    for name, size in sizes.items():
        if size not in (0, 1) and math.isclose(factor, size, rel_tol=1e-6):
            return f"{name} = {size:g} times"
        if size not in (0, 1) and math.isclose(factor, 1 / size, rel_tol=1e-6):
            return f"1/{name} = 1/{size:g} times"
    if abs(factor - round(factor)) < 1e-6 * abs(factor) and round(factor) not in (0, 1):
        return f"exactly {round(factor)} times"
    inverse = 1 / factor
    if abs(inverse - round(inverse)) < 1e-6 * abs(inverse) and round(inverse) not in (0, 1):
        return f"exactly 1/{round(inverse)} times"
    return f"{factor:.6g} times"


def describe_difference(actual: Any, expected: Any, *, tol: Tolerance, sizes: dict[str, float] | None = None) -> str:
    """What differs between two same-shaped values, in neutral words: the patterns it can see by itself.

    Looks for nan/inf where the expected value is finite, a sign flip, one
    constant factor (named after ``sizes`` such as ``{"N": 6}`` when it equals
    one), one constant offset, a transpose, normalisation along another dim,
    and agreement only to float32 precision; otherwise says where and by how much.
    """
    got64, want64 = _as_tensor(actual).detach().double(), _as_tensor(expected).detach().double()
    ok = _matches(got64, want64, tol)
    bad = ~ok
    count = f"{int(bad.sum())} of {got64.numel()} value(s) differ"
    finite_want = torch.isfinite(want64)
    nonfinite = bad & ~torch.isfinite(got64) & finite_want
    if bool(nonfinite.any()):
        kinds = "nan" if bool(torch.isnan(got64[nonfinite]).all()) else "inf" if bool(torch.isinf(got64[nonfinite]).all()) else "nan or inf"
        return f"{count}: {int(nonfinite.sum())} {kinds}{_positions(nonfinite)} where the expected value is finite"
    patterns = []
    if bool(finite_want.all()) and got64.numel() > 0 and bool(torch.isfinite(got64).all()):
        nonzero = want64.abs() > tol.atol
        if bool(nonzero.any()) and bool((want64 != 0).any()):
            if _close(got64, -want64, tol):
                patterns.append("every value has the opposite sign")
            else:
                ratios = got64[nonzero] / want64[nonzero]
                factor = float(ratios.median())
                if math.isfinite(factor) and factor != 0.0 and not math.isclose(factor, 1.0, rel_tol=1e-3) and _close(got64, factor * want64, tol):
                    patterns.append(f"every value is {_factor_name(factor, sizes or {})} the expected value")
        offset = float((got64 - want64).median())
        if not patterns and got64.numel() > 1 and offset != 0 and _close(got64, want64 + offset, tol):
            patterns.append(f"every value is off by the same constant, {offset:+.6g}")
        if not patterns and got64.dim() == 2 and got64.shape[0] == got64.shape[1] and _close(got64, want64.T, tol):
            patterns.append("the values are the transpose of the expected ones")
        if not patterns and got64.dim() >= 2:
            sums_to_one = lambda v, d: _close(v.sum(dim=d), torch.ones_like(v.sum(dim=d)), tolerance(torch.float32))  # noqa: E731
            want_dims = [d for d in range(want64.dim()) if sums_to_one(want64, d)]
            got_dims = [d for d in range(got64.dim()) if sums_to_one(got64, d)]
            if want_dims and got_dims and not set(got_dims) & set(want_dims):
                patterns.append(f"the values sum to 1 along dim {got_dims[0]}; the expected ones along dim {want_dims[0]}")
        if not patterns and tol.rtol <= tolerance(torch.float64, roundings=1024).rtol and _close(got64, want64, tolerance(torch.float32)):
            patterns.append("they agree only to float32 precision, as if part of the computation ran in float32")
    diff = torch.where(ok, torch.zeros_like(got64), (got64 - want64).abs().nan_to_num(math.inf))
    flat = int(diff.argmax())
    index = tuple(int(i) for i in np.unravel_index(flat, tuple(got64.shape))) if got64.dim() else ()
    at = f" at index {index[0] if len(index) == 1 else index}" if index else ""
    worst = (f"worst{at}: got {_format(got64.reshape(-1)[flat].item())}, "
             f"expected {_format(want64.reshape(-1)[flat].item())}, {tol}")
    if patterns:
        return f"{count}; {patterns[0]} ({worst})"
    return f"{count}; {worst}"


def check_close(
    actual: Any,
    expected: Any,
    *,
    what: str,
    roundings: float = DEFAULT_ROUNDINGS,
    scale: float = 1.0,
    hint: str | None = None,
    mistakes: dict[str, Any] | None = None,
    sizes: dict[str, float] | None = None,
) -> None:
    """Compare under the tolerance policy and say what differs.

    ``mistakes`` maps a mistake's name to the output that mistake produces,
    computed by the test; a failing answer that matches one is told that
    mistake.  Otherwise the message says neutrally what differs
    (``describe_difference``) and adds ``hint`` as advice.
    """
    if not isinstance(actual, (torch.Tensor, np.ndarray, int, float, list, tuple, np.number)) or isinstance(actual, bool):
        _fail(f"{what} is a {type(actual).__name__}, expected a tensor or number", hint)
    try:
        got = _as_tensor(actual).detach()
    except (TypeError, ValueError, RuntimeError) as err:
        _fail(f"{what} is a {type(actual).__name__} that is not a tensor of numbers ({err})", hint)
    want = _as_tensor(expected).detach()
    tol = tolerance(working_dtype(actual, expected), roundings=roundings, scale=scale)
    if got.shape != want.shape:
        for mistake, produced in (mistakes or {}).items():
            if _close(got, produced, tol):
                _fail(f"{what} has shape {_shape_text(got.shape)}, expected shape {_shape_text(want.shape)}", mistake=mistake)
        _fail(f"{what} has shape {_shape_text(got.shape)}, expected shape {_shape_text(want.shape)}"
              f"{_shape_pattern(tuple(got.shape), tuple(want.shape))}", hint)
    if got.numel() == 0 or _close(got, want, tol):
        return
    detail = describe_difference(got, want, tol=tol, sizes=sizes)
    for mistake, produced in (mistakes or {}).items():
        if _close(got, produced, tol):
            _fail(f"{what}: {detail}", mistake=mistake)
    _fail(f"{what}: {detail}", hint)


# -- mutation ----------------------------------------------------------------------
# "Leave the caller's tensor alone" covers its values, its dtype and shape, whether
# it requires grad, and its .grad.  In the grader the student's function runs in
# the sandbox, and the proxy copies all of these back onto the test's objects
# (autograder/verdict.py), so the same comparison judges what the code really did.


def _snapshot(values: Any) -> Any:
    if isinstance(values, torch.Tensor):
        grad = values.grad.detach().clone() if values.is_leaf and values.grad is not None else None
        return ("tensor", values.detach().clone(), values.requires_grad, grad)
    if isinstance(values, np.ndarray):
        return ("array", values.copy())
    if isinstance(values, (list, tuple)):
        return (type(values).__name__, [_snapshot(v) for v in values])
    if isinstance(values, dict):
        return ("dict", {k: _snapshot(v) for k, v in values.items()})
    return ("plain", values)


def _changes(now: Any, before: Any, where: str) -> list[str]:
    """What changed between a snapshot and the live value, in words."""
    kind = before[0]
    if kind == "tensor":
        _, data, requires_grad, grad = before
        if not isinstance(now, torch.Tensor):
            return [f"{where} was replaced by a {type(now).__name__}"]
        found = []
        if now.shape != data.shape or now.dtype != data.dtype:
            found.append(f"{where} changed from {data.dtype} {_shape_text(data.shape)} to {now.dtype} {_shape_text(now.shape)}")
        elif not bool(torch.equal(now.detach(), data)) and not (
            data.is_floating_point() and bool(torch.equal(now.detach().isnan(), data.isnan()))
            and bool(torch.equal(now.detach().nan_to_num(), data.nan_to_num()))
        ):
            changed = now.detach() != data
            found.append(f"{where} had {int(changed.sum())} of {data.numel()} value(s) overwritten{_positions(changed)}")
        if now.requires_grad != requires_grad:
            found.append(f"{where} was switched to requires_grad={now.requires_grad}")
        now_grad = now.grad if now.is_leaf else None
        if (now_grad is None) != (grad is None) or (grad is not None and not bool(torch.equal(now_grad, grad))):
            found.append(f"{where}.grad was {'set' if grad is None else 'changed'}")
        return found
    if kind == "array":
        if not isinstance(now, np.ndarray) or now.shape != before[1].shape or not np.array_equal(now, before[1], equal_nan=before[1].dtype.kind in "fc"):
            return [f"{where} (a numpy array) was overwritten"]
        return []
    if kind in ("list", "tuple"):
        if not isinstance(now, (list, tuple)) or len(now) != len(before[1]):
            return [f"{where} changed length"]
        return [c for i, (n, b) in enumerate(zip(now, before[1])) for c in _changes(n, b, f"{where}[{i}]")]
    if kind == "dict":
        if not isinstance(now, dict) or now.keys() != before[1].keys():
            return [f"{where} gained or lost keys"]
        return [c for k, b in before[1].items() for c in _changes(now[k], b, f"{where}[{k!r}]")]
    try:
        same = bool(now == before[1])
    except Exception:  # noqa: BLE001 - an uncomparable value counts as changed
        same = False
    return [] if same else [f"{where} was changed"]


def _argument_names(args: tuple, kwargs: dict) -> list[tuple[str, Any]]:
    named = [(f"argument {i + 1}", value) for i, value in enumerate(args)]
    return named + [(f"argument {key!r}", value) for key, value in kwargs.items()]


#: Changes student functions made to their inputs that the grader saw but did not copy back
#: (see ``report_mutations``), oldest first; a test cell starts with none.
_REPORTED_MUTATIONS: list[str] = []


def report_mutations(function: str, changes: Sequence[str]) -> None:
    """Record that ``function`` changed its caller's inputs in place.

    The sandboxed grader calls this instead of copying the change back: a test's
    arguments stay as the test made them, so a reference computed from them after
    the call is computed from what the test passed.  ``check_not_mutated`` and
    the verdict's note read what was reported."""
    _REPORTED_MUTATIONS.extend(f"{function}: {change}" for change in changes)


def check_not_mutated(fn: Callable[..., Any], *args: Any, what: str, hint: str | None = None, **kwargs: Any) -> Any:
    """Call ``fn`` and fail if it changed any argument (values, requires_grad, .grad); return its result."""
    before = [(name, value, _snapshot(value)) for name, value in _argument_names(args, kwargs)]
    reported = len(_REPORTED_MUTATIONS)
    result = fn(*args, **kwargs)
    changes = [change for name, value, snap in before for change in _changes(value, snap, name)]
    changes += [change.partition(": ")[2] for change in _REPORTED_MUTATIONS[reported:]]
    if changes:
        _fail(f"{what} changed its caller's input: {'; '.join(changes[:3])}",
              hint or "work on a new tensor (`x = x - ...`, `x.clone()`), never on the caller's one")
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
        _fail(f"{what} raised {type(err).__name__}, expected it to raise {exception.__name__}", hint)
    _fail(f"{what} returned normally, expected it to raise {exception.__name__}", hint)


# -- calls that fail ------------------------------------------------------------
# Every call of a student function in a test is described the same way when it
# raises: which function, with which inputs (shapes and dtypes, never values),
# and the cause when the exception itself proves it.

#: Exception texts that prove their cause, and the cause in words.
CALL_FAILURE_CAUSES = (
    ("a leaf Variable that requires grad is being used in an in-place operation",
     "an in-place operation (`x -= ...`, `x[...] = ...`, `x.add_(...)`) on the caller's tensor, which requires grad"),
    ("has been modified by an inplace operation",
     "an in-place operation on a tensor that autograd still needed"),
    ("Expected all tensors to be on the same device",
     "a tensor created on the CPU while the input is on the GPU: create new tensors on the input's device "
     "(`torch.zeros(n, device=x.device)`, `torch.zeros_like(x)`)"),
)


def describe_value(value: Any) -> str:
    """A short description of an argument: type, shape and dtype, never its values."""
    if isinstance(value, torch.Tensor):
        flag = ", requires_grad" if value.requires_grad else ""
        kind = f"tensor{_shape_text(value.shape)}" if value.dim() else "0-d tensor"
        return f"{kind} {str(value.dtype).removeprefix('torch.')}{flag}"
    if isinstance(value, np.ndarray):
        return f"array{_shape_text(value.shape)} {value.dtype}"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(describe_value(v) for v in value[:3]) + (", ..." if len(value) > 3 else "")
        return f"[{inner}]" if isinstance(value, list) else f"({inner}{',' if len(value) == 1 else ''})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {describe_value(v)}" for k, v in list(value.items())[:4]) + "}"
    if isinstance(value, torch.nn.Module):
        return type(value).__name__
    if isinstance(value, (bool, int, float, str)) or value is None:
        text = repr(value)
        return text if len(text) <= 24 else text[:21] + "..."
    return type(value).__name__


def describe_call(name: str, args: Sequence[Any], kwargs: dict[str, Any]) -> str:
    parts = [describe_value(v) for v in args] + [f"{k}={describe_value(v)}" for k, v in kwargs.items()]
    return f"{name}({', '.join(parts)})"


def call_failure(name: str, args: Sequence[Any], kwargs: dict[str, Any], error: BaseException) -> str:
    """The one-line message for a student call that raised ``error``; a proven cause comes first."""
    text = str(error).strip()
    first = (text.splitlines() or [""])[0][:400]
    message = f"{describe_call(name, args, kwargs)} raised {type(error).__name__}: {first}".rstrip(": ")
    if isinstance(error, NotImplementedError) and not first:
        message += " (the exercise is not done yet: replace `raise NotImplementedError()` with your code)"
    for phrase, cause in CALL_FAILURE_CAUSES:
        if phrase in text:
            return f"{LIKELY}{cause}. {message}"
    return message


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
                raise ForbiddenCallError(forbidden_call_message(_name, hint))

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



#: What each forbiddable library function leaves in torch's dispatcher when it runs, under
#: whatever Python name it was reached (an alias saved before the rule applied, a method,
#: ``torch.ops.aten``, an ``nn`` module that wraps it).  The sandboxed worker records the
#: dispatcher's events during a call made under ``forbid(...)``, and the grader, outside
#: the student's process, refuses the call when one of the forbidden function's events is
#: among them.  Names are the profiler's: ``aten::<op>`` for operators, the
#: ``record_function`` label for an optimizer's step; a trailing ``*`` matches any ending.  A function missing here is refused
#: by name only; tests/test_engine_forbid.py checks that every name the course forbids is here.
_SOFTMAX_EVENTS = ("aten::softmax", "aten::_softmax", "aten::special_softmax")
_LOG_SOFTMAX_EVENTS = ("aten::log_softmax", "aten::_log_softmax", "aten::special_log_softmax")
_LOGSUMEXP_EVENTS = ("aten::logsumexp", "aten::special_logsumexp")
_NLL_EVENTS = ("aten::nll_loss", "aten::nll_loss_nd", "aten::nll_loss_forward", "aten::nll_loss2d", "aten::nll_loss2d_forward")
DISPATCHER_EVENTS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("torch.softmax", "torch.Tensor.softmax", "torch.nn.functional.softmax", "torch.special.softmax"),
                    _SOFTMAX_EVENTS),
    **dict.fromkeys(("torch.log_softmax", "torch.Tensor.log_softmax", "torch.nn.functional.log_softmax",
                     "torch.special.log_softmax"), _LOG_SOFTMAX_EVENTS),
    **dict.fromkeys(("torch.logsumexp", "torch.Tensor.logsumexp", "torch.special.logsumexp"), _LOGSUMEXP_EVENTS),
    "torch.nn.functional.cross_entropy": ("aten::cross_entropy_loss",),
    "torch.nn.functional.nll_loss": _NLL_EVENTS,
    "torch.nn.functional.binary_cross_entropy": ("aten::binary_cross_entropy",),
    "torch.nn.functional.binary_cross_entropy_with_logits": ("aten::binary_cross_entropy_with_logits",),
    "torch.nn.functional.one_hot": ("aten::one_hot",),
    "torch.nn.functional.softplus": ("aten::softplus",),
    **dict.fromkeys(("torch.sigmoid", "torch.Tensor.sigmoid", "torch.nn.functional.sigmoid", "torch.special.expit"),
                    ("aten::sigmoid", "aten::special_expit")),
    "torch.binary_cross_entropy_with_logits": ("aten::binary_cross_entropy_with_logits",),
    # Every way of asking autograd for a gradient runs its engine, which labels each step.
    **dict.fromkeys(("torch.Tensor.backward", "torch.autograd.backward", "torch.autograd.grad", "torch.func.grad",
                     "torch.func.grad_and_value", "torch.func.jacrev", "torch.func.vjp"),
                    ("autograd::engine::evaluate_function: *",)),
}


def forbidden_event(events: Iterable[str], qualnames: Sequence[str]) -> tuple[str, str] | None:
    """The first of ``events`` that shows one of ``qualnames`` ran, as ``(event, qualname)``; else None.

    A forbidden optimizer class (``torch.optim.Adam``) shows as the label torch gives any
    optimizer's step, ``Optimizer.step#<class>.step``: a subclass of it steps the same way."""
    exact: dict[str, str] = {}
    prefixes: list[tuple[str, str]] = []
    for qualname in qualnames:
        for pattern in DISPATCHER_EVENTS.get(qualname, ()):
            if pattern.endswith("*"):
                prefixes.append((pattern[:-1], qualname))
            else:
                exact.setdefault(pattern, qualname)
    optimizers = [q for q in qualnames if q.startswith("torch.optim.") and q.rpartition(".")[2][:1].isupper()]
    if optimizers:
        prefixes.append(("Optimizer.step#", optimizers[0]))
    for event in events:
        if event in exact:
            return event, exact[event]
        for prefix, qualname in prefixes:
            if event.startswith(prefix):
                return event, qualname
    return None


def forbidden_call_message(qualname: str, hint: str | None) -> str:
    message = f"this exercise is from scratch, but your code called {qualname}"
    return f"{message}. {HINT}{hint}" if hint else message


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
    """Call ``fn`` and return its result; if it raises, fail with ``call_failure``'s message and ``hint``.

    Failed checks (``AssertionError``) and unfinished exercises
    (``NotImplementedError``) pass through unchanged: they already say what is wrong.
    """
    try:
        return fn(*args, **kwargs)
    except (AssertionError, NotImplementedError):
        raise
    except Exception as err:  # noqa: BLE001 - the crash is the finding
        if getattr(err, "described_call", False):
            message = str(err)
        else:
            message = call_failure(getattr(fn, "__name__", "the function"), args, kwargs, err)
        if message.startswith(LIKELY):
            raise AssertionError(f"{what}: {message}") from None
        _fail(f"{what}: {message}", hint)


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

__all__ += ["check_runs", "describe_call", "LIBRARY_SOFTMAX", "LIBRARY_CROSS_ENTROPY"]


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
    roundings: float = DEFAULT_ROUNDINGS,
    scale: float = 1.0,
    hint: str | None = None,
    mistakes: dict[str, Sequence[Any]] | None = None,
) -> None:
    """``check_close`` on two equally long sequences of tensors (a model's parameters, say).

    ``mistakes`` maps a mistake to the sequence it produces; it is named only
    when every entry matches.
    """
    if not isinstance(actual, (list, tuple)):
        _fail(f"{what} is a {type(actual).__name__}, expected a list of {len(expected)} tensors", hint)
    if len(actual) != len(expected):
        _fail(f"{what} has {len(actual)} entries, expected {len(expected)} entries", hint)
    def tol(got: Any, want: Any) -> Tolerance:
        return tolerance(working_dtype(got, want), roundings=roundings, scale=scale)

    for mistake, produced in (mistakes or {}).items():
        wrong = not all(_close(g, w, tol(g, w)) for g, w in zip(actual, expected) if isinstance(g, torch.Tensor))
        if wrong and len(produced) == len(actual) and all(_close(g, p, tol(g, p)) for g, p in zip(actual, produced)):
            for index, (got, want) in enumerate(zip(actual, expected)):
                if not _close(got, want, tol(got, want)):
                    _fail(f"{what}[{index}]: {describe_difference(got, want, tol=tol(got, want))}", mistake=mistake)
    for index, (got, want) in enumerate(zip(actual, expected)):
        check_close(got, want, what=f"{what}[{index}]", roundings=roundings, scale=scale, hint=hint)


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
