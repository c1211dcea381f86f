"""Every test cell keeps the contract that lets the grader run it outside the student's kernel.

Names: only the student's solution names, torch/np/math/F and course_checks.
Quiet: no imports, no trailing bare expression (nbgrader reads a number as partial credit).
Messages: every plain assert says what went wrong.
Tolerances: only the policy in course_checks (roundings=, scale=), never a hand-set rtol/atol.
Mistakes: "Likely mistake" is written by the check helpers when a signature matches, never by hand.
"""

import ast
import builtins

import nbformat
import pytest

from conftest import REPO, assignments
from course_checks import TEST_CELL_NAMES

NOTEBOOKS = [p for a in assignments() for p in sorted((REPO / "source" / a).glob("*.ipynb"))]
CHECK_CALLS = TEST_CELL_NAMES | {"print"}


def _bound_names(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {alias.asname or alias.name.split(".")[0] for alias in node.names}
    return names


def _cells(path, kind):
    for cell in nbformat.read(path, as_version=4).cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code":
            continue
        if kind == "tests" and meta.get("grade") and not meta.get("solution"):
            yield meta["grade_id"], cell.source
        if kind == "solution" and meta.get("solution"):
            yield meta["grade_id"], cell.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.parent.name)
def test_test_cells_keep_the_contract(path):
    student_names = set()
    for _, source in _cells(path, "solution"):
        student_names |= _bound_names(ast.parse(source))
    allowed = student_names | TEST_CELL_NAMES | set(dir(builtins))
    tests = list(_cells(path, "tests"))
    assert tests, f"{path.name} has no test cells"
    for grade_id, source in tests:
        tree = ast.parse(source)
        imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
        assert not imports, f"{grade_id}: test cells may not import; use the setup cell's names"
        used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        foreign = used - allowed - _bound_names(tree)
        assert not foreign, f"{grade_id}: uses names outside the test-cell contract: {sorted(foreign)}"
        bare = [n for n in ast.walk(tree) if isinstance(n, ast.Assert) and n.msg is None]
        assert not bare, f"{grade_id}: assert on line {bare[0].lineno} has no message naming the likely mistake"
        last = tree.body[-1] if tree.body else None
        if isinstance(last, ast.Expr):
            call = last.value
            name = call.func.id if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) else None
            assert name in CHECK_CALLS, f"{grade_id}: ends on a bare expression, which nbgrader may read as a score"


#: Calls whose keyword arguments set a tolerance by hand.
_HAND_TOLERANCES = {"rtol", "atol"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.parent.name)
def test_test_cells_take_tolerances_from_the_policy(path):
    for grade_id, source in _cells(path, "tests"):
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call):
                hand = sorted(k.arg for k in node.keywords if k.arg in _HAND_TOLERANCES)
                assert not hand, (
                    f"{grade_id}: line {node.lineno} sets {', '.join(hand)} by hand; "
                    "use check_close's roundings= and scale= (docs/authoring.md, Tolerances)"
                )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.parent.name)
def test_no_test_cell_claims_a_mistake_by_hand(path):
    for grade_id, source in _cells(path, "tests"):
        assert "Likely mistake" not in source, (
            f"{grade_id}: writes 'Likely mistake' itself; pass the mistake's output in mistakes= instead"
        )
