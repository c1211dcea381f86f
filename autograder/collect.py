"""Find the submissions to grade, reject the unreadable, and plan what runs where.

The plan for a submitted notebook comes from two sources that are kept apart:

* the gradebook (trusted): every nbgrader cell's kind, type, points and full
  source, hidden tests included, as nbgrader recorded them when it generated
  the release; the cell order comes from the instructor notebook in source/;
* the submission (untrusted): the student's solution cells and any cells of
  their own, in the order they handed them in.

Test cells and read-only cells always run from the gradebook.  A test cell
that is missing, renamed, duplicated, retyped or edited is restored (or
ignored) and the change is reported as a finding, so the TA sees it while the
honest cells are graded as usual.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook, MissingEntry

from .course import Course
from .errors import UsageError
from .status import Status
from .wire import safe_text

#: Larger notebooks are refused before anything parses them.
MAX_NOTEBOOK_BYTES = 20 * 1024 * 1024
MAX_CELLS = 2000

TESTS, SOLUTION, WRITTEN, TASK, READ_ONLY = "tests", "solution", "written", "task", "read-only"


@dataclass(frozen=True)
class Submission:
    student: str
    assignment: str
    folder: Path
    #: Set when collection already knows the outcome (missing, unreadable).
    problem: Status | None = None
    detail: str = ""


@dataclass(frozen=True)
class TrustedCell:
    """An nbgrader cell as the gradebook recorded it."""

    grade_id: str
    kind: str
    cell_type: str
    source: str
    checksum: str | None
    points: float = 0.0

    def nbgrader_metadata(self) -> dict:
        meta = {
            "grade": self.kind in (TESTS, WRITTEN),
            "solution": self.kind in (SOLUTION, WRITTEN),
            "locked": self.kind in (TESTS, READ_ONLY, TASK),
            "grade_id": self.grade_id,
            "schema_version": 3,
        }
        if self.kind == TASK:
            meta["task"] = True
        if self.kind in (TESTS, WRITTEN, TASK):
            meta["points"] = self.points
        if self.checksum:
            meta["checksum"] = self.checksum
        return meta


@dataclass
class TrustedNotebook:
    name: str
    #: In the instructor notebook's order.
    cells: list[TrustedCell]
    kernelspec: dict = field(default_factory=dict)

    def by_id(self) -> dict[str, TrustedCell]:
        return {cell.grade_id: cell for cell in self.cells}


@dataclass
class PlannedCell:
    """One step of grading a notebook, in order.

    ``action`` is "run" (student or restored code, executed in the sandbox),
    "test" (a trusted test cell, run in the grader), "written" (a manually
    graded answer), or "show" (markdown and raw cells, nothing to run).
    """

    action: str
    source: str
    cell_type: str = "code"
    trusted: TrustedCell | None = None
    #: Where the cell came from: "student", "gradebook" (restored) or "release".
    origin: str = "student"


@dataclass
class Plan:
    notebook: TrustedNotebook
    steps: list[PlannedCell]
    #: What the submission changed that it should not have (empty for an honest one).
    findings: list[str]
    #: grade ids of solution/written cells the student left exactly as released.
    unchanged: set[str]


def collect(
    course: Course, assignment: str, trusted: dict[str, TrustedNotebook], students: list[str] | None, known_students: set[str]
) -> list[Submission]:
    """One Submission per student: those asked for, else everyone submitted or enrolled."""
    submitted = {p.parent.name for p in course.submitted.glob(f"*/{assignment}") if p.is_dir()}
    if students:
        unknown = [s for s in students if s not in submitted and s not in known_students]
        if unknown:
            raise UsageError(f"unknown student(s): {', '.join(unknown)} (no submission and not in the gradebook)")
        chosen = list(dict.fromkeys(students))
    else:
        chosen = sorted(submitted | known_students)
    expected = course.notebook_names(assignment)
    # Read-only cells (a setup cell, say) share names across assignments; answers and tests don't.
    grade_ids = {c.grade_id for nb in trusted.values() for c in nb.cells if c.kind in (TESTS, SOLUTION, WRITTEN)}
    return [_inspect(course, assignment, student, expected, grade_ids) for student in chosen]


def _inspect(course: Course, assignment: str, student: str, expected: list[str], grade_ids: set[str]) -> Submission:
    folder = course.submitted / student / assignment
    if not folder.is_dir() or folder.is_symlink():
        return Submission(student, assignment, folder, Status.MISSING, "no submission")
    for name in expected:
        path = folder / name
        if path.is_symlink() or not path.is_file():
            return Submission(student, assignment, folder, Status.MISSING, f"{name} not submitted")
        problem = _unreadable(path, grade_ids)
        if problem:
            return Submission(student, assignment, folder, Status.INVALID_NOTEBOOK, f"{name}: {problem}")
    return Submission(student, assignment, folder)


class UnreadableNotebook(Exception):
    """Why a submitted file is not a notebook the grader can read: one line for the TA."""


_BYTE_ORDER_MARKS = {
    b"\xef\xbb\xbf": "UTF-8 with a byte-order mark",
    b"\xff\xfe": "UTF-16 (little-endian)",
    b"\xfe\xff": "UTF-16 (big-endian)",
}


def load_notebook(data: bytes) -> nbformat.NotebookNode:
    """Read a notebook as Jupyter does: strict UTF-8, then nbformat; anything else is unreadable.

    JupyterLab cannot open what this refuses, so neither can the student.  What it
    accepts may still hold lone surrogates (escaped in the JSON); they are replaced
    with U+FFFD here so that every later writer (the autograded notebook, the
    gradebook, grades.csv) can encode the text.
    """
    if len(data) > MAX_NOTEBOOK_BYTES:
        raise UnreadableNotebook(f"larger than {MAX_NOTEBOOK_BYTES // 2**20} MiB")
    for mark, encoding in _BYTE_ORDER_MARKS.items():
        if data.startswith(mark):
            raise UnreadableNotebook(f"saved as {encoding}, which Jupyter cannot open: re-save it as plain UTF-8")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UnreadableNotebook(f"not UTF-8 text (invalid byte at offset {err.start}), which Jupyter cannot open") from None
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as err:
        first = str(err).splitlines()[0] if str(err) else ""
        raise UnreadableNotebook(f"not valid notebook JSON ({type(err).__name__}: {safe_text(first)[:200]})") from None
    if not isinstance(raw, dict) or "cells" not in raw:
        raise UnreadableNotebook("not a Jupyter notebook")
    if not isinstance(raw["cells"], list):
        raise UnreadableNotebook("not a Jupyter notebook")
    if len(raw["cells"]) > MAX_CELLS:
        raise UnreadableNotebook(f"more than {MAX_CELLS} cells")
    try:
        notebook = nbformat.reads(json.dumps(_without_surrogates(raw)), as_version=4)
        nbformat.validate(notebook)
    except Exception as err:  # noqa: BLE001 - nbformat raises several unrelated types
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UnreadableNotebook(f"not a valid notebook ({safe_text(first)[:300]})") from None
    return notebook


def _without_surrogates(value: object, depth: int = 0) -> object:
    if isinstance(value, str):
        return safe_text(value)
    if depth > 200:
        raise UnreadableNotebook("nested too deeply")
    if isinstance(value, list):
        return [_without_surrogates(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {safe_text(k): _without_surrogates(v, depth + 1) for k, v in value.items()}
    return value


def read_submitted(path: Path) -> nbformat.NotebookNode:
    """The submitted notebook, read as ``_unreadable`` read it when collecting."""
    return load_notebook(path.read_bytes())


def _unreadable(path: Path, grade_ids: set[str]) -> str | None:
    """Why the notebook can't be graded, or None if it can."""
    if path.stat().st_size > MAX_NOTEBOOK_BYTES:
        return f"larger than {MAX_NOTEBOOK_BYTES // 2**20} MiB"
    try:
        notebook = load_notebook(path.read_bytes())
    except UnreadableNotebook as err:
        return str(err)
    found = {_grade_id(c) for c in notebook.cells}
    if grade_ids and not grade_ids & found:
        return "none of this assignment's cells are in it (a notebook from another assignment?)"
    return None


