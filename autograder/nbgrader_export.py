"""``nbgrader export`` with the autograder's status and the answers still awaiting a person.

nbgrader's own CSV export writes 0.0 for a submission that timed out, died or
was tampered with, exactly like a genuine 0, and says nothing about written
answers nobody has graded yet.  The course's nbgrader_config.py sets::

    c.ExportApp.plugin_class = "autograder.nbgrader_export.StatusCsvExportPlugin"

and ``nbgrader export`` then writes nbgrader's columns followed by

* ``status``: what the grader recorded (``graded``, ``tampered``, ``timeout``,
  ``memory limit``, ``kernel died``, ``invalid notebook``, ``missing``,
  ``grader error``); ``missing`` for a student with no submission; empty for a
  submission the autograder never graded;
* ``status_detail``: the one-line reason for any status but ``graded``;
* ``manual_pending``: how many of the submission's grades still need a person
  (written answers, and every answer of a submission that could not be graded).

Values are written with the csv module, so a comma in a name or a detail
cannot shift the columns.  ``--to``, ``--assignment`` and ``--student`` work as
for nbgrader's own exporter.
"""

from __future__ import annotations

import csv

from nbgrader.api import Gradebook, MissingEntry
from nbgrader.plugins.export import ExportPlugin
from sqlalchemy import text

from .record import STATUS_TABLE, _ensure_status_table
from .status import Status

NBGRADER_FIELDS = [
    "assignment", "duedate", "timestamp", "student_id", "last_name", "first_name", "email",
    "raw_score", "late_submission_penalty", "score", "max_score",
]
FIELDS = NBGRADER_FIELDS + ["status", "status_detail", "manual_pending"]


def _statuses(gradebook: Gradebook, assignment: str) -> dict[str, tuple[str, str]]:
    session = gradebook.db
    _ensure_status_table(session)
    rows = session.execute(text(f"SELECT student, status, detail FROM {STATUS_TABLE} WHERE assignment = :a"), {"a": assignment}).all()
    session.commit()
    return {student: (status, detail or "") for student, status, detail in rows}


def _cell(value: object) -> str:
    return "" if value is None else str(value)


class StatusCsvExportPlugin(ExportPlugin):
    """nbgrader's CSV export, plus each submission's status and its count of answers awaiting manual grading."""

    def export(self, gradebook: Gradebook) -> None:
        dest = self.to or "grades.csv"
        students = {str(s) for s in self.student}
        assignments = {str(a) for a in self.assignment}
        self.log.info("Exporting grades with the autograder's status to %s", dest)
        with open(dest, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=FIELDS)
            writer.writeheader()
            for assignment in gradebook.assignments:
                if assignments and assignment.name not in assignments:
                    continue
                statuses = _statuses(gradebook, assignment.name)
                for student in gradebook.students:
                    if students and student.id not in students:
                        continue
                    writer.writerow({key: _cell(value) for key, value in self._row(gradebook, assignment, student, statuses).items()})

    @staticmethod
    def _row(gradebook: Gradebook, assignment, student, statuses: dict[str, tuple[str, str]]) -> dict[str, object]:
        row: dict[str, object] = {
            "assignment": assignment.name,
            "duedate": assignment.duedate,
            "student_id": student.id,
            "last_name": student.last_name,
            "first_name": student.first_name,
            "email": student.email,
            "max_score": assignment.max_score,
        }
        status, detail = statuses.get(student.id, ("", ""))
        try:
            submission = gradebook.find_submission(assignment.name, student.id)
        except MissingEntry:
            row.update(timestamp="", raw_score=0.0, late_submission_penalty=0.0, score=0.0, manual_pending=0)
            status = status or str(Status.MISSING)
            detail = detail or "no submission"
        else:
            penalty = submission.late_submission_penalty
            row.update(
                timestamp=submission.timestamp,
                raw_score=submission.score,
                late_submission_penalty=penalty,
                score=max(0.0, submission.score - penalty),
                manual_pending=sum(1 for notebook in submission.notebooks for grade in notebook.grades if grade.needs_manual_grade),
            )
        row.update(status=status, status_detail="" if status == str(Status.GRADED) else detail)
        return row
