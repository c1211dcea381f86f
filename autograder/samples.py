"""Bundled sample submissions: a correct one, the untouched release and realistic buggy ones.

Each assignment has ``samples/<assignment>.toml`` listing its samples.  A sample
starts from the release notebook, fills in solution cells from the source
notebook (``start = "solution"``) or leaves them alone (``start = "release"``),
then overrides individual cells by grade id.  ``expect_failed`` names the test
cells the sample must fail and ``expect_message`` a phrase its feedback must
contain; ``named = true`` (the default for a buggy sample) says that phrase must
be the mistake the feedback names ("Likely mistake: ..."), ``named = false``
that it comes from a neutral description.  A sample with ``style`` and no
``expect_failed`` is a correct alternative: a solution written another way,
from the release notebook, that must earn every autograded point.

``[[requirement]]`` entries list what each exercise's text states (return type,
dtype rules, input left alone, arguments honoured, edge cases it names) and
the buggy sample that violates only that requirement.
"""

from __future__ import annotations

import re
import shutil
import tomllib
from dataclasses import dataclass, field

import nbformat

from .course import Course
from .errors import UsageError

SAMPLES_DIR = "samples"
_MARKER = re.compile(r"^\s*### (BEGIN|END) SOLUTION\s*$")


@dataclass(frozen=True)
class Sample:
    student: str
    assignment: str
    start: str
    cells: dict[str, str] = field(default_factory=dict)
    raw: dict[str, str] = field(default_factory=dict)
    expect_failed: tuple[str, ...] = ()
    expect_message: str = ""
    mistake: str = ""
    named: bool = True
    style: str = ""

    @property
    def is_alternative(self) -> bool:
        """A correct solution written in another style."""
        return bool(self.style) and not self.expect_failed


@dataclass(frozen=True)
class Requirement:
    """A requirement an exercise's text states, and the sample that violates only it."""

    text: str
    cell: str
    sample: str


def load_samples(course: Course, assignment: str) -> list[Sample]:
    path = course.root / SAMPLES_DIR / f"{assignment}.toml"
    if not path.is_file():
        return []
    spec = tomllib.loads(path.read_text())
    return [
        Sample(
            student=entry["student"],
            assignment=assignment,
            start=entry.get("start", "solution"),
            cells=entry.get("cells", {}),
            raw=entry.get("raw", {}),
            expect_failed=tuple(entry.get("expect_failed", ())),
            expect_message=entry.get("expect_message", ""),
            mistake=entry.get("mistake", ""),
            named=entry.get("named", True),
            style=entry.get("style", ""),
        )
        for entry in spec.get("sample", [])
    ]


def load_requirements(course: Course, assignment: str) -> list[Requirement]:
    path = course.root / SAMPLES_DIR / f"{assignment}.toml"
    if not path.is_file():
        return []
    spec = tomllib.loads(path.read_text())
    return [Requirement(entry["text"], entry["cell"], entry["sample"]) for entry in spec.get("requirement", [])]


def solution_text(source: str) -> str:
    """A cell's solution as a student would have typed it: the delimiters removed."""
    return "\n".join(line for line in source.splitlines() if not _MARKER.match(line))


def build_notebook(course: Course, sample: Sample, name: str) -> nbformat.NotebookNode:
    release = nbformat.read(course.release / sample.assignment / name, as_version=4)
    source = nbformat.read(course.source / sample.assignment / name, as_version=4)
    solutions = {
        cell.metadata["nbgrader"]["grade_id"]: solution_text(cell.source)
        for cell in source.cells
        if cell.metadata.get("nbgrader", {}).get("solution")
    }
    unused = set(sample.cells) | set(sample.raw)
    for cell in release.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in sample.raw:
            cell.source = sample.raw[grade_id]
        elif grade_id in sample.cells:
            cell.source = sample.cells[grade_id].strip("\n")
        elif sample.start == "solution" and grade_id in solutions:
            cell.source = solutions[grade_id]
        unused.discard(grade_id)
    if unused:
        raise UsageError(f"sample {sample.student} overrides unknown cell(s): {', '.join(sorted(unused))}")
    return release


def submit_sample(course: Course, sample: Sample, student: str) -> None:
    """Write ``sample`` as ``student``'s submission: submitted/<student>/<assignment>/."""
    folder = course.submitted / student / sample.assignment
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name in course.notebook_names(sample.assignment):
        nbformat.write(build_notebook(course, sample, name), folder / name)


def install_samples(course: Course, assignment: str) -> list[Sample]:
    """Write every sample of ``assignment`` into submitted/<student>/<assignment>/."""
    samples = load_samples(course, assignment)
    for sample in samples:
        submit_sample(course, sample, sample.student)
    return samples
