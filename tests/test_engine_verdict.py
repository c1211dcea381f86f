"""Trusted test cells against a live sandboxed worker: proxies, exceptions, mutation, autograd, models.

One worker serves the whole module (it is restarted once, by the timeout test).
"""

import pytest

from autograder import sandbox
from autograder.execute import KernelSession
from autograder.verdict import run_test

STUDENT = '''
import torch, numpy as np
import torch.nn.functional as F
from course_checks import *

def double(x):
    return 2 * x

def scale_in_place(x):
    x *= 3
    return x

def zero_and_match(x):
    x.zero_()
    return x + 1

def step_in_place(p, lr):
    with torch.no_grad():
        p -= lr * p.grad

def append_one(items):
    items.append(1)
    return len(items)

def picky(x):
    if x < 0:
        raise ValueError("negative")
    return x

class LabelError(ValueError):
    pass

def custom(x):
    raise LabelError("bad label 7")

def grad_on(x):
    x.requires_grad_()
    return x * 1

def sets_grad(x):
    x.grad = torch.ones_like(x)
    return x.detach() * 2

def subtract_on_leaf(x):
    x -= x.max()
    return x

def softmax_rows(z, dim=-1):
    return torch.softmax(z, dim=1)

def interrupt(x):
    raise KeyboardInterrupt

def uses_softplus(x):
    return F.softplus(x)

def sgd_step(model, lr):
    with torch.no_grad():
        for p in model.parameters():
            p -= lr * p.grad

def new_model(seed):
    return make_mlp((2, 3), seed=seed)

def apply(fn, x):
    return fn(x)

def give_lambda():
    return lambda: 1

def stuck(x):
    while True:
        pass

def loader_total(n):
    from torch.utils.data import DataLoader, TensorDataset
    loader = DataLoader(TensorDataset(torch.arange(float(n))), batch_size=3, num_workers=2)
    return sum(float(batch[0].sum()) for batch in loader)

q1_answer = "b"
weights = np.arange(4.0)
gen = (i for i in range(3))
'''


@pytest.fixture(scope="module")
def kernel():
    limits = sandbox.Limits(cell_seconds=5, notebook_seconds=60, memory_bytes=2 * 2**30)
    session = KernelSession(sandbox.prepare_scratch([]), limits, sandbox.sandbox_mode())
    record = session.run_cell(0, STUDENT)
    assert not [o for o in record.outputs if o["output_type"] == "error"], record.outputs
    yield session
    session.close()


def verdict(kernel, source, hidden=False):
    if hidden:
        source = "### BEGIN HIDDEN TESTS\n" + source + "\n### END HIDDEN TESTS"
    return run_test(kernel, "t", source, 1.0, 5.0)


def test_a_correct_function_passes_and_a_wrong_check_fails(kernel):
    assert verdict(kernel, "check_close(double(torch.tensor([1.0, 2.0])), torch.tensor([2.0, 4.0]), what='double')").passed
    failed = verdict(kernel, "check_close(double(torch.tensor([1.0])), torch.tensor([3.0]), what='double', hint='triple it')")
    assert not failed.passed and failed.ename == "AssertionError" and "triple it" in failed.message


def test_in_place_changes_to_inputs_are_reported_never_copied_into_the_test_s_values(kernel):
    result = verdict(kernel, "x = torch.ones(3)\ncheck_not_mutated(scale_in_place, x, what='scale_in_place')")
    assert not result.passed and "had 3 of 3 value(s) overwritten" in result.message
    # A reference the test computes from its input after the call is computed from what it passed:
    # a function that rewrites its input to match its own wrong answer gains nothing.
    cheat = verdict(kernel, "x = torch.ones(3)\ny = zero_and_match(x)\ncheck_close(y, x + 1, what='x + 1')")
    assert not cheat.passed and "Note: zero_and_match: argument 1 had 3 of 3 value(s) overwritten" in cheat.message
    assert verdict(kernel, "x = torch.ones(3)\nscale_in_place(x)\ncheck(bool((x == 1).all()), 'x is as the test made it')").passed
    assert verdict(kernel, "items = [0]\nn = append_one(items)\ncheck(items == [0] and n == 2, 'list as the test made it')").passed


