"""Every instructor notebook runs top to bottom and passes its own tests, visible and hidden."""

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO, assignments

NOTEBOOKS = [p for a in assignments() for p in sorted((REPO / "source" / a).glob("*.ipynb"))]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_source_notebook_passes_its_own_tests(path, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    # The per-cell timeout is a guard against a hang, not a speed test: how long the
    # notebooks take is measured by bench/notebook_runtime.py.
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            name = cell.metadata.get("nbgrader", {}).get("grade_id", cell.get("id"))
            assert output.get("name") != "stderr" or not cell.metadata.get("nbgrader", {}).get("grade"), (
                f"test cell {name} wrote to stderr, which nbgrader scores as 0: {output.get('text', '')[:200]}"
            )
    images = [o for c in notebook.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, f"{path.name} draws no plot; every assignment has at least one"
