"""Write outcomes where a TA looks: the nbgrader gradebook, autograded/ and grades.csv.

``GradebookWriter`` is the one writer of a grading run.  Each submission is
written in one database transaction: the student, the
submission, every grade and comment, the late penalty and its status row
(table ``autograder_status``, next to nbgrader's own tables).  A grader killed
half-way leaves each submission either fully recorded or untouched, and a
rerun updates rows in place, so nothing is lost or doubled.  Manual scores a
TA already gave are kept; like nbgrader, a cell with a manual score is marked
for review when its automatic score is recomputed.

The autograded notebooks are built in a temporary folder and swapped into
``autograded/<student>/<assignment>`` once the transaction has committed.
"""

from __future__ import annotations

import csv
import datetime
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbgrader.api import (
    Comment,
    Grade,
    Gradebook,
    MissingEntry,
    Student,
    SubmittedAssignment,
    SubmittedNotebook,
)
from nbgrader.coursedir import CourseDirectory
from nbgrader.preprocessors import AssignLatePenalties
from nbgrader.utils import parse_utc
from sqlalchemy import text

from .collect import SOLUTION, TESTS, WRITTEN, Submission
from .course import Course
from .execute import NotebookResult, autograded_notebook
from .status import Status
from .wire import safe_text

#: Where each submission was graded (job.Provenance): the runner ("local" on the TA's machine),
#: its host, the device (cpu or the GPU's name), torch and CUDA versions.
PROVENANCE_FIELDS = ["runner", "host", "device", "torch", "cuda"]
CSV_FIELDS = ["student", "status", "score", "max_score", "manual_pending", "failed_tests", "messages", "detail", "sandbox",
              *PROVENANCE_FIELDS]
STATUS_TABLE = "autograder_status"


@dataclass
class GradeRow:
    student: str
    status: Status
    score: float
    max_score: float
    manual_pending: int = 0
    #: grade_id -> the first line of the failing check's message.
    failures: dict[str, str] = field(default_factory=dict)
    detail: str = ""
    sandbox: str = ""
    #: PROVENANCE_FIELDS -> value; empty for a submission that was never sent to be graded.
    provenance: dict[str, str] = field(default_factory=dict)

    def as_csv(self) -> dict[str, str]:
        return {
            "student": self.student,
            "status": str(self.status),
            "score": f"{self.score:g}",
            "max_score": f"{self.max_score:g}",
            "manual_pending": str(self.manual_pending),
            "failed_tests": ";".join(self.failures),
            "messages": " | ".join(f"{name}: {message}" for name, message in self.failures.items()),
            "detail": self.detail,
            "sandbox": self.sandbox,
            **{key: self.provenance.get(key, "") for key in PROVENANCE_FIELDS},
        }


def enrolled_students(course: Course) -> set[str]:
    with Gradebook(course.db_url) as gradebook:
        return {student.id for student in gradebook.students}


def knows_assignment(course: Course, assignment: str) -> bool:
    """Whether the gradebook holds the assignment's test cells (nbgrader puts them there on release)."""
    with Gradebook(course.db_url) as gradebook:
        try:
            return bool(gradebook.find_assignment(assignment).notebooks)
        except MissingEntry:
            return False


# -- the status table ------------------------------------------------------------


def _ensure_status_table(session) -> None:
    session.execute(
        text(
            f"CREATE TABLE IF NOT EXISTS {STATUS_TABLE} ("
            "assignment VARCHAR(128) NOT NULL, student VARCHAR(128) NOT NULL, status VARCHAR(32) NOT NULL, "
            "detail TEXT, sandbox VARCHAR(64), graded_at VARCHAR(40), PRIMARY KEY (assignment, student))"
        )
    )
    _add_provenance_columns(session)


#: Databases whose status table is known to have the provenance columns (checked once per run).
_with_provenance: set[str] = set()


def _add_provenance_columns(session) -> None:
    """Status tables written before runners existed get the provenance columns."""
    from sqlalchemy import inspect

    bind = session.get_bind()
    if str(bind.url) in _with_provenance:
        return
    present = {column["name"] for column in inspect(session.connection()).get_columns(STATUS_TABLE)}
    for name in PROVENANCE_FIELDS:
        if name not in present:
            session.execute(text(f"ALTER TABLE {STATUS_TABLE} ADD COLUMN {name} VARCHAR(256)"))
    _with_provenance.add(str(bind.url))