def test_parameters_updated_in_place_come_back(kernel):
    # Updating a leaf that requires grad (p -= lr * p.grad) or a model is a training step's contract.
    step = ("p = torch.ones(3, requires_grad=True)\np.grad = torch.full((3,), 2.0)\nstep_in_place(p, 0.5)\n"
            "check(bool((p == 0).all()), 'p was stepped')")
    assert verdict(kernel, step).passed


def test_student_exceptions_are_reraised_by_type(kernel):
    assert verdict(kernel, "check_raises(ValueError, picky, -1, what='picky')").passed
    assert verdict(kernel, "check_raises(ValueError, custom, 1, what='custom')").passed
    wrong = verdict(kernel, "check_raises(TypeError, picky, -1, what='picky')")
    assert not wrong.passed and "raised ValueError" in wrong.message
    named = verdict(kernel, "custom(1)")
    assert named.ename == "LabelError" and "bad label 7" in named.message
    # A KeyboardInterrupt from student code must not reach the grader as one.
    stopped = verdict(kernel, "check_raises(ValueError, interrupt, 1, what='interrupt')")
    assert not stopped.passed and "KeyboardInterrupt" in stopped.message


def test_open_forbid_blocks_apply_inside_the_sandbox(kernel):
    forbidden = verdict(kernel, "with forbid('torch.nn.functional.softplus', hint='write it yourself'):\n    uses_softplus(torch.ones(2))")
    assert not forbidden.passed and forbidden.ename == "ForbiddenCallError" and "write it yourself" in forbidden.message
    assert verdict(kernel, "check_close(uses_softplus(torch.zeros(1)), torch.log(torch.tensor([2.0])), what='softplus')").passed
    # Forbidding what the grader itself uses to copy tensors must not break the copying.
    machinery = "with forbid('torch.Tensor.contiguous', 'torch.frombuffer', 'torch.Tensor.reshape', 'torch.equal'):\n    y = double(torch.ones(2, 2).t())"
    assert verdict(kernel, machinery + "\ncheck(y.shape == (2, 2), 'shape')").passed


def test_gradients_flow_back_through_a_student_function(kernel):
    source = """
leaf = torch.linspace(-1, 1, 5, requires_grad=True)
double(leaf).pow(2).sum().backward()
check_close(leaf.grad, 8 * leaf.detach(), what='gradient through double')
"""
    assert verdict(kernel, source).passed


def test_models_cross_and_their_updates_come_back(kernel):
    source = """
model = make_mlp((3, 4, 2), seed=1)
reference = make_mlp((3, 4, 2), seed=1)
x = torch.linspace(-1, 1, 6).reshape(2, 3)
for m in (model, reference):
    m(x).pow(2).sum().backward()
sgd_step(model, 0.1)
with torch.no_grad():
    expected = [p - 0.1 * p.grad for p in reference.parameters()]
check_each_close(list(model.parameters()), expected, what='after one step')
returned = new_model(3)
check_each_close(list(returned.parameters()), list(make_mlp((2, 3), seed=3).parameters()), what='returned model')
"""
    assert verdict(kernel, source).passed


def test_values_functions_and_unreadable_objects(kernel):
    assert verdict(kernel, "check(q1_answer == 'b', 'answer')\ncheck(weights.sum() == 6.0, 'weights')").passed
    assert verdict(kernel, "check_close(apply(double, torch.ones(1)), torch.tensor([2.0]), what='apply')").passed
    lam = verdict(kernel, "give_lambda()")
    assert not lam.passed and lam.interrupted == "unreadable"
    gen_ = verdict(kernel, "check(list(gen) == [0, 1, 2], 'gen')")
    assert not gen_.passed and "cannot read" in gen_.message
    assert verdict(kernel, "never_defined(1)").ename == "NameError"


def test_dataloader_workers_run_in_the_sandbox(kernel):
    assert verdict(kernel, "check(loader_total(10) == 45.0, 'sum over a DataLoader with worker processes')").passed


