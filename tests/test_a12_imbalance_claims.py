"""What assignment 12's text claims about torch and about its own worked examples, re-run on the pinned torch.

The notebook quotes where torch.log(torch.sigmoid(z)) and torch.log(1 - torch.sigmoid(z)) become -inf in
float32 on the CPU, worked examples of precision/recall, balanced accuracy and ECE, that reweighting
(pos_weight, a weighted sampler) pushes the mean predicted probability above the share of positives
(the written question's model answer leans on it), and that temperature scaling keeps the accuracy and
lowers the validation NLL and ECE of the over-fitted network. Each is checked with the notebook's own code.
"""

from __future__ import annotations

import contextlib
import io
import math
import re

import matplotlib
import nbformat
import pytest
import torch
import torch.nn.functional as F

from conftest import REPO

NOTEBOOK = REPO / "source" / "a12_imbalance_calibration" / "imbalance_calibration.ipynb"


def _markdown() -> str:
    return "\n".join(c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "markdown")


@pytest.fixture(scope="module")
def notebook_run():
    """The namespace and printed output of the setup, solution and worked-example cells (test cells skipped)."""
    matplotlib.use("Agg")
    namespace: dict = {}
    printed = io.StringIO()
    for cell in nbformat.read(NOTEBOOK, as_version=4).cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or (meta.get("grade") and not meta.get("solution")):
            continue
        with contextlib.redirect_stdout(printed):
            exec(compile(cell.source, meta.get("grade_id", "example"), "exec"), namespace)  # noqa: S102 - our own notebook
    import matplotlib.pyplot as plt

    plt.close("all")
    return namespace, printed.getvalue()


def test_log_of_sigmoid_limits_in_float32_on_the_cpu():
    assert "from $z = -89$" in _markdown() and "from $z = 17$" in _markdown()
    z = torch.tensor([-88.0, -89.0, 16.0, 17.0])
    log_p, log_not_p = torch.log(torch.sigmoid(z)), torch.log(1 - torch.sigmoid(z))
    assert math.isfinite(log_p[0]) and log_p[1] == -math.inf
    assert math.isfinite(log_not_p[2]) and log_not_p[3] == -math.inf
    assert torch.isfinite(F.logsigmoid(torch.tensor([-1000.0, 1000.0]))).all()


def test_worked_examples(notebook_run):
    names, _ = notebook_run
    probs, targets = torch.tensor([[0.9], [0.5], [0.4], [0.2]]), torch.tensor([[1.0], [0.0], [1.0], [0.0]])
    assert [v.item() for v in names["precision_recall"](probs, targets, torch.tensor([0.5]))] == [0.5, 0.5]
    precision, recall = names["precision_recall"](probs, targets, torch.tensor([0.4]))
    assert math.isclose(precision.item(), 2 / 3, rel_tol=1e-6) and recall.item() == 1.0
    always_negative = torch.tensor([[1.0, 0.0]] * 10)
    assert names["balanced_accuracy"](always_negative, torch.tensor([0] * 9 + [1]), 2) == 0.5
    ece = names["expected_calibration_error"](torch.tensor([0.9, 0.8, 0.6, 0.3]), torch.tensor([True, False, True, False]), 2)
    assert math.isclose(ece, 0.15, rel_tol=1e-6)


def test_reweighting_raises_the_mean_probability(notebook_run):
    _, printed = notebook_run
    means = {name: float(value) for name, value in re.findall(r"^(pos_weight|weighted sampler|plain BCE)\s.*mean predicted p ([0-9.]+)", printed, re.M)}
    assert set(means) == {"plain BCE", "pos_weight", "weighted sampler"}, printed
    assert means["pos_weight"] > 0.15 and means["weighted sampler"] > 0.15 and abs(means["plain BCE"] - 0.1) < 0.03


def test_temperature_scaling_keeps_accuracy_and_lowers_nll_and_ece(notebook_run):
    names, _ = notebook_run
    labels = names["y_val3"]
    plain, scaled = names["plain_logits"], names["temperature_scale"](names["plain_logits"], names["temperature"])
    assert names["temperature"] > 1
    assert torch.equal(plain.argmax(dim=1), scaled.argmax(dim=1))
    assert F.cross_entropy(scaled, labels) < F.cross_entropy(plain, labels)

    def ece(logits):
        confidence, predicted = F.softmax(logits, dim=1).max(dim=1)
        return names["expected_calibration_error"](confidence, predicted == labels, 10)

    assert ece(scaled) < ece(plain)
