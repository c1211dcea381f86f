"""``autograder export A --format gradescope|canvas``: the class's grades in an LMS's own format.

Gradescope (https://gradescope-autograders.readthedocs.io/en/latest/specs/):
one ``results.json`` per student, reports/<A>/gradescope/<student>/results.json,
with the top-level ``score`` (the final score: manual grades in, late penalty
out), ``execution_time``, ``output`` (the status and what awaits a person),
``extra_data`` and ``tests``: one entry per graded cell with ``name``,
``score``, ``max_score``, ``status`` (tests only), ``output`` (the failing
check's message, the text the student's feedback shows) and ``visibility``.
reports/<A>/gradescope/index.csv lists student, email and file, so a Gradescope
``run_autograder`` can pick a student's file by the submitter's e-mail in
submission_metadata.json.

Canvas (Gradebook "Import" CSV): reports/<A>/canvas.csv with the columns
``Student, ID, SIS User ID, SIS Login ID, Section`` and one assignment column,
``<name> (<Canvas assignment id>)`` (just ``<name>`` creates a new assignment
on import), then a ``Points Possible`` row.  Canvas matches a row by ID, SIS
User ID or SIS Login ID: a student with none of them is left out and named.

Our student ids are nbgrader's.  The LMS ids come from, in order: the roster
CSV (``--roster``: a column ``id`` with our student id and any of ``name``,
``email``, ``canvas_id``, ``sis_user_id``, ``sis_login_id``, ``section``); the
gradebook's student table (``nbgrader db student import``: first_name,
last_name, email and lms_user_id, used as the Canvas ID); and, with
``--student-id-is sis_login_id`` (or ``sis_user_id``, ``canvas_id``), our id itself.

A submission with nothing graded (missing, invalid notebook, grader error) is
never exported as a 0: its Canvas cell is empty and it gets no results.json.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .class_data import TEST, ClassResults, StudentResult, load_class
from .course import Course
from .errors import UsageError

FORMATS = ("gradescope", "canvas")
ROSTER_COLUMNS = ("id", "name", "email", "canvas_id", "sis_user_id", "sis_login_id", "section")
ID_KINDS = ("canvas_id", "sis_user_id", "sis_login_id")
CANVAS_HEADER = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
#: Gradescope's test visibilities; "after_published" matches nbgrader, where students see feedback once it is released.
VISIBILITIES = ("visible", "hidden", "after_due_date", "after_published")


@dataclass
class LmsIdentity:
    name: str = ""
    email: str = ""
    canvas_id: str = ""
    sis_user_id: str = ""
    sis_login_id: str = ""
    section: str = ""


@dataclass
class ExportResult:
    paths: list[Path]
    #: One line per thing the TA must know (students left out, answers awaiting a person).
    warnings: list[str] = field(default_factory=list)


def read_roster(path: Path) -> dict[str, dict[str, str]]:
    """student id -> the roster's fields for that student."""
    if not path.is_file():
        raise UsageError(f"roster not found: {path}")
    with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: a roster saved by Excel starts with a BOM
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        if "id" not in columns:
            raise UsageError(f"roster {path} has no 'id' column (the nbgrader student id); columns: {', '.join(ROSTER_COLUMNS)}")
        unknown = [c for c in columns if c not in ROSTER_COLUMNS]
        if unknown:
            raise UsageError(f"roster {path}: unknown column(s) {', '.join(unknown)} (known: {', '.join(ROSTER_COLUMNS)})")
        roster: dict[str, dict[str, str]] = {}
        for line in reader:
            fields = {k.strip(): (v or "").strip() for k, v in line.items() if k}
            if fields.get("id"):
                roster[fields["id"]] = fields
    return roster


def identity(student: StudentResult, roster: dict[str, dict[str, str]], student_id_is: str | None) -> LmsIdentity:
    """A student's LMS identity: the roster first, then the gradebook, then (if told so) our own id."""
    entry = roster.get(student.student, {})
    found = LmsIdentity(
        name=entry.get("name") or student.display_name,
        email=entry.get("email") or student.email,
        canvas_id=entry.get("canvas_id") or student.lms_user_id,
        sis_user_id=entry.get("sis_user_id", ""),
        sis_login_id=entry.get("sis_login_id", ""),
        section=entry.get("section", ""),
    )
    if student_id_is and not getattr(found, student_id_is):
        setattr(found, student_id_is, student.student)
    return found


def export(
    course: Course,
    assignment: str,
    fmt: str,
    *,
    roster: Path | None = None,
    student_id_is: str | None = None,
    canvas_name: str | None = None,
    canvas_id: str | None = None,
    visibility: str = "after_published",
) -> ExportResult:
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if student_id_is is not None and student_id_is not in ID_KINDS:
        raise UsageError(f"--student-id-is must be one of {', '.join(ID_KINDS)}, not {student_id_is!r}")
    if visibility not in VISIBILITIES:
        raise UsageError(f"--visibility must be one of {', '.join(VISIBILITIES)}, not {visibility!r}")
    results = load_class(course, assignment)
    names = read_roster(roster) if roster is not None else {}
    folder = course.reports / assignment
    if fmt == "gradescope":
        outcome = write_gradescope(results, folder / "gradescope", names, student_id_is, visibility)
    else:
        outcome = write_canvas(results, folder / "canvas.csv", names, student_id_is, canvas_name or assignment, canvas_id)
    outcome.warnings += _common_warnings(results)
    return outcome