def _grade_id(cell: nbformat.NotebookNode) -> str | None:
    meta = cell.get("metadata", {}).get("nbgrader")
    if isinstance(meta, dict) and isinstance(meta.get("grade_id"), str):
        return meta["grade_id"]
    return None


# -- the trusted side ----------------------------------------------------------


def trusted_notebooks(course: Course, assignment: str) -> dict[str, TrustedNotebook]:
    """Every notebook of the assignment as the gradebook knows it, keyed by file name."""
    notebooks: dict[str, TrustedNotebook] = {}
    with Gradebook(course.db_url) as gradebook:
        try:
            records = gradebook.find_assignment(assignment).notebooks
        except MissingEntry:
            return {}
        for record in records:
            grade = {c.name: c for c in record.grade_cells}
            solution = {c.name for c in record.solution_cells}
            task = {c.name: c for c in record.task_cells}
            cells = []
            for source_cell in record.source_cells:
                name = source_cell.name
                if name in task:
                    kind, points = TASK, float(task[name].max_score)
                elif name in grade:
                    kind, points = (WRITTEN if name in solution else TESTS), float(grade[name].max_score)
                elif name in solution:
                    kind, points = SOLUTION, 0.0
                elif source_cell.locked:
                    kind, points = READ_ONLY, 0.0
                else:
                    continue
                cells.append(TrustedCell(name, kind, source_cell.cell_type, source_cell.source or "", source_cell.checksum, points))
            file_name = f"{record.name}.ipynb"
            order, kernelspec = _instructor_order(course, assignment, file_name)
            cells.sort(key=lambda c: (order.get(c.grade_id, len(order)), c.grade_id))
            notebooks[file_name] = TrustedNotebook(file_name, cells, kernelspec)
    return notebooks


