"""Run a test cell in the trusted grader process and decide its verdict.

The test's source comes from the gradebook, never from the submission.  It
runs in a fresh namespace holding torch, np, math, F and the course_checks
names; every other name it reads that the student's notebook defines is
fetched from the sandboxed worker: a function becomes a ``StudentFunction``
proxy, anything else arrives as a decoded value (tensors, arrays, numbers,
strings and containers of those).  A proxy call sends its arguments over,
brings back the result, copies in-place changes to the arguments back into the
grader's objects (so ``check_not_mutated`` still works), repeats the test's
open ``forbid(...)`` rules around the call, and re-raises the student's
exception by type (so ``check_raises`` works).  Gradients flow back through a
call into the worker when the test calls ``backward()``.

Student code therefore never runs here, and nothing it sends can run here
either: only plain data crosses.  When the worker times out, dies or breaks
the protocol, the proxy raises ``Interrupted``, which is not an ``Exception``,
so no ``check_raises(Exception, ...)`` in a test can mistake it for an answer.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import functools
import io
import math
import random
import re
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any, Iterator, Protocol

import numpy as np
import torch
import torch.nn.functional as F

import course_checks

from . import wire

HIDDEN_BEGIN = "### BEGIN HIDDEN TESTS"
HIDDEN_END = "### END HIDDEN TESTS"

#: Kinds of ``Interrupted``: why a test could not get an answer from the student's code.
TIMEOUT, DIED, MEMORY, PROTOCOL, UNREADABLE, GAVE_UP = "timeout", "died", "memory", "protocol", "unreadable", "gave up"


class Interrupted(BaseException):
    """The student's process could not answer (timeout, death, limits, protocol).

    A BaseException on purpose: a test's ``except Exception`` must never turn
    a hang or a crash into a pass.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class StudentError(Exception):
    """Base for a student exception whose own class has no safe counterpart here."""


class Kernel(Protocol):
    """What verdicts need from the worker session (see execute.KernelSession)."""

    def request(self, header: dict, blobs: list[bytes], seconds: float) -> tuple[dict, list[bytes]]: ...


# -- student exceptions --------------------------------------------------------


def _allowed_exceptions() -> dict[tuple[str, str], type[BaseException]]:
    allowed: dict[tuple[str, str], type[BaseException]] = {}
    for value in vars(builtins).values():
        if isinstance(value, type) and issubclass(value, Exception):
            allowed[(value.__module__, value.__qualname__)] = value
    extra = [course_checks.ForbiddenCallError, np.linalg.LinAlgError, torch.linalg.LinAlgError]
    for name in ("OutOfMemoryError",):
        if hasattr(torch, name):
            extra.append(getattr(torch, name))
    for cls in extra:
        allowed[(cls.__module__, cls.__qualname__)] = cls
    return allowed


_ALLOWED_EXCEPTIONS = _allowed_exceptions()
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_]")
_MEMORY_PHRASES = ("can't allocate memory", "not enough memory", "bad_alloc", "DefaultCPUAllocator", "out of memory")


def is_memory_error(error: Any) -> bool:
    error = wire.checked_error(error)
    names = {qualname for _, qualname in error["mro"]}
    return "MemoryError" in names or "OutOfMemoryError" in names or any(p in error["message"] for p in _MEMORY_PHRASES)


def student_exception(error: Any) -> Exception:
    """An exception of the student's type (or its nearest safe base) carrying its message."""
    if not isinstance(error, dict):
        return StudentError("the student's code failed")
    error = wire.checked_error(error)
    message = error["message"]
    mro = [tuple(part) for part in error["mro"]]
    base: type[Exception] = StudentError
    for module, qualname in mro:
        cls = _ALLOWED_EXCEPTIONS.get((module, qualname))
        if cls is not None and issubclass(cls, Exception):
            base = cls
            break
    name = _SAFE_NAME.sub("_", mro[0][1].split(".")[-1])[:60] if mro else "StudentError"
    # Always a fresh subclass that is also a StudentError: the grader can tell the
    # student's exceptions from its own, and check_raises still sees the student's type.
    bases = (base,) if base is StudentError else (base, StudentError)
    cls = type(name or "StudentError", bases, {"__module__": "student"})
    try:
        return cls(message)
    except Exception:  # noqa: BLE001 - some builtins (UnicodeError...) need more arguments
        return type(name or "StudentError", (StudentError,), {"__module__": "student"})(message)