def _write_status(session, assignment: str, student: str, status: Status, detail: str, sandbox: str,
                  provenance: dict[str, str] | None = None) -> None:
    _ensure_status_table(session)
    session.execute(text(f"DELETE FROM {STATUS_TABLE} WHERE assignment = :a AND student = :s"), {"a": assignment, "s": student})
    where = ", ".join(PROVENANCE_FIELDS)
    values = ", ".join(f":p_{name}" for name in PROVENANCE_FIELDS)
    session.execute(
        text(f"INSERT INTO {STATUS_TABLE} (assignment, student, status, detail, sandbox, graded_at, {where}) "
             f"VALUES (:a, :s, :st, :d, :sb, :t, {values})"),
        {
            "a": assignment,
            "s": student,
            "st": str(status),
            "d": safe_text(detail, 4000),
            "sb": sandbox,
            "t": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **{f"p_{name}": safe_text((provenance or {}).get(name, ""), 256) for name in PROVENANCE_FIELDS},
        },
    )


def stored_statuses(course: Course, assignment: str) -> dict[str, tuple[str, str]]:
    """student -> (status, detail) as recorded in the gradebook."""
    with Gradebook(course.db_url) as gradebook:
        _ensure_status_table(gradebook.db)
        rows = gradebook.db.execute(
            text(f"SELECT student, status, detail FROM {STATUS_TABLE} WHERE assignment = :a"), {"a": assignment}
        ).all()
        gradebook.db.commit()
    return {student: (status, detail) for student, status, detail in rows}


#: Statuses a TA must see in the formgrader: the submission is flagged and its answers carry a comment.
FLAGGED = (Status.TAMPERED, Status.TIMEOUT, Status.MEMORY_LIMIT, Status.KERNEL_DIED, Status.INVALID_NOTEBOOK, Status.GRADER_ERROR)
COMMENT_PREFIX = "Autograder: "


def _previous_status(session, assignment: str, student: str) -> str | None:
    _ensure_status_table(session)
    return session.execute(
        text(f"SELECT status FROM {STATUS_TABLE} WHERE assignment = :a AND student = :s"), {"a": assignment, "s": student}
    ).scalar()


def _show_status(session, record: SubmittedAssignment, status: Status, detail: str) -> None:
    """Make the status visible where a TA grades: nbgrader's flag on each submitted notebook (the
    flag column of the formgrader's submission lists) and an automatic comment, naming what
    happened, on every answer cell (shown beside the answer in the formgrader and the feedback).

    A rerun that grades the submission cleanly takes down the flag only if an earlier run of the
    grader put it up; a flag a TA set by hand stays."""
    previous = _previous_status(session, record.assignment.name, record.student.id)
    flagged = status in FLAGGED
    # One paragraph (no blank line inside), so that a later run can tell it from the cell's own comment.
    note = f"{COMMENT_PREFIX}{status}: {' '.join(safe_text(detail, 1000).split()) or 'see grades.csv'}"
    for notebook in record.notebooks:
        if flagged:
            notebook.flagged = True
        elif previous in {str(s) for s in FLAGGED}:
            notebook.flagged = False
        for comment in notebook.comments:
            earlier = comment.auto_comment or ""
            if earlier.startswith(COMMENT_PREFIX):  # an earlier run's note: replaced, or gone once graded
                earlier = earlier.partition("\n\n")[2]
            if flagged:
                comment.auto_comment = f"{note}\n\n{earlier}" if earlier else note
            else:
                comment.auto_comment = earlier or None


# -- one submission, one transaction ---------------------------------------------


def _submission_row(gradebook: Gradebook, submission: Submission, timestamp: str | None) -> SubmittedAssignment:
    session = gradebook.db
    student = session.get(Student, submission.student)
    if student is None:
        student = Student(id=submission.student)
        session.add(student)
    assignment = gradebook.find_assignment(submission.assignment)
    try:
        record = gradebook.find_submission(submission.assignment, submission.student)
    except MissingEntry:
        record = SubmittedAssignment(assignment=assignment, student=student)
        session.add(record)
    try:
        record.timestamp = parse_utc(timestamp) if timestamp else None
    except (ValueError, OverflowError, TypeError):
        record.timestamp = None  # timestamp.txt comes with the submission: unreadable means unknown
    with session.no_autoflush:
        existing = {nb.notebook_id: nb for nb in record.notebooks}
        for notebook in assignment.notebooks:
            submitted = existing.get(notebook.id)
            if submitted is None:
                submitted = SubmittedNotebook(notebook=notebook, assignment=record)
                session.add(submitted)
            grades = {g.cell_id for g in submitted.grades}
            comments = {c.cell_id for c in submitted.comments}
            for cell in list(notebook.grade_cells) + list(notebook.task_cells):
                if cell.id not in grades:
                    session.add(Grade(cell_id=cell.id, notebook=submitted))
                    grades.add(cell.id)
            for cell in list(notebook.solution_cells) + list(notebook.task_cells):
                if cell.id not in comments:
                    session.add(Comment(cell_id=cell.id, notebook=submitted))
                    comments.add(cell.id)
    session.flush()
    return record