def _common_warnings(results: ClassResults) -> list[str]:
    warnings = []
    ungraded = [s for s in results.students if not s.graded]
    if ungraded:
        warnings.append(
            f"{len(ungraded)} submission(s) with nothing graded, not exported as a score: "
            + ", ".join(f"{s.student} ({s.status})" for s in ungraded)
        )
    pending = [s for s in results.graded if s.manual_pending]
    if pending:
        warnings.append(
            f"{len(pending)} submission(s) still have answers awaiting manual grading (exported as 0 for now; "
            "grade them in the formgrader and export again)"
        )
    return warnings


def _points(value: float) -> float | int:
    """A score as JSON: a whole number of points as an int, else a float."""
    return int(value) if float(value).is_integer() else round(float(value), 6)


# -- Gradescope ------------------------------------------------------------------------


def gradescope_results(student: StudentResult, visibility: str, several_notebooks: bool) -> dict:
    """One student's results.json, following Gradescope's autograder specification."""
    tests = []
    for cell in student.cells:
        name = f"{cell.notebook}: {cell.name}" if several_notebooks else cell.name
        entry: dict = {"name": name, "score": _points(cell.score), "max_score": _points(cell.max_score)}
        if cell.kind == TEST:
            passed = cell.auto_score is not None and cell.auto_score >= cell.max_score
            entry["status"] = "passed" if passed else "failed"
            if passed:
                entry["output"] = "passed"
            else:
                message = cell.message or "failed"
                entry["output"] = f"{cell.ename}: {message}" if cell.ename else message
        else:
            entry["output"] = "awaiting manual grading" if cell.needs_manual_grade else "graded by hand"
        entry["visibility"] = visibility
        tests.append(entry)
    lines = [f"Status: {student.status}."]
    if student.detail:
        lines.append(student.detail)
    if student.late_penalty:
        lines.append(f"Late penalty: -{student.late_penalty:g} point(s).")
    if student.manual_pending:
        lines.append(f"{student.manual_pending} answer(s) await manual grading and count 0 until graded.")
    document: dict = {
        "score": _points(student.score),
        "output": "\n".join(lines),
        "tests": tests,
        "extra_data": {
            "student": student.student,
            "status": student.status,
            "max_score": _points(student.max_score),
            "late_penalty": _points(student.late_penalty),
            "manual_pending": student.manual_pending,
        },
    }
    if student.seconds is not None:
        document["execution_time"] = max(1, math.ceil(student.seconds))
    return document


def write_gradescope(
    results: ClassResults, folder: Path, roster: dict, student_id_is: str | None, visibility: str
) -> ExportResult:
    several = len({cell.notebook for s in results.graded for cell in s.cells}) > 1
    paths = []
    index = []
    for student in results.graded:
        path = folder / student.student / "results.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(path, json.dumps(gradescope_results(student, visibility, several), indent=2, ensure_ascii=False) + "\n")
        paths.append(path)
        who = identity(student, roster, student_id_is)
        index.append({"student": student.student, "name": who.name, "email": who.email, "results": f"{student.student}/results.json"})
    index_path = folder / "index.csv"
    folder.mkdir(parents=True, exist_ok=True)
    _write_csv(index_path, ["student", "name", "email", "results"], [list(row.values()) for row in index])
    outcome = ExportResult([index_path] + paths)
    no_email = [row["student"] for row in index if not row["email"]]
    if no_email:
        outcome.warnings.append(
            f"{len(no_email)} student(s) have no e-mail (roster 'email' or the gradebook) to match a Gradescope submitter: "
            + ", ".join(no_email)
        )
    return outcome


# -- Canvas -----------------------------------------------------------------------------


def canvas_column(name: str, assignment_id: str | None) -> str:
    return f"{name} ({assignment_id})" if assignment_id else name


def write_canvas(
    results: ClassResults, path: Path, roster: dict, student_id_is: str | None, name: str, assignment_id: str | None
) -> ExportResult:
    rows = [["Points Possible", "", "", "", "", f"{results.max_score:g}"]]
    unmatched = []
    for student in results.students:
        who = identity(student, roster, student_id_is)
        if not (who.canvas_id or who.sis_user_id or who.sis_login_id):
            unmatched.append(student.student)
            continue
        score = f"{student.score:g}" if student.graded else ""
        rows.append([who.name, who.canvas_id, who.sis_user_id, who.sis_login_id, who.section, score])
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_csv(path, CANVAS_HEADER + [canvas_column(name, assignment_id)], rows)
    outcome = ExportResult([path])
    if unmatched:
        outcome.warnings.append(
            f"{len(unmatched)} student(s) left out: no Canvas ID, SIS User ID or SIS Login ID (give a --roster, "
            "import lms_user_id with `nbgrader db student import`, or say --student-id-is): " + ", ".join(unmatched)
        )
    return outcome


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    partial.replace(path)


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)
