"""release/ is what nbgrader generates from source/, and leaks nothing.

"What nbgrader generates" is compared where it matters: each cell's type, source,
outputs and nbgrader metadata, the kernel's name and every non-notebook file's
bytes.  Opening a notebook in JupyterLab and saving it rewrites the kernel's
``language_info``, the kernelspec's display name and the cells' editor metadata,
and leaves ``.ipynb_checkpoints/`` behind: none of that makes a release stale.
"""

import copy
import json
import re
from pathlib import Path

import nbformat
import pytest

from autograder.release import generate_release
from conftest import REPO, assignments

SOLUTION = re.compile(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", re.S)
HIDDEN = re.compile(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", re.S)


def shipped_files(folder: Path) -> dict[str, Path]:
    """The files of a release folder, without editor leftovers (.ipynb_checkpoints/ and other dot names)."""
    return {p.name: p for p in sorted(folder.iterdir()) if not p.name.startswith(".")}


def release_content(notebook: nbformat.NotebookNode) -> dict:
    """What a release notebook gives a student, without what a Lab save rewrites."""

    def canonical(value) -> str:
        return json.dumps(value, sort_keys=True)

    return {
        "nbformat": notebook.nbformat,
        "kernel": notebook.metadata.get("kernelspec", {}).get("name"),
        "cells": [
            (
                cell.cell_type,
                cell.source,
                canonical(cell.metadata.get("nbgrader", {})),
                canonical(cell.get("outputs", [])),
                canonical(cell.get("attachments", {})),
            )
            for cell in notebook.cells
        ],
    }


def _stale(committed: Path, fresh: Path) -> str:
    """Why ``committed`` differs from ``fresh`` where it matters ("" when it does not)."""
    if fresh.suffix != ".ipynb":
        return "" if committed.read_bytes() == fresh.read_bytes() else "its bytes differ"
    mine = release_content(nbformat.read(committed, as_version=4))
    theirs = release_content(nbformat.read(fresh, as_version=4))
    if mine == theirs:
        return ""
    for key in ("nbformat", "kernel"):
        if mine[key] != theirs[key]:
            return f"{key} {mine[key]!r} != {theirs[key]!r}"
    if len(mine["cells"]) != len(theirs["cells"]):
        return f"{len(mine['cells'])} cells, nbgrader generates {len(theirs['cells'])}"
    index = next(i for i, (a, b) in enumerate(zip(mine["cells"], theirs["cells"])) if a != b)
    return f"cell {index} differs ({mine['cells'][index][1][:60]!r}...)"


@pytest.mark.parametrize("assignment", assignments())
def test_committed_release_is_up_to_date(course, assignment):
    generate_release(course, assignment)
    fresh_files = shipped_files(course.release / assignment)
    committed_files = shipped_files(REPO / "release" / assignment)
    for name, fresh in fresh_files.items():
        committed = committed_files.get(name)
        assert committed is not None, f"release/{assignment}/{name} is missing: run `make release`"
        why = _stale(committed, fresh)
        assert not why, f"release/{assignment}/{name} is stale ({why}): run `make release`"
    assert set(committed_files) == set(fresh_files), "release/ holds files nbgrader no longer generates"


def _lab_save(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """``notebook`` as JupyterLab saves it after opening it on another machine."""
    saved = copy.deepcopy(notebook)
    saved.metadata["language_info"] = {
        "codemirror_mode": {"name": "ipython", "version": 3}, "file_extension": ".py", "mimetype": "text/x-python",
        "name": "python", "nbconvert_exporter": "python", "pygments_lexer": "ipython3", "version": "3.12.7",
    }
    saved.metadata.setdefault("kernelspec", {}).update(display_name="Python 3 (ipykernel)", language="python")
    for cell in saved.cells:
        cell.metadata["collapsed"] = False
        cell.metadata["jp-MarkdownHeadingCollapsed"] = True
        cell.metadata["execution"] = {"iopub.status.busy": "2026-12-01T10:00:00.000Z"}
    return saved


def test_a_lab_save_is_not_stale_but_a_changed_cell_is(tmp_path):
    committed = REPO / "release" / "a01_encoding" / "encoding.ipynb"
    original = nbformat.read(committed, as_version=4)
    path = tmp_path / "encoding.ipynb"
    nbformat.write(_lab_save(original), path)
    assert path.read_bytes() != committed.read_bytes()
    assert _stale(path, committed) == "", "language_info, kernelspec display and editor metadata are not content"

    graded = next(i for i, c in enumerate(original.cells) if c.metadata.get("nbgrader", {}).get("grade"))
    changes = {
        "source": lambda nb: setattr(nb.cells[0], "source", nb.cells[0].source + " (edited)"),
        "type": lambda nb: setattr(nb.cells[graded], "cell_type", "raw"),
        "points": lambda nb: nb.cells[graded].metadata["nbgrader"].update(points=99),
        "cells": lambda nb: nb.cells.pop(),
    }
    for what, change in changes.items():
        edited = _lab_save(original)
        change(edited)
        if what == "type":  # a raw cell has no outputs or execution count
            edited.cells[graded].pop("outputs", None)
            edited.cells[graded].pop("execution_count", None)
        nbformat.write(edited, path)
        assert _stale(path, committed), f"a changed {what} must make the release stale"


def test_checkpoints_are_not_shipped(tmp_path):
    (tmp_path / "encoding.ipynb").write_text("{}")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / ".ipynb_checkpoints" / "encoding-checkpoint.ipynb").write_text("{}")
    assert set(shipped_files(tmp_path)) == {"encoding.ipynb"}


def _significant_lines(block: str) -> set[str]:
    lines = {line.strip() for line in block.splitlines()}
    return {line for line in lines if len(line) > 12 and not line.startswith("#")}


@pytest.mark.parametrize("assignment", assignments())
def test_release_leaks_no_solution_or_hidden_test(assignment):
    for source_path in sorted((REPO / "source" / assignment).glob("*.ipynb")):
        release_text = (REPO / "release" / assignment / source_path.name).read_text()
        release = nbformat.reads(release_text, as_version=4)
        release_lines = {line.strip() for cell in release.cells for line in cell.source.splitlines()}
        assert "BEGIN SOLUTION" not in release_text and "BEGIN HIDDEN TESTS" not in release_text
        source = nbformat.read(source_path, as_version=4)
        for cell in source.cells:
            secret = set()
            for block in SOLUTION.findall(cell.source) + HIDDEN.findall(cell.source):
                secret |= _significant_lines(block)
            visible_elsewhere = {line for line in secret if _line_is_public(line, source)}
            leaked = (secret - visible_elsewhere) & release_lines
            assert not leaked, f"{source_path.name}: secret lines in the release: {sorted(leaked)[:3]}"


def _line_is_public(line: str, source) -> bool:
    """A line also written outside any secret block (a worked example, say) is not a leak."""
    for cell in source.cells:
        public = HIDDEN.sub("", SOLUTION.sub("", cell.source))
        if line in {l.strip() for l in public.splitlines()}:
            return True
    return False


@pytest.mark.parametrize("assignment", assignments())
def test_assignment_ships_the_one_shared_check_module(assignment):
    link = REPO / "source" / assignment / "course_checks.py"
    assert link.is_symlink() and link.resolve() == (REPO / "course_checks.py").resolve(), (
        f"source/{assignment}/course_checks.py must be a link to ../../course_checks.py, not a copy"
    )
    shipped = REPO / "release" / assignment / "course_checks.py"
    assert shipped.read_bytes() == (REPO / "course_checks.py").read_bytes(), (
        f"release/{assignment}/course_checks.py is stale: run tools/regen_release.sh {assignment}"
    )
