"""What a TA reads at the end of a run: one line per student and a class summary."""

from __future__ import annotations

from collections import Counter
from typing import TextIO

from .record import GradeRow
from .sandbox import RLIMITS_ONLY


def format_table(assignment: str, rows: list[GradeRow]) -> str:
    headers = ("student", "status", "score", "manual", "failed tests")
    body = [
        (
            row.student,
            str(row.status),
            f"{row.score:g} / {row.max_score:g}",
            str(row.manual_pending) if row.manual_pending else "",
            ", ".join(row.failures) if row.failures else row.detail,
        )
        for row in rows
    ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *body)]
    widths[-1] = len(headers[-1])  # the last column runs on freely
    lines = [f"== {assignment} =="]
    lines.append("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip() for cells in body]
    lines.append(_summary(rows))
    if any(row.sandbox == RLIMITS_ONLY for row in rows):
        lines.append("WARNING: student code ran without the bubblewrap sandbox (resource limits only); see the 'sandbox' column")
    return "\n".join(lines)


def _summary(rows: list[GradeRow]) -> str:
    counts = Counter(str(row.status) for row in rows)
    graded = [row for row in rows if row.max_score]
    mean = sum(row.score / row.max_score for row in graded) / len(graded) if graded else 0.0
    parts = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    pending = sum(row.manual_pending for row in rows)
    manual = f"; {pending} answer(s) await manual grading" if pending else ""
    return f"{len(rows)} submission(s): {parts}; mean {100 * mean:.0f}% of max{manual}"


def print_table(assignment: str, rows: list[GradeRow], stream: TextIO) -> None:
    print(format_table(assignment, rows), file=stream)
