"""Every lecture notebook in notebooks/ runs quickly on CPU, draws a plot, is committed with fresh outputs,
and solves no graded exercise (lectures teach, assignments test).

Each notebook is executed once (tools/run_lectures.py) and the checks below share that run.
A stale notebook is fixed with `python tools/run_lectures.py notebooks/<name>.ipynb`.
"""

from __future__ import annotations

import ast
import functools
import io
import re
import sys
import textwrap
import tokenize

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


# --- lectures do not solve the graded exercises ------------------------------------------------------------

SOLUTION_BLOCK = re.compile(r"^[ \t]*### BEGIN SOLUTION[^\n]*\n(.*?)^[ \t]*### END SOLUTION", re.M | re.S)


def normalized_lines(code: str) -> list[str]:
    """Logical lines of code without comments, indentation or spacing, so that layout changes do not hide a copy."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return [" ".join(line.split("#")[0].split()) for line in code.splitlines() if line.split("#")[0].strip()]
    lines, current = [], []
    for token in tokens:
        if token.type in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER):
            if current:
                lines.append(" ".join(current))
                current = []
        elif token.type not in (tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT):
            current.append(token.string)
    return lines


@functools.cache
def graded_solutions() -> tuple[tuple[str, frozenset[str], tuple[tuple[str, ...], ...]], ...]:
    """Per source notebook: the names its solution cells define, and the normalized body of each solution block."""
    found = []
    for notebook_path in sorted((REPO / "source").glob("*/*.ipynb")):
        names, bodies = set(), []
        for cell in nbformat.read(notebook_path, as_version=4).cells:
            if cell.cell_type != "code" or "### BEGIN SOLUTION" not in cell.source:
                continue
            names.update(defined_names(cell.source))
            for block in SOLUTION_BLOCK.findall(cell.source):
                body = tuple(normalized_lines(textwrap.dedent(block)))
                if body:
                    bodies.append(body)
        found.append((str(notebook_path.relative_to(REPO)), frozenset(names), tuple(bodies)))
    return tuple(found)


def defined_names(code: str) -> set[str]:
    """Functions and classes defined anywhere in the code, and names bound to a lambda."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return set(re.findall(r"^\s*(?:async\s+)?(?:def|class)\s+(\w+)", code, re.M))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Lambda):
            names.update(target.id for target in node.targets if isinstance(target, ast.Name))
    return names


def lecture_code(path) -> list[str]:
    return [cell.source for cell in committed(path).cells if cell.cell_type == "code"]


def test_graded_solutions_are_found():
    solutions = graded_solutions()
    assert solutions and all(bodies for _, _, bodies in solutions), "a source notebook without solution blocks?"
    assert any("softmax" in names for _, names, _ in solutions), "the graded softmax (a02) is not found: the scan is broken"


@lecture
def test_lecture_defines_no_graded_function(path):
    lecture_names = set().union(*(defined_names(code) for code in lecture_code(path)))
    clashes = [f"{name} (graded in {notebook})" for notebook, names, _ in graded_solutions()
               for name in sorted(lecture_names & names)]
    assert not clashes, (
        f"{path.name} defines functions with the names of graded functions: {', '.join(clashes)}. "
        "A lecture builds intuition with other objects; it must not hand out the graded code"
    )


@lecture
def test_lecture_contains_no_solution_body(path):
    lecture_lines = [line for code in lecture_code(path) for line in normalized_lines(code)]
    joined = "\n".join(lecture_lines)
    for notebook, _, bodies in graded_solutions():
        for body in bodies:
            # match whole lines: a one-line body must be a whole line of the lecture, not part of one
            assert f"\n{chr(10).join(body)}\n" not in f"\n{joined}\n", (
                f"{path.name} contains the body of a solution from {notebook}:\n  " + "\n  ".join(body)
            )