def _set_auto(grade: Grade, score: float | None) -> None:
    grade.auto_score = score
    # nbgrader's rule: a manual score, or no automatic one, means a person must look.
    grade.needs_manual_grade = grade.manual_score is not None or score is None


class GradebookWriter:
    """The gradebook, open for a whole grading run, and the one writer of its outcomes.

    One connection for the run, not one per submission: SQLAlchemy caches the
    SQL it compiles per engine, and compiling nbgrader's queries afresh was most
    of the cost of recording a submission.  Each submission is still its own
    transaction.
    """

    def __init__(self, course: Course) -> None:
        self.course = course
        self.gradebook = Gradebook(course.db_url)

    def __enter__(self) -> "GradebookWriter":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def close(self) -> None:
        self.gradebook.close()

    def graded(self, submission: Submission, results: list[NotebookResult], status: Status, detail: str, sandbox: str,
               provenance: dict[str, str] | None = None) -> GradeRow:
        """Write a graded submission's scores, comments and status, then its autograded notebooks."""
        course, gradebook = self.course, self.gradebook
        staged = _stage_autograded(course, submission, results)
        timestamp = _timestamp(course, submission)
        failures: dict[str, str] = {}
        session = gradebook.db
        try:
            record = _submission_row(gradebook, submission, timestamp)
            by_name = {f"{nb.notebook.name}.ipynb": nb for nb in record.notebooks}
            graded_names = {result.name for result in results}
            for name, submitted in by_name.items():
                if name not in graded_names:
                    # Like nbgrader: a notebook that was not handed in scores 0 everywhere.
                    for grade in submitted.grades:
                        _set_auto(grade, 0.0)
            for result in results:
                submitted = by_name.get(result.name)
                if submitted is not None:
                    failures.update(_set_notebook_grades(submitted, result))
            session.flush()
            _late_penalties(course, record)
            _show_status(session, record, status, detail)
            _write_status(session, submission.assignment, submission.student, status, detail, sandbox, provenance)
            session.commit()
        except BaseException:
            session.rollback()
            shutil.rmtree(staged, ignore_errors=True)
            raise
        _swap_in(course, submission, staged)
        row = self._row(submission, status, detail, sandbox, failures)
        row.provenance = dict(provenance or {})
        return row

    def ungraded(self, submission: Submission, status: Status, detail: str, sandbox: str,
                 provenance: dict[str, str] | None = None) -> GradeRow:
        """A submission that could not be graded: its status, and for an invalid one grades that await a person."""
        course, gradebook = self.course, self.gradebook
        shutil.rmtree(course.autograded / submission.student / submission.assignment, ignore_errors=True)
        session = gradebook.db
        try:
            # Whatever an earlier run recorded no longer holds: the answers await a person.
            if status in (Status.INVALID_NOTEBOOK, Status.GRADER_ERROR, Status.TIMEOUT, Status.KERNEL_DIED):
                record = _submission_row(gradebook, submission, _timestamp(course, submission))
                for notebook in record.notebooks:
                    for grade in notebook.grades:
                        grade.auto_score = None
                        grade.needs_manual_grade = True
                _show_status(session, record, status, detail)
            _write_status(session, submission.assignment, submission.student, status, detail, sandbox, provenance)
            session.commit()
        except BaseException:
            session.rollback()
            raise
        try:
            max_score = float(gradebook.find_assignment(submission.assignment).max_score)
        except MissingEntry:
            max_score = 0.0
        return GradeRow(submission.student, status, 0.0, max_score, detail=detail, sandbox=sandbox, provenance=dict(provenance or {}))

    def _row(self, submission: Submission, status: Status, detail: str, sandbox: str, failures: dict[str, str]) -> GradeRow:
        """The submission's row as the gradebook now holds it (manual scores and penalties included)."""
        record = self.gradebook.find_submission(submission.assignment, submission.student)
        score, max_score = float(record.score), float(record.max_score)
        pending = sum(1 for nb in record.notebooks for grade in nb.grades if grade.needs_manual_grade)
        self.gradebook.db.commit()  # end the read, so no transaction stays open between submissions
        return GradeRow(submission.student, status, score, max_score, pending, failures, detail, sandbox)


