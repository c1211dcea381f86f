"""One assignment's graded class, read back for the class report and the LMS exports.

Where each fact comes from (and why):

* **Scores** (automatic and manual, late penalties) and each graded cell's score:
  nbgrader's gradebook, the one the formgrader edits, so a TA's manual grades
  and overrides count.  A test cell counts as failed when its automatic score
  is below its points.
* **Statuses** and their details: the gradebook's ``autograder_status`` table
  (record.py writes it for every submission, including those that could not be graded).
* **Per-test messages** and **grading time**: the autograded notebooks,
  ``autograded/<student>/<assignment>/*.ipynb``.  Each test cell there holds one
  output: the "passed" line, or an error whose ``evalue`` is the failing check's
  message, the same text the student's feedback shows (hidden tests' source and
  inputs never reach it).  A message naming a mistake starts with
  ``Likely mistake: X.`` (course_checks.LIKELY).  The notebook's metadata
  ``autograder.seconds`` is how long grading it took.

A submission graded before the engine recorded times has no time; one graded by
plain nbgrader has no status row ("no status recorded").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import nbformat
from nbgrader.api import Gradebook, MissingEntry

from .course import Course
from .errors import UsageError
from .record import stored_statuses
from .status import Status

#: course_checks.LIKELY: how a check's message names a recognised mistake.
LIKELY = "Likely mistake: "
_NAMED = re.compile(re.escape(LIKELY) + r"(.+?)(?:\.\s|\.?$)")
#: Statuses whose submission earned no scores in this run: nothing was graded.
UNGRADED = {str(Status.MISSING), str(Status.INVALID_NOTEBOOK), str(Status.GRADER_ERROR)}
NO_STATUS = "no status recorded"
TEST, WRITTEN = "test", "written"


@dataclass
class CellResult:
    """One graded cell of one submission."""

    name: str
    notebook: str
    kind: str  # TEST (an autograded test cell) or WRITTEN (graded by a person)
    max_score: float
    score: float  # what counts: the manual score where a TA gave one, else the automatic one
    auto_score: float | None
    needs_manual_grade: bool
    #: For a failed test: the check's message from the autograded notebook ("" when unknown).
    message: str = ""
    ename: str = ""

    @property
    def failed(self) -> bool:
        return self.kind == TEST and self.auto_score is not None and self.auto_score < self.max_score

    @property
    def mistake(self) -> str | None:
        return named_mistake(self.message) if self.failed else None


@dataclass
class StudentResult:
    student: str
    status: str
    detail: str
    max_score: float
    raw_score: float = 0.0
    late_penalty: float = 0.0
    #: Whether grading recorded scores (False for missing, invalid or grader-error submissions,
    #: and for one stopped before any test ran).
    graded: bool = False
    cells: list[CellResult] = field(default_factory=list)
    seconds: float | None = None
    first_name: str = ""
    last_name: str = ""
    email: str = ""
    lms_user_id: str = ""

    @property
    def score(self) -> float:
        """The final score: every cell's score, less the late penalty, never below 0."""
        return max(self.raw_score - self.late_penalty, 0.0)

    @property
    def manual_pending(self) -> int:
        return sum(1 for cell in self.cells if cell.needs_manual_grade)

    @property
    def failed_tests(self) -> list[CellResult]:
        return [cell for cell in self.cells if cell.failed]

    @property
    def display_name(self) -> str:
        """"Last, First" as LMS gradebooks list students, or the student id."""
        names = [n for n in (self.last_name, self.first_name) if n]
        return ", ".join(names) if names else self.student


@dataclass
class ClassResults:
    assignment: str
    max_score: float
    #: Test cells' grade ids in notebook order (notebooks sorted by name).
    tests: list[str]
    students: list[StudentResult]

    @property
    def graded(self) -> list[StudentResult]:
        return [s for s in self.students if s.graded]


def named_mistake(message: str) -> str | None:
    """The mistake a check's message names ("Likely mistake: X. ..." -> "X"), or None."""
    first = (message.strip().splitlines() or [""])[0]
    found = _NAMED.search(first)
    return found.group(1).strip() if found else None


