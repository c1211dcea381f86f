"""environment.yml (the conda path) and pyproject.toml (the pip path) pin the same versions."""

import re
import tomllib

from conftest import REPO


def _pip_lines_in_environment_yml() -> set[str]:
    lines = (REPO / "environment.yml").read_text().splitlines()
    pins = set()
    for line in lines:
        match = re.match(r"^\s*-\s+([A-Za-z0-9_.\-]+==[^\s#]+)", line)
        if match:
            pins.add(match.group(1).lower())
    return pins


def test_environment_yml_pins_match_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {d.lower() for d in project["dependencies"] + project["optional-dependencies"]["test"]}
    assert _pip_lines_in_environment_yml() == declared, "environment.yml and pyproject.toml pin different versions"


def test_every_dependency_is_pinned_exactly():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    loose = [d for d in project["dependencies"] if "==" not in d]
    assert not loose, f"unpinned dependencies (an unpinned torch pulls CUDA builds): {loose}"


def test_torch_is_the_pinned_cpu_build():
    import torch

    assert torch.__version__.split("+")[0] == "2.13.0", f"running torch {torch.__version__}, course is pinned to 2.13.0"