# -- proxies -------------------------------------------------------------------


class StudentFunction:
    """Calls the student's function of this name in the worker."""

    def __init__(self, kernel: Kernel, name: str, seconds: "Deadline") -> None:
        self._kernel = kernel
        self._deadline = seconds
        self.__name__ = self.__qualname__ = name

    def __repr__(self) -> str:
        return f"<student function {self.__name__}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return _call(self._kernel, self.__name__, args, kwargs, self._deadline)
        except StudentError as err:
            # Same type (check_raises still sees it), with a message that says which call failed.
            if not getattr(err, "described_call", False):
                with course_checks._forbids_lifted():
                    err.args = (course_checks.call_failure(self.__name__, args, kwargs, err),)
                err.described_call = True
            raise


@dataclass
class ModelState:
    """A model's state as it came back from the worker, to be copied into the grader's model."""

    spec: wire.ModelSpec
    state: dict
    grads: dict
    training: Any


class Deadline:
    """Seconds left for the test cell that is running."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def _function_name(value: Any) -> str | None:
    return value.__name__ if isinstance(value, StudentFunction) else None


def _encoder() -> wire.Encoder:
    return wire.Encoder(model_spec=wire.model_origin, callable_name=_function_name)


def _model_builder(sent: list[wire.ModelSpec]):
    """Rebuild a model the student returned, only from a factory and small plain arguments."""

    def build(spec: wire.ModelSpec, state: dict, grads: dict, training: Any) -> Any:
        factory = getattr(course_checks, spec.factory, None)
        if spec.factory not in course_checks.TEST_CELL_NAMES or not callable(factory):
            raise wire.WireError(f"unknown model factory {spec.factory!r}")
        if spec not in sent and not _small_arguments(spec):
            raise wire.WireError("a returned model must come from a factory called with small arguments")
        with course_checks._forbids_lifted():
            model = factory(*spec.args, **spec.kwargs)
        if not isinstance(model, torch.nn.Module):
            raise wire.WireError(f"{spec.factory} does not build a model")
        wire.load_model_state(model, state, grads, training)
        wire.set_model_origin(model, spec)
        return model

    return build


def _small_arguments(spec: wire.ModelSpec) -> bool:
    numbers: list[float] = []

    def walk(value: Any) -> bool:
        if isinstance(value, bool) or value is None or isinstance(value, str):
            return True
        if isinstance(value, (int, float)):
            numbers.append(abs(value))
            return True
        if isinstance(value, (list, tuple)):
            return all(walk(v) for v in value)
        if isinstance(value, dict):
            return all(walk(v) for v in value.values())
        return False

    return walk(list(spec.args)) and walk(spec.kwargs) and len(numbers) <= 16 and all(n <= 1024 for n in numbers)


def _state_collector(spec: wire.ModelSpec, state: dict, grads: dict, training: Any) -> ModelState:
    return ModelState(spec, state, grads, training)


def _call(kernel: Kernel, name: str, args: tuple, kwargs: dict, deadline: Deadline) -> Any:
    with course_checks._forbids_lifted():
        forbids = [[list(names), hint] for names, hint in course_checks.active_forbids()]
        inputs = wire.grad_inputs((args, kwargs)) if torch.is_grad_enabled() else []
        call = _RemoteCall(kernel, name, args, kwargs, forbids, deadline, keep_graph=bool(inputs))
        if not inputs:
            return call.run()
    outputs = _Differentiable.apply(call, *inputs)
    with course_checks._forbids_lifted():
        mapping = {id(plain): connected for plain, connected in zip(call.output_tensors, outputs)}
        return _replace_tensors(call.result, mapping)


class _RemoteCall:
    def __init__(self, kernel: Kernel, name: str, args: tuple, kwargs: dict, forbids: list, deadline: Deadline, keep_graph: bool) -> None:
        self.kernel, self.name, self.args, self.kwargs = kernel, name, args, kwargs
        self.forbids, self.deadline, self.keep_graph = forbids, deadline, keep_graph
        # Read now: inside an autograd Function's forward, grad mode is always off.
        self.grad_enabled = torch.is_grad_enabled()
        self.result: Any = None
        self.output_tensors: list[torch.Tensor] = []
        self.outputs_need_grad: list[bool] = []
        self.graph: int | None = None

    def run(self) -> Any:
        encoder = _encoder()
        try:
            tree = encoder.encode((tuple(self.args), dict(self.kwargs)))
        except wire.Unencodable as err:
            raise Interrupted(UNREADABLE, f"the test passed {err} to {self.name}, which cannot cross to the student's process") from None
        sent_models = [m for m in _models_in((self.args, self.kwargs))]
        header = {
            "op": "call",
            "name": self.name,
            "args": tree,
            "forbids": self.forbids,
            "keep_graph": self.keep_graph,
            "grad_enabled": self.grad_enabled,
        }
        reply, blobs = self.kernel.request(header, encoder.blobs, self.deadline.left())
        if not reply.get("ok"):
            raise student_exception(reply.get("error"))
        if self.forbids:
            _refuse_forbidden_calls(reply, self.forbids)
        if "unreadable" in reply:
            raise Interrupted(UNREADABLE, f"{str(reply['unreadable'])[:300]}: student functions must return tensors, arrays, numbers, strings or lists/tuples/dicts of those")
        try:
            result = wire.decode(reply.get("result"), blobs, build_model=_model_builder(sent_models), resolve_callable=self._proxy)
            if "args_after" in reply:
                after = wire.decode(reply["args_after"], blobs, build_model=_state_collector, resolve_callable=self._proxy)
                changes = _take_back((self.args, self.kwargs), after)
                if changes:
                    course_checks.report_mutations(self.name, changes)
        except wire.WireError as err:
            raise Interrupted(PROTOCOL, f"the student's process sent a malformed value: {err}") from None
        self.result = result
        if self.keep_graph:
            self.graph = reply.get("graph")
            self.output_tensors = wire.tensors_in(result)
            need = reply.get("outputs_need_grad")
            if not isinstance(need, list) or len(need) != len(self.output_tensors):
                raise Interrupted(PROTOCOL, "the student's process sent a malformed graph")
            self.outputs_need_grad = [bool(n) for n in need]
        return result

    def _proxy(self, name: str) -> StudentFunction:
        return StudentFunction(self.kernel, name, self.deadline)

    def backward(self, grads: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
        tree, blobs = wire.encode(list(grads))
        reply, reply_blobs = self.kernel.request({"op": "backward", "graph": self.graph, "grads": tree}, blobs, self.deadline.left())
        if not reply.get("ok"):
            raise student_exception(reply.get("error"))
        try:
            result = wire.decode(reply.get("grads"), reply_blobs)
        except wire.WireError as err:
            raise Interrupted(PROTOCOL, f"the student's process sent malformed gradients: {err}") from None
        if not isinstance(result, list):
            raise Interrupted(PROTOCOL, "the student's process sent malformed gradients")
        return result


def _refuse_forbidden_calls(reply: dict, forbids: list) -> None:
    """Fail the call when the dispatcher events the worker saw show that a forbidden function
    ran, whatever name the student's code used to reach it (an alias, ``torch.ops.aten``)."""
    broken = reply.get("watch_broken")
    if broken is not None:
        raise course_checks.ForbiddenCallError(
            f"this exercise is from scratch, and the grader watches which library functions it calls, but {wire.safe_text(broken, 200)}"
        )
    events = reply.get("dispatched")
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        raise Interrupted(PROTOCOL, "the student's process did not say which library functions the call ran")
    for names, hint in forbids:
        found = course_checks.forbidden_event(events, list(names))
        if found is not None:
            event, qualname = found
            raise course_checks.ForbiddenCallError(
                course_checks.forbidden_call_message(f"{qualname} (torch ran {event})", hint)
            )


