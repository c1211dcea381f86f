"""a11_real_data reads scikit-learn's bundled data files itself (importing scikit-learn would add
seconds to every graded notebook): what it reads must be exactly what sklearn's own loaders return."""

import nbformat
import numpy as np
import pytest

from conftest import REPO


def _setup_cell_names() -> dict:
    notebook = nbformat.read(REPO / "source" / "a11_real_data" / "real_data.ipynb", as_version=4)
    source = next(cell.source for cell in notebook.cells if cell.metadata.get("nbgrader", {}).get("grade_id") == "setup")
    names: dict = {}
    exec(compile(source, "a11_real_data setup cell", "exec"), names)
    return names


def test_setup_cell_does_not_import_sklearn():
    notebook = nbformat.read(REPO / "source" / "a11_real_data" / "real_data.ipynb", as_version=4)
    code = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    assert "import sklearn" not in code and "from sklearn" not in code


@pytest.mark.parametrize("loader,filename,header_lines", [("load_digits", "digits.csv.gz", 0),
                                                          ("load_breast_cancer", "breast_cancer.csv", 1)])
def test_bundled_files_match_sklearn_loaders(loader, filename, header_lines):
    datasets = pytest.importorskip("sklearn.datasets")
    features, labels = _setup_cell_names()["load_bundled"](filename, header_lines=header_lines)
    expected = getattr(datasets, loader)()
    np.testing.assert_array_equal(features, expected.data)
    np.testing.assert_array_equal(labels, expected.target)
    assert features.dtype == expected.data.dtype == np.float64
    assert labels.dtype == np.int64