def _instructor_order(course: Course, assignment: str, name: str) -> tuple[dict[str, int], dict]:
    for folder in (course.source / assignment, course.release / assignment):
        path = folder / name
        if path.is_file():
            notebook = nbformat.read(path, as_version=4)
            order = {}
            for index, cell in enumerate(notebook.cells):
                grade_id = _grade_id(cell)
                if grade_id is not None:
                    order.setdefault(grade_id, index)
            return order, dict(notebook.metadata.get("kernelspec", {}))
    return {}, {}


# -- the plan ------------------------------------------------------------------


def _normal(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def _claims(meta: object) -> bool:
    """Whether metadata says it is an nbgrader cell of some kind."""
    return isinstance(meta, dict) and any(meta.get(k) for k in ("grade", "solution", "locked", "task", "grade_id"))


def plan_notebook(submitted: nbformat.NotebookNode, trusted: TrustedNotebook) -> Plan:
    """What to run, in which order, with which source; and what the student tampered with."""
    from .verdict import visible_source

    known = trusted.by_id()
    steps: list[PlannedCell] = []
    findings: list[str] = []
    unchanged: set[str] = set()
    seen: set[str] = set()
    position: dict[str, int] = {}

    for cell in submitted.cells:
        cell_type = cell.get("cell_type", "raw")
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        meta = cell.get("metadata", {}).get("nbgrader")
        grade_id = _grade_id(cell)
        record = known.get(grade_id) if grade_id else None
        if record is None:
            if _claims(meta):
                findings.append(f"cell {grade_id!r} is not a cell of this assignment (renamed or invented): not graded")
            steps.append(PlannedCell("run" if cell_type == "code" else "show", source, cell_type))
            continue
        if grade_id in seen:
            findings.append(f"cell {grade_id!r} appears more than once: only the first copy counts")
            if record.kind == SOLUTION and cell_type == "code":
                steps.append(PlannedCell("run", source, "code"))
            continue
        seen.add(grade_id)
        if cell_type != record.cell_type:
            findings.append(f"cell {grade_id!r} was changed from {record.cell_type} to {cell_type}: type restored")
        changed = _changed_metadata(meta, record)
        if changed:
            findings.append(f"cell {grade_id!r} has altered nbgrader metadata ({', '.join(changed)}): restored")
        position[grade_id] = len(steps)
        if record.kind == TESTS:
            if _normal(source) != _normal(visible_source(record.source)):
                findings.append(f"test cell {grade_id!r} was edited: the original test was run instead")
            steps.append(PlannedCell("test", record.source, "code", record, "gradebook"))
        elif record.kind == READ_ONLY:
            if _normal(source) != _normal(record.source):
                findings.append(f"read-only cell {grade_id!r} was edited: the original was run instead")
            action = "run" if record.cell_type == "code" else "show"
            steps.append(PlannedCell(action, record.source, record.cell_type, record, "gradebook"))
        elif record.kind == TASK:
            steps.append(PlannedCell("show", record.source, record.cell_type, record, "gradebook"))
        else:
            # As nbgrader decides "no response": the answer is exactly the released stub.
            if source == record.source:
                unchanged.add(grade_id)
            if record.kind == WRITTEN:
                steps.append(PlannedCell("written", source, record.cell_type, record))
            else:
                steps.append(PlannedCell("run" if record.cell_type == "code" else "show", source, record.cell_type, record))

    # Cells the student removed: tests and read-only cells come back from the
    # gradebook, right after the nearest earlier cell that is still there.
    order = [c.grade_id for c in trusted.cells]
    for index, record in enumerate(trusted.cells):
        if record.grade_id in seen:
            continue
        findings.append(f"{'test ' if record.kind == TESTS else ''}cell {record.grade_id!r} is missing"
                        + (": restored from the gradebook" if record.kind in (TESTS, READ_ONLY, TASK) else ""))
        if record.kind == TESTS:
            step = PlannedCell("test", record.source, "code", record, "gradebook")
        elif record.kind in (READ_ONLY, TASK):
            step = PlannedCell("run" if record.cell_type == "code" and record.kind == READ_ONLY else "show", record.source, record.cell_type, record, "gradebook")
        else:
            # A deleted answer is an unanswered one: the release's text, graded as such.
            unchanged.add(record.grade_id)
            text = record.source
            action = "written" if record.kind == WRITTEN else "show"
            step = PlannedCell(action, text, record.cell_type, record, "release")
        earlier = [position[g] for g in order[:index] if g in position]
        at = max(earlier) + 1 if earlier else 0
        steps.insert(at, step)
        for key, value in position.items():
            if value >= at:
                position[key] = value + 1
        position[record.grade_id] = at
        seen.add(record.grade_id)
    return Plan(trusted, steps, findings, unchanged)


def _changed_metadata(meta: object, record: TrustedCell) -> list[str]:
    if not isinstance(meta, dict):
        return ["not a mapping"]
    expected = record.nbgrader_metadata()
    changed = []
    for key in ("grade", "solution", "locked", "task"):
        if bool(meta.get(key, False)) != bool(expected.get(key, False)):
            changed.append(key)
    if "points" in expected:
        try:
            if float(meta.get("points", "nan")) != float(expected["points"]):
                changed.append("points")
        except (TypeError, ValueError, OverflowError):
            changed.append("points")
    return changed