def _models_in(value: Any) -> list[wire.ModelSpec]:
    return [spec for spec in map(wire.model_origin, wire.leaves(value)) if spec is not None]


class _Differentiable(torch.autograd.Function):
    """Connects a remote call's tensor outputs to the grader's inputs for autograd."""

    @staticmethod
    def forward(ctx: Any, call: _RemoteCall, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with course_checks._forbids_lifted():
            call.run()
            outputs = []
            for tensor in call.output_tensors:
                plain = tensor.detach()
                outputs.append(plain)
            call.output_tensors = outputs
            call.result = _replace_tensors(call.result, {id(t): p for t, p in zip(wire.tensors_in(call.result), outputs)})
            ctx.call = call
            ctx.input_count = len(inputs)
            blocked = [o for o, need in zip(outputs, call.outputs_need_grad) if not need or not (o.is_floating_point() or o.is_complex())]
            sentinel = torch.zeros(())
            ctx.mark_non_differentiable(*blocked, sentinel)
            return (*outputs, sentinel)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple:
        call: _RemoteCall = ctx.call
        with course_checks._forbids_lifted():
            sent = [g if need else None for g, need in zip(grads[:-1], call.outputs_need_grad)]
            back = call.backward(sent)
        if len(back) != ctx.input_count:
            raise Interrupted(PROTOCOL, "the student's process sent the wrong number of gradients")
        return (None, *back)


def _replace_tensors(value: Any, mapping: dict[int, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        return mapping.get(id(value), value)
    if isinstance(value, list):
        return [_replace_tensors(v, mapping) for v in value]
    if isinstance(value, tuple) and not isinstance(value, torch.Size):
        return tuple(_replace_tensors(v, mapping) for v in value)
    if isinstance(value, dict):
        return {k: _replace_tensors(v, mapping) for k, v in value.items()}
    return value


def _take_back(arguments: tuple[tuple, dict], after: Any) -> list[str]:
    """Bring the student's in-place changes back where updating in place is the contract, and
    report, without copying, every other change the call made to its inputs.

    Updating in place is what a training step does to parameters: a model's state and a leaf
    tensor that requires grad (``p -= lr * p.grad``) come back.  Any other argument (a batch of
    logits, targets, a list) stays as the test made it, so that a reference the test computes
    from it afterwards is computed from what the test passed, never from what the student wrote;
    the change is returned in words for ``check_not_mutated`` and for the verdict's note."""
    args, kwargs = arguments
    if not (isinstance(after, tuple) and len(after) == 2 and isinstance(after[0], tuple) and isinstance(after[1], dict)):
        return []
    changes: list[str] = []
    named_after = dict(course_checks._argument_names(after[0], after[1]))
    for name, original in course_checks._argument_names(args, kwargs):
        if name in named_after:
            _take_back_value(original, named_after[name], name, changes, 0)
    return changes


def _take_back_value(original: Any, after: Any, where: str, changes: list[str], depth: int) -> None:
    if depth > wire.MAX_DEPTH:
        return
    if isinstance(original, torch.nn.Module) and isinstance(after, ModelState):
        wire.load_model_state(original, after.state, after.grads, after.training)
    elif isinstance(original, torch.Tensor) and original.is_leaf and original.requires_grad and isinstance(after, torch.Tensor):
        _copy_parameter(original, after)
    elif isinstance(original, (list, tuple)) and isinstance(after, (list, tuple)) and len(original) == len(after):
        for index, (a, b) in enumerate(zip(original, after)):
            _take_back_value(a, b, f"{where}[{index}]", changes, depth + 1)
    elif isinstance(original, dict) and isinstance(after, dict) and original.keys() == after.keys():
        for key in original:
            _take_back_value(original[key], after[key], f"{where}[{key!r}]", changes, depth + 1)
    elif isinstance(original, (torch.Tensor, np.ndarray, list, tuple, dict)):
        changes.extend(course_checks._changes(after, course_checks._snapshot(original), where))


def _copy_parameter(original: torch.Tensor, after: torch.Tensor) -> None:
    with torch.no_grad():
        if original.shape == after.shape and original.dtype == after.dtype:
            if not torch.equal(original.detach(), after.detach()):
                original.copy_(after)
        else:
            original.data = after.detach().clone()
    if original.requires_grad != after.requires_grad and (original.is_floating_point() or original.is_complex()):
        original.requires_grad_(after.requires_grad)
    if after.grad is None or after.grad.shape == original.shape:
        original.grad = after.grad


# -- running a test cell ---------------------------------------------------------


@dataclass
class Verdict:
    grade_id: str
    points: float
    passed: bool
    #: For the TA: exception type and full message.
    ename: str = ""
    message: str = ""
    #: For the student: the message, with expected values removed if the failing line is hidden.
    public_message: str = ""
    hidden: bool = False
    #: Set when the student's process could not answer (an ``Interrupted`` kind).
    interrupted: str | None = None

    @property
    def score(self) -> float:
        return float(self.points) if self.passed else 0.0

    def summary(self) -> str:
        """One line for grades.csv: ``Type: first line of the message``."""
        first = (self.message.strip().splitlines() or [""])[0]
        return f"{self.ename}: {first}".strip()


def hidden_lines(source: str) -> set[int]:
    """1-based line numbers inside hidden-test regions, markers included."""
    hidden, inside = set(), False
    for number, line in enumerate(source.splitlines(), start=1):
        stripped = line.strip()
        if stripped == HIDDEN_BEGIN:
            inside = True
        if inside:
            hidden.add(number)
        if stripped == HIDDEN_END:
            inside = False
    return hidden


def visible_source(source: str) -> str:
    """The test cell as the release shows it: hidden regions removed."""
    hidden = hidden_lines(source)
    return "\n".join(line for number, line in enumerate(source.splitlines(), start=1) if number not in hidden)


#: An expected value in a check's message: a number, nan/inf or a bracketed list of them.
#: Shapes are written "expected shape (...)" and dtypes "expected dtype ...", and stay.
_EXPECTED = re.compile(r"expected (?!shape |dtype |it |a |an |the )(?:[-+]?(?:\d[\d.]*(?:e[-+]?\d+)?|inf|nan)|\[[^\]]*\]|\([^)]*\)|tensor\([^)]*\))")


def redact(message: str) -> str:
    """A failed hidden check's message without the values it expected."""
    return _EXPECTED.sub("expected value not shown (hidden test)", message)


#: How many more roundings a GPU may accumulate than the CPU (set by grade.py).  The GPU
#: runs with TF32 off, so float32 results differ from the CPU's only by summation order.
CUDA_ROUNDINGS_SCALE = 10.0
roundings_scale = 1.0


def _scaled(check: Any) -> Any:
    """``check`` with its ``roundings`` (given or default) multiplied by ``roundings_scale``."""
    import inspect

    default = inspect.signature(check).parameters["roundings"].default

    @functools.wraps(check)
    def scaled(*args: Any, **kwargs: Any) -> Any:
        kwargs["roundings"] = kwargs.get("roundings", default) * roundings_scale
        return check(*args, **kwargs)

    return scaled


def trusted_namespace() -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "__test__", "__builtins__": builtins, "torch": torch, "np": np, "math": math, "F": F}
    for name in course_checks.TEST_CELL_NAMES:
        if hasattr(course_checks, name) and name not in namespace:
            value = getattr(course_checks, name)
            if callable(value) and getattr(value, "__module__", None) == "course_checks" and isinstance(value, type(hidden_lines)):
                value = wire.tag_factory(name, value)
            if roundings_scale != 1.0 and name in ("check_close", "check_each_close"):
                value = _scaled(value)
            namespace[name] = value
    return namespace


def _free_names(tree: ast.AST) -> frozenset[str]:
    """Names the cell reads but never binds, builtins aside: the student's, or the trusted namespace's."""
    loaded, bound = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {alias.asname or alias.name.split(".")[0] for alias in node.names}
    return frozenset(loaded - bound - set(dir(builtins)))


@functools.lru_cache(maxsize=512)
def _compiled_test(grade_id: str, source: str) -> tuple[Any, frozenset[int], frozenset[str]]:
    """A test cell's code, hidden lines and free names; the same for every submission, so worked out once.

    Raises SyntaxError for a test cell that does not compile."""
    filename = f"<test {grade_id}>"
    tree = ast.parse(source, filename=filename)
    return compile(tree, filename, "exec"), frozenset(hidden_lines(source)), _free_names(tree)


class _Unreadable:
    """Stands for a student value that could not cross; any use fails the test."""

    def __init__(self, name: str, why: str) -> None:
        self._why = f"{name} is {why}, which the grader cannot read"

    def _fail(self, *_: Any, **__: Any) -> Any:
        raise Interrupted(UNREADABLE, self._why)

    __call__ = __getattr__ = __getitem__ = __iter__ = __len__ = __bool__ = __eq__ = __float__ = __int__ = _fail
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __matmul__ = _fail
    __hash__ = None  # type: ignore[assignment]


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    """Interrupt trusted code that runs past the cell's limit (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def ring(_signum: int, _frame: Any) -> None:
        raise Interrupted(TIMEOUT, f"the test cell ran past its {seconds:g} s limit")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def _isolated_globals() -> Iterator[None]:
    """Seed the global RNGs the same for every student and leave the grader's state as it was."""
    torch_state, numpy_state, python_state = torch.get_rng_state(), np.random.get_state(), random.getstate()
    dtype, grad = torch.get_default_dtype(), torch.is_grad_enabled()
    stdout, stderr = sys.stdout, sys.stderr
    cuda_available = torch.cuda.is_available
    # The CPU generator only: torch.manual_seed would also queue a CUDA seeding, with a
    # formatted stack, for every test cell of every submission.  Tests run on the CPU.
    torch.random.default_generator.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    sys.stdout = sys.stderr = io.StringIO()
    # Student code runs on the CPU, so a test that picks its device from
    # torch.cuda.is_available() must pick the CPU too.
    torch.cuda.is_available = lambda: False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        torch.cuda.is_available = cuda_available
        sys.stdout, sys.stderr = stdout, stderr
        torch.set_rng_state(torch_state)
        np.random.set_state(numpy_state)
        random.setstate(python_state)
        torch.set_default_dtype(dtype)
        torch.set_grad_enabled(grad)


def _mutation_note(message: str) -> str:
    """A failed test also says which student functions changed their inputs in place (which the
    grader reported instead of copying back), unless the failure already says so."""
    changes = [c for c in dict.fromkeys(course_checks._REPORTED_MUTATIONS) if c.partition(": ")[2] not in message]
    if not changes or "changed its caller's input" in message:
        return ""
    more = f" (and {len(changes) - 2} more)" if len(changes) > 2 else ""
    return f"\nNote: {'; '.join(changes[:2])}{more}. The test used the inputs as it made them, not as they were changed."


def run_test(kernel: Kernel, grade_id: str, source: str, points: float, seconds: float) -> Verdict:
    """Run one trusted test cell against the student's code and decide pass or fail."""
    filename = f"<test {grade_id}>"
    try:
        code, hidden, free = _compiled_test(grade_id, source)
    except SyntaxError as err:
        return Verdict(grade_id, points, False, "SyntaxError", f"the test cell does not compile: {err}", "the test could not run", True)
    namespace = trusted_namespace()
    deadline = Deadline(seconds)
    course_checks._REPORTED_MUTATIONS.clear()
    try:
        # The alarm is a backstop for the trusted code; calls into the sandbox time out first.
        with _isolated_globals(), _alarm(seconds + 2):
            _fetch_names(kernel, sorted(free - namespace.keys()), namespace, deadline)
            exec(code, namespace)  # noqa: S102 - trusted test source from the gradebook
            if hasattr(kernel, "release_graphs"):
                kernel.release_graphs()
    except Interrupted as err:
        message = wire.safe_text(err, 8000)
        return Verdict(grade_id, points, False, "NotGraded", message, message, _failed_line(err, filename) in hidden, err.kind)
    except Exception as err:  # noqa: BLE001 - a failing check or a student exception is the verdict
        is_hidden = _failed_line(err, filename) in hidden or not _failed_line(err, filename)
        ename, message = wire.safe_text(type(err).__name__, 200), wire.safe_text(err, 8000)
        message += _mutation_note(message)
        public = redact(message) if is_hidden and isinstance(err, AssertionError) else message
        return Verdict(grade_id, points, False, ename, message, public[:2000], is_hidden)
    return Verdict(grade_id, points, True)


def _fetch_names(kernel: Kernel, names: list[str], namespace: dict[str, Any], deadline: Deadline) -> None:
    if not names:
        return
    reply, blobs = kernel.request({"op": "lookup", "names": names}, [], deadline.left())
    answers = reply.get("names")
    if not isinstance(answers, dict):
        raise Interrupted(PROTOCOL, "the student's process sent a malformed answer")
    builder = _model_builder([])
    for name in names:
        answer = answers.get(name)
        if not isinstance(answer, dict):
            continue
        kind = answer.get("kind")
        if kind == "callable":
            namespace[name] = StudentFunction(kernel, name, deadline)
        elif kind == "value":
            try:
                namespace[name] = wire.decode(answer.get("value"), blobs, build_model=builder)
            except wire.WireError as err:
                raise Interrupted(PROTOCOL, f"the student's process sent a malformed value: {err}") from None
        elif kind == "unreadable":
            namespace[name] = _Unreadable(name, str(answer.get("type", "an object"))[:200])


def _failed_line(error: BaseException, filename: str) -> int:
    line = 0
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
