"""The only format student values travel in: JSON plus raw tensor bytes.

Nothing here can execute code when decoded.  A value becomes a JSON tree in
which every non-primitive is a small dict tagged with ``"t"``; tensor and
array contents go into separate binary blobs as dtype + shape + raw bytes.
Decoding builds only plain ``torch.Tensor``, ``numpy.ndarray`` and builtin
containers and scalars, and checks every size against limits before it
allocates.  Models cross as the name of a factory in ``course_checks`` plus
its plain-data arguments and the state tensors, and are rebuilt on the other
side.

A frame on the wire is the magic ``AGW1`` + ``u32 header length`` + ``u64
total blob length`` + the JSON header + the blobs.
"""

from __future__ import annotations

import json
import math
import re
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch

#: A frame's JSON header, and its whole size, may not exceed these.
MAX_HEADER_BYTES = 16 * 2**20
DEFAULT_MAX_FRAME_BYTES = 256 * 2**20
MAX_DEPTH = 64
MAX_NODES = 200_000
#: Parts of a decoded value with every shared reference counted as a copy.  A reply
#: of a few KB can nest references so that walking the value (comparing it, copying
#: it into a tensor) visits 2**64 parts; decoding refuses it before anything walks it.
MAX_EXPANDED = 1_000_000
MAX_NDIM = 16
MAX_INT_DIGITS = 4000

_MAGIC = b"AGW1"
_PREFIX = struct.Struct("<4sIQ")

TORCH_DTYPES = {
    name: getattr(torch, name)
    for name in (
        "bool", "uint8", "int8", "int16", "int32", "int64", "float16", "bfloat16", "float32", "float64",
        "complex64", "complex128", "uint16", "uint32", "uint64",
    )
    if hasattr(torch, name)
}
_TORCH_DTYPE_NAMES = {dtype: name for name, dtype in TORCH_DTYPES.items()}
#: numpy dtype kinds that are plain numbers (no objects, strings or records).
_NUMPY_KINDS = set("biufc")


class WireError(Exception):
    """A frame or value broke the format or its limits."""


class FrameTooLarge(WireError):
    """A frame announced more bytes than the receiver accepts."""


class Unencodable(TypeError):
    """A value of a type that may not cross the boundary."""


@dataclass
class ModelSpec:
    """How to rebuild a small model: a course_checks factory and its arguments."""

    factory: str
    args: tuple
    kwargs: dict


# -- frames ------------------------------------------------------------------


def pack(header: dict, blobs: list[bytes]) -> bytes:
    head = json.dumps(header, allow_nan=False, separators=(",", ":")).encode()
    total = sum(len(b) for b in blobs)
    return b"".join([_PREFIX.pack(_MAGIC, len(head), total), head, *blobs])


def send(sock: socket.socket, header: dict, blobs: list[bytes] = (), deadline: float | None = None) -> None:
    header = dict(header, blobs=[len(b) for b in blobs])
    data = pack(header, list(blobs))
    if deadline is None:
        sock.settimeout(None)
    else:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no time left to send")
        sock.settimeout(remaining)
    try:
        sock.sendall(data)
    except socket.timeout as err:
        raise TimeoutError("the other side stopped reading") from err


def _recv_exact(sock: socket.socket, size: int, deadline: float | None) -> bytes:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no reply in time")
            sock.settimeout(remaining)
        else:
            sock.settimeout(None)
        try:
            count = sock.recv_into(view[got:], min(size - got, 1 << 20))
        except socket.timeout as err:
            raise TimeoutError("no reply in time") from err
        if count == 0:
            raise EOFError("the other side closed the channel")
        got += count
    return bytes(buffer)