def load_class(course: Course, assignment: str) -> ClassResults:
    """The graded class of ``assignment``; a UsageError when it is unknown or was never graded."""
    course.require_assignment(assignment)
    statuses = stored_statuses(course, assignment)
    with Gradebook(course.db_url) as gradebook:
        try:
            record = gradebook.find_assignment(assignment)
        except MissingEntry:
            record = None
        submissions = list(record.submissions) if record is not None else []
        if not submissions and not statuses:
            raise UsageError(f"{assignment} has not been graded yet: run `autograder grade {assignment}` first")
        max_score = float(record.max_score) if record is not None else 0.0
        students: dict[str, StudentResult] = {}
        for submission in submissions:
            students[submission.student.id] = _from_gradebook(submission, max_score, statuses)
        for student, (status, detail) in statuses.items():
            if student not in students:
                found = _student_row(gradebook, student)
                students[student] = StudentResult(student, status, detail or "", max_score, **found)
        gradebook.db.commit()  # end the read
    order, tests = _cell_order(course, assignment)
    for result in students.values():
        result.cells.sort(key=lambda cell: (order.get(cell.name, len(order)), cell.notebook, cell.name))
        if result.graded:
            _add_messages(course, assignment, result)
    return ClassResults(assignment, max_score, tests, [students[s] for s in sorted(students)])


def _student_row(gradebook: Gradebook, student: str) -> dict[str, str]:
    try:
        row = gradebook.find_student(student)
    except MissingEntry:
        return {}
    return _names(row)


def _names(row) -> dict[str, str]:
    return {
        "first_name": row.first_name or "",
        "last_name": row.last_name or "",
        "email": row.email or "",
        "lms_user_id": row.lms_user_id or "",
    }


def _from_gradebook(submission, max_score: float, statuses: dict[str, tuple[str, str]]) -> StudentResult:
    student = submission.student.id
    status, detail = statuses.get(student, (NO_STATUS, ""))
    result = StudentResult(student, status, detail or "", max_score, **_names(submission.student))
    result.graded = status not in UNGRADED
    if not result.graded:
        return result
    result.raw_score = float(submission.score)
    result.late_penalty = float(submission.late_submission_penalty or 0.0)
    for notebook in submission.notebooks:
        written = {cell.name for cell in notebook.notebook.solution_cells}
        for grade in notebook.grades:
            kind = TEST if grade.cell_type == "code" and grade.name not in written else WRITTEN
            result.cells.append(
                CellResult(
                    name=grade.name,
                    notebook=notebook.name,
                    kind=kind,
                    max_score=float(grade.max_score),
                    score=float(grade.score),
                    auto_score=None if grade.auto_score is None else float(grade.auto_score),
                    needs_manual_grade=bool(grade.needs_manual_grade),
                )
            )
    # A submission the grader had to stop (killed past its time budget) keeps its rows with no
    # automatic scores at all: nothing was graded, so it has no score to report or export.
    tests = [cell for cell in result.cells if cell.kind == TEST]
    result.graded = not tests or any(cell.auto_score is not None for cell in tests)
    return result


def _add_messages(course: Course, assignment: str, result: StudentResult) -> None:
    """Each failed test's message, and the grading time, from the autograded notebooks."""
    folder = course.autograded / result.student / assignment
    seconds = None
    outputs: dict[tuple[str, str], dict] = {}
    for path in sorted(folder.glob("*.ipynb")) if folder.is_dir() else []:
        try:
            notebook = nbformat.read(path, as_version=4)
        except Exception:  # noqa: BLE001 - an unreadable notebook only costs its messages
            continue
        taken = notebook.metadata.get("autograder", {}).get("seconds")
        if isinstance(taken, (int, float)) and not isinstance(taken, bool):
            seconds = (seconds or 0.0) + float(taken)
        for cell in notebook.cells:
            grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
            errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
            if grade_id and errors:
                outputs[(path.stem, grade_id)] = errors[0]
    result.seconds = seconds
    for cell in result.cells:
        error = outputs.get((cell.notebook, cell.name))
        if error is not None and cell.failed:
            cell.message = str(error.get("evalue", ""))
            cell.ename = str(error.get("ename", ""))


def _cell_order(course: Course, assignment: str) -> tuple[dict[str, int], list[str]]:
    """Graded cells' positions as the source notebooks order them, and the test cells' grade ids in that order."""
    order: dict[str, int] = {}
    tests = []
    for name in course.notebook_names(assignment):
        notebook = nbformat.read(course.source / assignment / name, as_version=4)
        for cell in notebook.cells:
            meta = cell.metadata.get("nbgrader", {})
            if meta.get("grade") and meta.get("grade_id"):
                order.setdefault(meta["grade_id"], len(order))
                if cell.cell_type == "code" and not meta.get("solution"):
                    tests.append(meta["grade_id"])
    return order, tests