def test_hidden_failures_do_not_show_expected_values(kernel):
    hidden = verdict(kernel, "check_close(double(torch.tensor([1.0])), torch.tensor([3.25]), what='double', hint='triple it')", hidden=True)
    assert not hidden.passed and hidden.hidden
    assert "3.25" in hidden.message and "3.25" not in hidden.public_message and "triple it" in hidden.public_message
    visible = verdict(kernel, "check_close(double(torch.tensor([1.0])), torch.tensor([3.25]), what='double')")
    assert not visible.hidden and "3.25" in visible.public_message


def test_a_hang_fails_its_test_even_under_check_raises_and_the_kernel_comes_back(kernel):
    result = verdict(kernel, "check_raises(Exception, stuck, 1, what='stuck')")
    assert not result.passed and result.interrupted == "timeout"
    assert any(event.kind == "timeout" for event in kernel.events)
    # A fresh worker replayed the cells: everything else still works.
    assert verdict(kernel, "check_close(double(torch.tensor([1.0])), torch.tensor([2.0]), what='double')").passed


def test_requires_grad_and_grad_changed_in_the_sandbox_are_seen(kernel):
    switched = verdict(kernel, "check_not_mutated(grad_on, torch.ones(3), what='grad_on')")
    assert not switched.passed and "switched to requires_grad=True" in switched.message
    graded = verdict(kernel, "check_not_mutated(sets_grad, torch.ones(2, requires_grad=True), what='sets_grad')")
    assert not graded.passed and ".grad was set" in graded.message
    assert verdict(kernel, "check_not_mutated(double, torch.ones(2, requires_grad=True), what='double')").passed


def test_a_failing_student_call_says_which_call_with_which_inputs(kernel):
    crashed = verdict(kernel, "picky(torch.tensor(-1.0))")
    assert not crashed.passed and crashed.ename == "ValueError"
    assert crashed.message == "picky(0-d tensor float32) raised ValueError: negative"
    # The exception proves its cause: named first.
    leaf = verdict(kernel, "subtract_on_leaf(torch.ones(2, 3, requires_grad=True))")
    assert leaf.message.startswith("Likely mistake: an in-place operation")
    assert "subtract_on_leaf(tensor(2, 3) float32, requires_grad)" in leaf.message
    # check_raises still sees the student's own exception type.
    assert verdict(kernel, "check_raises(ValueError, picky, -1, what='picky')").passed


def test_a_mistake_is_named_only_when_the_answer_matches_its_signature(kernel):
    source = """
z = torch.arange(12.0).reshape(3, 4) / 5
check_close(softmax_rows(z, dim=0), torch.softmax(z, dim=0), what='softmax along dim 0',
            mistakes={'the dim argument is ignored (dim=1 hard-coded)': torch.softmax(z, dim=1),
                      'normalised over the whole tensor': torch.softmax(z.reshape(-1), 0).reshape(3, 4)},
            hint='reduce along `dim`')
"""
    named = verdict(kernel, source)
    assert named.message.startswith("Likely mistake: the dim argument is ignored (dim=1 hard-coded)")
    assert "whole tensor" not in named.message and "Hint" not in named.message
    neutral = verdict(kernel, source.replace("torch.softmax(z, dim=1)", "torch.softmax(2 * z, dim=1)"))
    assert "Likely mistake" not in neutral.message
    assert "sum to 1 along dim 1; the expected ones along dim 0" in neutral.message and neutral.message.endswith("Hint: reduce along `dim`")


def test_feedback_lines_are_wrapped(kernel):
    from autograder.execute import _verdict_output

    failed = verdict(kernel, "check_close(double(torch.arange(30.0)), torch.arange(30.0), what='a long description of double ' * 4)")
    output = _verdict_output(failed)
    assert len(output["traceback"]) > 1 and max(len(line) for line in output["traceback"]) <= 104
    assert output["evalue"] == failed.public_message.strip()


def test_a_name_bound_by_an_except_clause_is_the_test_s_own(kernel):
    source = """
try:
    picky(-1)
except ValueError as err:
    check("negative" in str(err), "picky says why")
"""
    assert verdict(kernel, source).passed