def recv(sock: socket.socket, deadline: float | None = None, max_frame: int = DEFAULT_MAX_FRAME_BYTES) -> tuple[dict, list[bytes]]:
    """One frame: its header and blobs.  Raises TimeoutError, EOFError or WireError."""
    magic, head_len, total = _PREFIX.unpack(_recv_exact(sock, _PREFIX.size, deadline))
    if magic != _MAGIC or head_len > MAX_HEADER_BYTES:
        raise WireError("not a frame of this protocol")
    if head_len + total > max_frame:
        raise FrameTooLarge(f"frame of {head_len + total} bytes exceeds the limit of {max_frame}")
    try:
        header = json.loads(_recv_exact(sock, head_len, deadline))
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise WireError(f"frame header is not JSON: {err}") from None
    sizes = header.get("blobs") if isinstance(header, dict) else None
    if not isinstance(sizes, list) or not all(isinstance(s, int) and s >= 0 for s in sizes) or sum(sizes) != total:
        raise WireError("frame header does not describe its blobs")
    data = _recv_exact(sock, total, deadline) if total else b""
    blobs, offset = [], 0
    for size in sizes:
        blobs.append(data[offset : offset + size])
        offset += size
    return header, blobs


# -- values ------------------------------------------------------------------


class Encoder:
    """Turns a value into a JSON tree and blobs.

    ``model_spec`` returns a ModelSpec for a model built by a course factory
    (else None); ``callable_name`` names a proxy for a student function
    (else None).  Objects seen twice are sent once and referenced.
    """

    def __init__(
        self,
        model_spec: Callable[[Any], ModelSpec | None] | None = None,
        callable_name: Callable[[Any], str | None] = lambda _: None,
    ) -> None:
        self.blobs: list[bytes] = []
        self._memo: dict[int, int] = {}
        self._keep: list[Any] = []
        self._count = 0
        self._active: set[int] = set()
        self._model_spec = model_spec or model_origin
        self._callable_name = callable_name

    def encode(self, value: Any, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise Unencodable("value nested too deeply")
        if value is None or isinstance(value, (bool, str)):
            return value
        if type(value) is int or (isinstance(value, int) and not isinstance(value, (bool, np.integer))):
            value = int(value)
            if abs(value) < 2**53:
                return value
            return {"t": "int", "v": str(value)}
        if isinstance(value, float) and not isinstance(value, np.floating):
            value = float(value)
            return value if math.isfinite(value) else {"t": "float", "v": repr(value)}
        key = id(value)
        if key in self._memo:
            return {"t": "ref", "i": self._memo[key]}
        if key in self._active:
            raise Unencodable("value contains itself")
        self._active.add(key)
        try:
            node = self._encode_object(value, depth)
        finally:
            self._active.discard(key)
        if isinstance(node, dict) and node.get("t") in _REFERABLE:
            node["id"] = self._count
            self._memo[key] = self._count
            self._keep.append(value)
            self._count += 1
        return node

    def _encode_object(self, value: Any, depth: int) -> Any:
        if isinstance(value, torch.Tensor):
            return self._tensor(value, depth)
        if isinstance(value, np.ndarray):
            return self._array(value)
        if isinstance(value, np.generic):
            array = np.asarray(value)
            if array.dtype.kind not in _NUMPY_KINDS:
                raise Unencodable(f"numpy scalar of dtype {array.dtype}")
            return {"t": "npscalar", "dtype": array.dtype.str, "b": self._blob(array.tobytes())}
        if isinstance(value, torch.Size):
            return {"t": "size", "v": [int(v) for v in value]}
        if isinstance(value, (list, tuple)):
            kind = "list" if isinstance(value, list) else "tuple"
            return {"t": kind, "v": [self.encode(v, depth + 1) for v in value]}
        if isinstance(value, dict):
            return {"t": "dict", "k": [self.encode(k, depth + 1) for k in value], "v": [self.encode(v, depth + 1) for v in value.values()]}
        if isinstance(value, (set, frozenset)):
            return {"t": "set" if isinstance(value, set) else "frozenset", "v": [self.encode(v, depth + 1) for v in value]}
        if isinstance(value, complex):
            return {"t": "complex", "re": self.encode(value.real), "im": self.encode(value.imag)}
        if isinstance(value, torch.dtype):
            if value not in _TORCH_DTYPE_NAMES:
                raise Unencodable(f"torch dtype {value}")
            return {"t": "dtype", "v": _TORCH_DTYPE_NAMES[value]}
        if isinstance(value, np.dtype):
            if value.kind not in _NUMPY_KINDS:
                raise Unencodable(f"numpy dtype {value}")
            return {"t": "npdtype", "v": value.str}
        if isinstance(value, torch.device):
            return {"t": "device", "v": str(value)}
        if isinstance(value, slice):
            return {"t": "slice", "v": [self.encode(value.start), self.encode(value.stop), self.encode(value.step)]}
        if value is Ellipsis:
            return {"t": "ellipsis"}
        if isinstance(value, bytes):
            return {"t": "bytes", "b": self._blob(bytes(value))}
        if isinstance(value, torch.nn.Module):
            return self._model(value, depth)
        name = self._callable_name(value)
        if name is not None:
            return {"t": "fn", "v": name}
        raise Unencodable(f"a {type(value).__module__}.{type(value).__qualname__}")

    def _blob(self, data: bytes) -> int:
        self.blobs.append(data)
        return len(self.blobs) - 1

    def _tensor(self, value: torch.Tensor, depth: int) -> dict:
        if value.layout != torch.strided or value.is_quantized or value.is_nested:
            raise Unencodable(f"a {value.layout} tensor")
        if value.dtype not in _TORCH_DTYPE_NAMES:
            raise Unencodable(f"a tensor of dtype {value.dtype}")
        data = value.detach()
        if data.device.type != "cpu":
            data = data.cpu()
        data = data.resolve_conj().resolve_neg().contiguous()
        raw = data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b""
        node = {
            "t": "tensor",
            "dtype": _TORCH_DTYPE_NAMES[value.dtype],
            "shape": list(value.shape),
            "b": self._blob(raw),
            "rg": bool(value.requires_grad),
        }
        if isinstance(value, torch.nn.Parameter):
            node["param"] = True
        grad = value.grad if value.is_leaf else None
        if grad is not None:
            node["grad"] = self._tensor(grad, depth + 1)
        return node

    def _array(self, value: np.ndarray) -> dict:
        if value.dtype.kind not in _NUMPY_KINDS or value.dtype.fields is not None:
            raise Unencodable(f"a numpy array of dtype {value.dtype}")
        data = np.ascontiguousarray(value)
        return {"t": "ndarray", "dtype": data.dtype.str, "shape": list(data.shape), "b": self._blob(data.tobytes())}

    def _model(self, value: torch.nn.Module, depth: int) -> dict:
        spec = self._model_spec(value)
        if spec is None:
            raise Unencodable(f"a {type(value).__qualname__} model not built by a course_checks factory")
        state = {name: tensor for name, tensor in value.state_dict(keep_vars=True).items()}
        grads = {name: p.grad for name, p in value.named_parameters() if p.grad is not None}
        return {
            "t": "model",
            "factory": spec.factory,
            "args": self.encode(list(spec.args), depth + 1),
            "kwargs": self.encode(dict(spec.kwargs), depth + 1),
            "state": {name: self._tensor(t, depth + 1) for name, t in state.items()},
            "grads": {name: self._tensor(g, depth + 1) for name, g in grads.items()},
            "training": [bool(m.training) for m in value.modules()],
        }


_REFERABLE = {"tensor", "ndarray", "list", "tuple", "dict", "set", "frozenset", "model"}


class Decoder:
    """Builds values from a JSON tree and blobs, checking every limit first.

    ``build_model(spec, state)`` rebuilds a model from a factory name, its
    arguments and state tensors (and raises if it can't); ``resolve_callable``
    turns a student-function reference into something callable.
    """

    def __init__(
        self,
        blobs: list[bytes],
        build_model: Callable[[ModelSpec, dict, dict, Any], Any] | None = None,
        resolve_callable: Callable[[str], Any] | None = None,
    ) -> None:
        self.blobs = blobs
        self._nodes = 0
        self._expanded = 0
        self._refs: dict[int, Any] = {}
        self._ref_sizes: dict[int, int] = {}
        self._build_model = build_model
        self._resolve_callable = resolve_callable

    def decode(self, node: Any, depth: int = 0) -> Any:
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise WireError("value has too many parts")
        if depth > MAX_DEPTH:
            raise WireError("value nested too deeply")
        if node is None or isinstance(node, (bool, str, float)):
            return node
        if isinstance(node, int):
            return node
        if not isinstance(node, dict) or not isinstance(node.get("t"), str):
            raise WireError("malformed value")
        kind = node["t"]
        if kind == "ref":
            index = node.get("i")
            if not isinstance(index, int) or index not in self._refs:
                raise WireError("dangling reference")
            self._grow(self._ref_sizes[index])
            return self._refs[index]
        self._grow(1)
        before = self._expanded
        value = self._decode_kind(kind, node, depth)
        if kind in _REFERABLE:
            index = node.get("id")
            if not isinstance(index, int) or index in self._refs:
                raise WireError("bad object id")
            self._refs[index] = value
            self._ref_sizes[index] = self._expanded - before + 1
        return value

    def _grow(self, parts: int) -> None:
        self._expanded += parts
        if self._expanded > MAX_EXPANDED:
            raise WireError("value has too many parts once its shared references are expanded")

    def _items(self, node: dict, key: str = "v") -> list:
        items = node.get(key)
        if not isinstance(items, list):
            raise WireError("malformed container")
        return items

    def _decode_kind(self, kind: str, node: dict, depth: int) -> Any:
        if kind == "int":
            digits = node.get("v")
            if not isinstance(digits, str) or len(digits) > MAX_INT_DIGITS:
                raise WireError("bad integer")
            try:
                return int(digits)
            except ValueError:
                raise WireError("bad integer") from None
        if kind == "float":
            text = node.get("v")
            if text not in ("nan", "inf", "-inf"):
                raise WireError("bad float")
            return float(text)
        if kind == "list":
            return [self.decode(v, depth + 1) for v in self._items(node)]
        if kind == "tuple":
            return tuple(self.decode(v, depth + 1) for v in self._items(node))
        if kind in ("set", "frozenset"):
            items = [self.decode(v, depth + 1) for v in self._items(node)]
            try:
                return set(items) if kind == "set" else frozenset(items)
            except TypeError:
                raise WireError("unhashable set member") from None
        if kind == "dict":
            keys, values = self._items(node, "k"), self._items(node, "v")
            if len(keys) != len(values):
                raise WireError("malformed dict")
            out = {}
            for k, v in zip(keys, values):
                key = self.decode(k, depth + 1)
                try:
                    hash(key)
                except TypeError:
                    raise WireError("unhashable dict key") from None
                out[key] = self.decode(v, depth + 1)
            return out
        if kind == "size":
            return torch.Size(self._shape(node.get("v")))
        if kind == "complex":
            re, im = self.decode(node.get("re"), depth + 1), self.decode(node.get("im"), depth + 1)
            if not isinstance(re, float) or not isinstance(im, float):
                raise WireError("bad complex")
            return complex(re, im)
        if kind == "dtype":
            if node.get("v") not in TORCH_DTYPES:
                raise WireError("unknown dtype")
            return TORCH_DTYPES[node["v"]]
        if kind == "npdtype":
            return self._np_dtype(node.get("v"))
        if kind == "device":
            if node.get("v") not in ("cpu", "meta") and not str(node.get("v")).startswith("cuda"):
                raise WireError("bad device")
            return torch.device(node["v"])
        if kind == "slice":
            parts = [self.decode(v, depth + 1) for v in self._items(node)]
            if len(parts) != 3 or not all(p is None or isinstance(p, int) for p in parts):
                raise WireError("bad slice")
            return slice(*parts)
        if kind == "ellipsis":
            return Ellipsis
        if kind == "bytes":
            return self._raw(node)
        if kind == "tensor":
            return self._tensor(node)
        if kind == "ndarray":
            dtype = self._np_dtype(node.get("dtype"))
            shape = self._shape(node.get("shape"))
            raw = self._raw(node, math.prod(shape) * dtype.itemsize)
            return np.frombuffer(bytearray(raw), dtype=dtype).reshape(shape) if raw else np.zeros(shape, dtype=dtype)
        if kind == "npscalar":
            dtype = self._np_dtype(node.get("dtype"))
            raw = self._raw(node, dtype.itemsize)
            return np.frombuffer(raw, dtype=dtype)[0]
        if kind == "model":
            return self._model(node, depth)
        if kind == "fn":
            if self._resolve_callable is None or not isinstance(node.get("v"), str):
                raise WireError("unexpected function reference")
            return self._resolve_callable(node["v"])
        raise WireError(f"unknown value kind {kind!r}")

    def _np_dtype(self, text: Any) -> np.dtype:
        if not isinstance(text, str) or len(text) > 8:
            raise WireError("bad numpy dtype")
        try:
            dtype = np.dtype(text)
        except TypeError:
            raise WireError("bad numpy dtype") from None
        if dtype.kind not in _NUMPY_KINDS or dtype.fields is not None or dtype.subdtype is not None:
            raise WireError("numpy dtype not allowed")
        return dtype

    def _shape(self, shape: Any) -> tuple[int, ...]:
        if not isinstance(shape, list) or len(shape) > MAX_NDIM:
            raise WireError("bad shape")
        if not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**48 for s in shape):
            raise WireError("bad shape")
        return tuple(shape)

    def _raw(self, node: dict, expected: int | None = None) -> bytes:
        index = node.get("b")
        if not isinstance(index, int) or not 0 <= index < len(self.blobs):
            raise WireError("missing data")
        raw = self.blobs[index]
        if expected is not None and len(raw) != expected:
            raise WireError("data size does not match dtype and shape")
        return raw

    def _tensor(self, node: dict) -> torch.Tensor:
        if node.get("t") != "tensor":
            raise WireError("expected a tensor")
        name = node.get("dtype")
        if name not in TORCH_DTYPES:
            raise WireError("unknown dtype")
        dtype = TORCH_DTYPES[name]
        shape = self._shape(node.get("shape"))
        itemsize = torch.empty((), dtype=dtype).element_size()
        raw = self._raw(node, math.prod(shape) * itemsize)
        if raw:
            tensor = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype).reshape(shape)
        else:
            tensor = torch.zeros(shape, dtype=dtype)
        if node.get("param"):
            tensor = torch.nn.Parameter(tensor, requires_grad=bool(node.get("rg")))
        elif node.get("rg") is True and (tensor.is_floating_point() or tensor.is_complex()):
            tensor.requires_grad_(True)
        if "grad" in node:
            grad = self._tensor(node["grad"])
            if grad.shape != tensor.shape:
                raise WireError("gradient shape does not match its tensor")
            tensor.grad = grad.to(tensor.dtype) if grad.dtype != tensor.dtype else grad
        return tensor

    def _model(self, node: dict, depth: int) -> Any:
        if self._build_model is None:
            raise WireError("unexpected model")
        factory = node.get("factory")
        if not isinstance(factory, str):
            raise WireError("bad model factory")
        args = self.decode(node.get("args"), depth + 1)
        kwargs = self.decode(node.get("kwargs"), depth + 1)
        if not isinstance(args, list) or not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
            raise WireError("bad model arguments")
        state, grads = node.get("state"), node.get("grads")
        if not isinstance(state, dict) or not isinstance(grads, dict):
            raise WireError("bad model state")
        state = {str(k): self._tensor(v) for k, v in state.items()}
        grads = {str(k): self._tensor(v) for k, v in grads.items()}
        training = node.get("training", True)
        if not isinstance(training, (bool, list)) or (isinstance(training, list) and len(training) > MAX_NODES):
            raise WireError("bad model mode")
        return self._build_model(ModelSpec(factory, tuple(args), kwargs), state, grads, training)