def _set_notebook_grades(submitted: SubmittedNotebook, result: NotebookResult) -> dict[str, str]:
    """Set one notebook's automatic scores and "No response." comments; its failing tests and their messages."""
    failures: dict[str, str] = {}
    kinds = {step.trusted.grade_id: step for step in result.plan.steps if step.trusted is not None}
    cells = submitted.notebook
    names = {c.id: c.name for c in list(cells.grade_cells) + list(cells.solution_cells) + list(cells.task_cells)}
    for grade in submitted.grades:
        name = names.get(grade.cell_id)
        step = kinds.get(name)
        if step is None or step.trusted is None:
            continue
        if step.trusted.kind == TESTS:
            verdict = result.verdicts.get(name)
            _set_auto(grade, verdict.score if verdict else 0.0)
            if verdict is not None and not verdict.passed:
                failures[name] = verdict.summary()
        elif step.trusted.kind == WRITTEN:
            _set_auto(grade, 0.0 if name in result.plan.unchanged else None)
    for comment in submitted.comments:
        name = names.get(comment.cell_id)
        step = kinds.get(name)
        unanswered = step is not None and step.trusted is not None and step.trusted.kind in (SOLUTION, WRITTEN) and name in result.plan.unchanged
        comment.auto_comment = "No response." if unanswered else None
    return failures


def _late_penalties(course: Course, record: SubmittedAssignment) -> None:
    seconds_late = record.total_seconds_late
    for notebook in record.notebooks:
        notebook.late_submission_penalty = None
        if seconds_late > 0:
            assigner = AssignLatePenalties(config=course.config())
            assigner.init_plugin()
            penalty = assigner.plugin_inst.late_submission_penalty(record.student.id, notebook.score, seconds_late)
            if penalty is not None:
                notebook.late_submission_penalty = min(max(penalty, 0), notebook.score)


#: A timestamp is one short line; a longer timestamp.txt (the student hands it in) is not read.
MAX_TIMESTAMP_BYTES = 256


def _timestamp(course: Course, submission: Submission) -> str | None:
    path = submission.folder / "timestamp.txt"
    try:
        if path.is_symlink() or (path.exists() and path.stat().st_size > MAX_TIMESTAMP_BYTES):
            return None
    except OSError:
        return None
    coursedir = CourseDirectory(config=course.config())
    try:
        return coursedir.get_existing_timestamp(str(submission.folder))
    except Exception:  # noqa: BLE001 - an unreadable timestamp.txt means no timestamp
        return None


# -- autograded notebooks --------------------------------------------------------


def _stage_autograded(course: Course, submission: Submission, results: list[NotebookResult]) -> Path:
    parent = course.autograded / submission.student
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(f".{submission.assignment}.*"):
        shutil.rmtree(stale, ignore_errors=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{submission.assignment}.new-", dir=parent))
    try:
        for result in results:
            notebook = autograded_notebook(result)
            nbformat.validate(notebook)  # once per notebook: its cells and outputs are built unvalidated
            # Student text was made safe where it entered; "replace" is the last guard, so
            # that no character can stop the class from being recorded.
            (staged / result.name).write_bytes(nbformat.writes(notebook).encode("utf-8", "replace"))
        _copy_submission_files(submission.folder, staged)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return staged


#: What nbgrader's autograde copies from submitted/ and its feedback commands need in autograded/:
#: ``generate_feedback`` copies them on to feedback/, ``release_feedback`` reads both (the
#: submission secret names the released file the student's ``fetch_feedback`` looks for).
SUBMISSION_FILES = {"timestamp.txt": MAX_TIMESTAMP_BYTES, "submission_secret.txt": 1024}


def _copy_submission_files(folder: Path, staged: Path) -> None:
    """Copy timestamp.txt and submission_secret.txt, when each is a short regular file; a link,
    a FIFO or a long file (the student hands them in) is left behind."""
    for name, limit in SUBMISSION_FILES.items():
        try:
            handle = os.open(folder / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            info = os.fstat(handle)
            if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
                continue
            data = os.read(handle, limit + 1)
        except OSError:
            continue
        finally:
            os.close(handle)
        if len(data) <= limit:
            (staged / name).write_bytes(data)


def _swap_in(course: Course, submission: Submission, staged: Path) -> None:
    final = course.autograded / submission.student / submission.assignment
    if final.exists():
        old = final.with_name(f".{submission.assignment}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        staged.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staged.rename(final)
    os.chmod(final, 0o755)


def write_csv(rows: list[GradeRow], path: Path, *, merge: bool = False) -> Path:
    """Write the class's grades.csv; with ``merge``, ``rows`` replace their students' rows and the rest stay."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = {row.student: row.as_csv() for row in rows}
    if merge and path.is_file():
        with path.open(newline="", encoding="utf-8", errors="replace") as handle:
            kept = {line["student"]: line for line in csv.DictReader(handle) if line.get("student")}
        lines = {**kept, **lines}
        lines = {student: lines[student] for student in sorted(lines)}
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w", newline="", encoding="utf-8", errors="replace") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS, restval="", extrasaction="ignore")
        writer.writeheader()
        for line in lines.values():
            writer.writerow(line)
    partial.replace(path)
    return path
