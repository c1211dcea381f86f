"""Every lecture notebook in notebooks/ runs quickly on CPU, draws a plot, and is committed with fresh outputs.

Each notebook is executed once (tools/run_lectures.py) and the checks below share that run.
A stale notebook is fixed with `python tools/run_lectures.py notebooks/<name>.ipynb`.
"""

from __future__ import annotations

import functools
import re
import sys

import nbformat
import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
import run_lectures  # noqa: E402

NOTEBOOKS = run_lectures.lecture_paths()
TIME_LIMIT_S = 30
ASSIGNMENT_NAME = re.compile(r"\ba(0[1-9]|1[0-9])_[a-z_]+")


@functools.cache
def fresh_run(path):
    return run_lectures.execute(path)


def committed(path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


lecture = pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)


def test_there_are_lecture_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no lecture notebooks"


@lecture
def test_lecture_runs_under_time_limit(path):
    _, seconds = fresh_run(path)
    assert seconds < TIME_LIMIT_S, f"{path.name} took {seconds:.1f} s to execute; lectures must run in under {TIME_LIMIT_S} s"


@lecture
def test_lecture_draws_a_plot(path):
    notebook, _ = fresh_run(path)
    images = [o for c in notebook.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, f"{path.name} draws no plot; every lecture has at least one"


@lecture
def test_lecture_writes_nothing_to_stderr(path):
    notebook, _ = fresh_run(path)
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            assert output.get("name") != "stderr", (
                f"{path.name} cell {index} wrote to stderr (a warning?): {output.get('text', '')[:300]}"
            )


@lecture
def test_committed_outputs_are_fresh(path):
    notebook, _ = fresh_run(path)
    difference = run_lectures.first_difference(committed(path), notebook)
    assert difference is None, (
        f"{path.name}: committed outputs differ from a fresh run; "
        f"regenerate with `python tools/run_lectures.py {path.relative_to(REPO)}`\n{difference}"
    )


@lecture
def test_committed_notebook_is_normalized(path):
    notebook = committed(path)
    assert notebook.metadata == run_lectures.NOTEBOOK_METADATA, (
        f"{path.name} carries run-specific notebook metadata; regenerate it with tools/run_lectures.py"
    )
    for index, cell in enumerate(notebook.cells):
        assert "nbgrader" not in cell.metadata, f"{path.name} cell {index} has nbgrader metadata; lectures are ungraded"
        volatile = [key for key in run_lectures.VOLATILE_CELL_METADATA if key in cell.metadata]
        assert not volatile, f"{path.name} cell {index} keeps run-specific metadata {volatile}"


@lecture
def test_lecture_ends_by_pointing_to_an_assignment(path):
    last = committed(path).cells[-1]
    assert last.cell_type == "markdown" and ASSIGNMENT_NAME.search(last.source), (
        f"{path.name} must end with a markdown cell naming the graded assignment it prepares (e.g. a02_cross_entropy)"
    )
