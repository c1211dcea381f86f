"""release/ is exactly what nbgrader generates from source/, and leaks nothing."""

import re

import nbformat
import pytest

from autograder.release import generate_release
from conftest import REPO, assignments

SOLUTION = re.compile(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", re.S)
HIDDEN = re.compile(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", re.S)


@pytest.mark.parametrize("assignment", assignments())
def test_committed_release_is_up_to_date(course, assignment):
    generate_release(course, assignment)
    for fresh in sorted((course.release / assignment).iterdir()):
        committed = REPO / "release" / assignment / fresh.name
        assert committed.is_file(), f"release/{assignment}/{fresh.name} is missing: run `make release`"
        assert committed.read_bytes() == fresh.read_bytes(), f"release/{assignment}/{fresh.name} is stale: run `make release`"
    committed_names = {p.name for p in (REPO / "release" / assignment).iterdir()}
    fresh_names = {p.name for p in (course.release / assignment).iterdir()}
    assert committed_names == fresh_names, "release/ holds files nbgrader no longer generates"


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
