"""The wire format: what crosses between a student's process and the grader, and what is refused."""

import json
import math
import socket
import struct
import time

import numpy as np
import pytest
import torch

from autograder import wire


def roundtrip(value, **kwargs):
    tree, blobs = wire.encode(value)
    json.dumps(tree, allow_nan=False)  # the tree is plain JSON
    return wire.decode(tree, blobs, **kwargs)


def test_plain_values_keep_their_types():
    value = {
        "ints": [0, -3, 2**70], "floats": (0.1, math.inf, -math.inf), "text": "é", "flags": [True, False, None],
        7: "int key", (1, 2): "tuple key", "set": {1, 2}, "complex": 1 + 2j, "nested": [[[]]], "slice": slice(1, None, 2),
    }
    back = roundtrip(value)
    assert back == value
    assert isinstance(back["floats"], tuple) and isinstance(back["ints"], list)
    assert math.isnan(roundtrip(math.nan))


def test_tensors_and_arrays_keep_dtype_shape_values_and_grads():
    x = torch.arange(12, dtype=torch.float64).reshape(3, 4).t()  # non-contiguous on purpose
    leaf = torch.ones(3, requires_grad=True)
    leaf.grad = torch.full((3,), 2.0)
    values = [x, torch.tensor(3), torch.zeros(0, 5), torch.tensor([True, False]), torch.ones(2, dtype=torch.bfloat16), leaf,
              np.arange(6, dtype=np.int32).reshape(2, 3), np.float32(1.5), torch.float16, np.dtype("float64"), torch.Size([2, 3])]
    back = roundtrip(values)
    assert torch.equal(back[0], x) and back[0].dtype == torch.float64
    assert back[1].shape == () and back[2].shape == (0, 5) and back[3].dtype == torch.bool
    assert back[4].dtype == torch.bfloat16
    assert back[5].requires_grad and torch.equal(back[5].grad, leaf.grad)
    assert back[6].dtype == np.int32 and np.array_equal(back[6], values[6])
    assert back[7] == np.float32(1.5) and type(back[7]) is np.float32
    assert back[8] is torch.float16 and back[9] == np.dtype("float64") and back[10] == torch.Size([2, 3])


def test_shared_objects_stay_shared():
    x = torch.ones(2)
    a, b = roundtrip([x, x])
    assert a is b


def test_executable_and_unknown_objects_are_refused():
    class Sneaky:
        def __reduce__(self):
            return (print, ("pwned",))

    for value in (Sneaky(), lambda: 1, print, np.array([object()]), torch.nn.Linear(2, 2), iter([1])):
        with pytest.raises(wire.Unencodable):
            wire.encode(value)


def test_cycles_are_refused():
    loop = []
    loop.append(loop)
    with pytest.raises(wire.Unencodable):
        wire.encode(loop)


@pytest.mark.parametrize(
    "tree, blobs",
    [
        ({"t": "tensor", "dtype": "float32", "shape": [4], "b": 0}, [b"\0" * 15]),  # size mismatch
        ({"t": "tensor", "dtype": "float32", "shape": [2**40, 2**40], "b": 0}, [b""]),  # absurd shape
        ({"t": "tensor", "dtype": "object", "shape": [1], "b": 0}, [b"\0" * 8]),
        ({"t": "ndarray", "dtype": "|O", "shape": [1], "b": 0}, [b"\0" * 8]),
        ({"t": "ndarray", "dtype": "<f8", "shape": [-1], "b": 0}, [b""]),
        ({"t": "pickle", "v": "gASV"}, []),
        ({"t": "ref", "i": 5}, []),
        ({"t": "int", "v": "9" * 10_000}, []),
        ({"t": "model", "factory": "os.system", "args": [], "kwargs": {}, "state": {}, "grads": {}}, []),
        ({"t": "fn", "v": "print"}, []),
        ({"t": "list", "v": "notalist"}, []),
    ],
)
def test_malformed_or_oversized_values_are_rejected(tree, blobs):
    with pytest.raises(wire.WireError):
        wire.decode(tree, blobs)


def test_nesting_and_size_limits():
    deep = {"t": "list", "v": []}
    for _ in range(wire.MAX_DEPTH + 5):
        deep = {"t": "list", "v": [deep]}
    with pytest.raises(wire.WireError):
        wire.decode(deep, [])
    wide = {"t": "list", "v": [0] * (wire.MAX_NODES + 1)}
    with pytest.raises(wire.WireError):
        wire.decode(wide, [])


def test_frames_respect_the_size_limit_and_deadline():
    left, right = socket.socketpair()
    try:
        wire.send(left, {"op": "x"}, [b"a" * 1000])
        header, blobs = wire.recv(right, max_frame=2000)
        assert header["op"] == "x" and blobs == [b"a" * 1000]
        wire.send(left, {"op": "x"}, [b"a" * 5000])
        with pytest.raises(wire.FrameTooLarge):
            wire.recv(right, max_frame=2000)
    finally:
        left.close()
        right.close()
    left, right = socket.socketpair()
    try:
        left.sendall(struct.pack("<4sIQ", b"AGW1", 10, 0) + b"not json!!")
        with pytest.raises(wire.WireError):
            wire.recv(right)
        left.sendall(b"\xff" * 16)
        with pytest.raises(wire.WireError):
            wire.recv(right)
        with pytest.raises(TimeoutError):
            wire.recv(right, deadline=time.monotonic() + 0.2)
    finally:
        left.close()
        right.close()


def test_models_cross_as_factory_name_arguments_and_state():
    import course_checks

    make = wire.tag_factory("make_mlp", course_checks.make_mlp)
    model = make((3, 4, 2), seed=5)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    model(torch.ones(1, 3)).sum().backward()
    model.eval()
    built = []

    def build(spec, state, grads, training):
        assert spec == wire.ModelSpec("make_mlp", ((3, 4, 2),), {"seed": 5})
        rebuilt = course_checks.make_mlp(*spec.args, **spec.kwargs)
        wire.load_model_state(rebuilt, state, grads, training)
        built.append(rebuilt)
        return rebuilt

    back = roundtrip(model, build_model=build)
    assert built and not back.training
    for mine, theirs in zip(model.parameters(), back.parameters()):
        assert torch.equal(mine, theirs) and torch.equal(mine.grad, theirs.grad)


def test_shared_references_cannot_expand_into_an_exponential_value():
    # 40 levels of [x, x], each level a list holding the one below and a reference to it:
    # a tree of 80 nodes that expands to 2**40 leaves.
    chain = {"t": "list", "v": [1.0, 2.0], "id": 0}
    for level in range(1, 40):
        chain = {"t": "list", "v": [chain, {"t": "ref", "i": level - 1}], "id": level}
    with pytest.raises(wire.WireError, match="shared references"):
        wire.decode(chain, [])
    # Sharing within the limit still decodes, and stays shared.
    small = {"t": "list", "v": [{"t": "list", "v": [1.0], "id": 0}, {"t": "ref", "i": 0}], "id": 1}
    decoded = wire.decode(small, [])
    assert decoded == [[1.0], [1.0]] and decoded[0] is decoded[1]