def encode(value: Any, **kwargs: Any) -> tuple[Any, list[bytes]]:
    encoder = Encoder(**kwargs)
    tree = encoder.encode(value)
    return tree, encoder.blobs


def decode(tree: Any, blobs: list[bytes], **kwargs: Any) -> Any:
    return Decoder(blobs, **kwargs).decode(tree)


_SURROGATES = re.compile("[\ud800-\udfff]")


def safe_text(value: Any, limit: int = 100_000) -> str:
    """``value`` as text that any UTF-8 writer accepts: lone surrogates become U+FFFD, cut at ``limit``."""
    if value is None:
        return ""
    try:
        text = value if isinstance(value, str) else str(value)
    except Exception:  # noqa: BLE001 - a value whose __str__ fails is still reported
        text = f"<{type(value).__name__} that cannot be printed>"
    return _SURROGATES.sub("\ufffd", text[:limit])


def checked_error(error: Any) -> dict:
    """An error record from the other side, reduced to what the grader reads: plain, bounded, safe text.

    ``{"mro": [[module, qualname], ...], "message": str, "traceback": str}``, whatever arrived.
    """
    if not isinstance(error, dict):
        return {"mro": [["builtins", "Exception"]], "message": "the student's code failed", "traceback": ""}
    mro = []
    parts = error.get("mro")
    for part in parts[:32] if isinstance(parts, list) else []:
        if isinstance(part, list) and len(part) == 2:
            mro.append([safe_text(part[0], 200), safe_text(part[1], 200)])
    return {
        "mro": mro or [["builtins", "Exception"]],
        "message": safe_text(error.get("message"), 4000),
        "traceback": safe_text(error.get("traceback"), 20_000),
    }


def encode_error(error: BaseException, traceback_text: str = "") -> dict:
    """What the other side needs to re-raise an exception by type."""
    mro = [[cls.__module__, cls.__qualname__] for cls in type(error).__mro__]
    try:
        message = str(error)
    except Exception:  # noqa: BLE001 - a hostile __str__ must not break the channel
        message = "<message could not be read>"
    return {"mro": mro[:32], "message": message[:4000], "traceback": traceback_text[-8000:]}


# -- models and autograd helpers shared by both sides ------------------------

_ORIGIN = "_course_factory_origin"


def tag_factory(name: str, factory: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a course_checks function so a model it returns remembers how it was built."""
    import functools

    @functools.wraps(factory)
    def build(*args: Any, **kwargs: Any) -> Any:
        result = factory(*args, **kwargs)
        if isinstance(result, torch.nn.Module):
            object.__setattr__(result, _ORIGIN, ModelSpec(name, tuple(args), dict(kwargs)))
        return result

    build.__wrapped_factory__ = factory  # type: ignore[attr-defined]
    return build


def model_origin(model: Any) -> ModelSpec | None:
    spec = getattr(model, _ORIGIN, None) if isinstance(model, torch.nn.Module) else None
    return spec if isinstance(spec, ModelSpec) else None


def set_model_origin(model: torch.nn.Module, spec: ModelSpec) -> None:
    object.__setattr__(model, _ORIGIN, spec)


def load_model_state(model: torch.nn.Module, state: dict, grads: dict, training: Any) -> None:
    """Give ``model`` exactly the sent parameters, buffers, gradients and train/eval flags."""
    own = model.state_dict(keep_vars=True)
    if set(own) != set(state):
        raise WireError("model state does not match the factory's model")
    with torch.no_grad():
        for name, target in own.items():
            value = state[name]
            if target.shape != value.shape or target.dtype != value.dtype:
                raise WireError(f"model entry {name} has the wrong shape or dtype")
            target.copy_(value)
    parameters = dict(model.named_parameters())
    if not set(grads) <= set(parameters):
        raise WireError("gradient for an unknown parameter")
    for name, parameter in parameters.items():
        grad = grads.get(name)
        if grad is not None and (grad.shape != parameter.shape or grad.dtype != parameter.dtype):
            raise WireError(f"gradient of {name} has the wrong shape or dtype")
        parameter.grad = grad
    modules = list(model.modules())
    if isinstance(training, list) and len(training) == len(modules):
        for module, flag in zip(modules, training):
            module.training = bool(flag)
    else:
        model.train(bool(training))


def leaves(value: Any) -> Iterator[Any]:
    """Everything inside plain lists, tuples and dicts, depth first, down to MAX_DEPTH."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            continue
        if isinstance(item, (list, tuple)):
            stack.extend((v, depth + 1) for v in reversed(item))
        elif isinstance(item, dict):
            stack.extend((v, depth + 1) for v in reversed(list(item.values())))
        else:
            yield item


def tensors_in(value: Any, *, only_grad: bool = False) -> list[torch.Tensor]:
    """Tensors inside plain containers, in a fixed order, each once (models are skipped)."""
    found: list[torch.Tensor] = []
    seen: set[int] = set()
    for item in leaves(value):
        if isinstance(item, torch.Tensor) and id(item) not in seen and (not only_grad or item.requires_grad):
            seen.add(id(item))
            found.append(item)
    return found


def grad_inputs(value: Any) -> list[torch.Tensor]:
    """The tensors a gradient can flow back to: floating tensors that require grad."""
    return [t for t in tensors_in(value, only_grad=True) if t.is_floating_point() or t.is_complex()]
