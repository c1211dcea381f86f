"""``autograder report A``: one page about the whole class, and a short summary on the terminal.

reports/<assignment>/report.html holds the score histogram, the status counts,
each test's failure rate, the mistakes the checks named most often ("Likely
mistake: X" in their messages), the slowest submissions and one row per
student.  Plots are PNG images inside the page (data: URIs) and the page has no
script, stylesheet or font from elsewhere: it opens offline, from a file or an
e-mail attachment.  What each number is read from: see class_data.py.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .class_data import ClassResults, StudentResult, load_class
from .course import Course

#: How many named mistakes and slow submissions the summary and the page list.
TOP = 10


@dataclass
class TestRate:
    name: str
    failed: int
    ran: int

    @property
    def rate(self) -> float:
        return self.failed / self.ran if self.ran else 0.0


@dataclass
class MistakeCount:
    mistake: str
    test: str
    students: list[str]


@dataclass
class ClassSummary:
    """The numbers both the page and the terminal show."""

    results: ClassResults
    statuses: Counter
    tests: list[TestRate]
    mistakes: list[MistakeCount]
    slowest: list[StudentResult]

    @property
    def scores(self) -> list[float]:
        return [s.score for s in self.results.graded]

    @property
    def mean_fraction(self) -> float:
        scores = self.scores
        maximum = self.results.max_score
        return sum(scores) / len(scores) / maximum if scores and maximum else 0.0


def summarise(results: ClassResults) -> ClassSummary:
    statuses = Counter(s.status for s in results.students)
    ran = [s for s in results.graded]
    tests = []
    for name in results.tests:
        cells = [c for s in ran for c in s.cells if c.name == name]
        tests.append(TestRate(name, sum(c.failed for c in cells), len(cells)))
    named: dict[tuple[str, str], list[str]] = {}
    for student in ran:
        for cell in student.failed_tests:
            if cell.mistake:
                named.setdefault((cell.mistake, cell.name), []).append(student.student)
    mistakes = [MistakeCount(m, t, who) for (m, t), who in named.items()]
    position = {name: index for index, name in enumerate(results.tests)}
    mistakes.sort(key=lambda m: (-len(m.students), position.get(m.test, len(position)), m.mistake))
    timed = sorted((s for s in results.students if s.seconds is not None), key=lambda s: (-s.seconds, s.student))
    return ClassSummary(results, statuses, tests, mistakes, timed)


def write_report(course: Course, assignment: str) -> tuple[Path, ClassSummary]:
    """Write reports/<assignment>/report.html; its path and the summary."""
    summary = summarise(load_class(course, assignment))
    path = course.reports / assignment / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(render_html(summary), encoding="utf-8")
    partial.replace(path)
    return path, summary


# -- the terminal summary --------------------------------------------------------


def format_summary(summary: ClassSummary) -> str:
    results = summary.results
    lines = [f"== {results.assignment}: class report =="]
    counts = ", ".join(f"{n} {status}" for status, n in sorted(summary.statuses.items()))
    lines.append(f"{len(results.students)} submission(s): {counts}")
    scores = summary.scores
    if scores:
        lines.append(
            f"scores of the {len(scores)} graded: mean {sum(scores) / len(scores):.3g} / {results.max_score:g} "
            f"({100 * summary.mean_fraction:.0f}%), min {min(scores):g}, max {max(scores):g}"
        )
    failing = sorted((t for t in summary.tests if t.failed), key=lambda t: (-t.rate, t.name))
    if failing:
        lines.append("most failed tests: " + ", ".join(f"{t.name} {t.failed}/{t.ran}" for t in failing[:5]))
    else:
        lines.append("no test failed")
    if summary.mistakes:
        lines.append("most frequent named mistakes:")
        lines += [f"  {len(m.students)} x {m.mistake} ({m.test})" for m in summary.mistakes[:5]]
    if summary.slowest:
        lines.append("slowest: " + ", ".join(f"{s.student} {s.seconds:.1f} s" for s in summary.slowest[:3]))
    return "\n".join(lines)


# -- the page ------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.num { text-align: right; }
img { max-width: 100%; }
.small { font-size: 85%; color: #555; }
"""


def render_html(summary: ClassSummary) -> str:
    results = summary.results
    e = html.escape
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(results.assignment)}: class report</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{e(results.assignment)}: class report</h1>",
        f'<p class="small">Generated {now} from the gradebook and autograded/ '
        f"(manual grades and late penalties included).</p>",
        f"<p>{len(results.students)} submission(s); {len(summary.scores)} with scores; "
        f"maximum {results.max_score:g} points; mean {100 * summary.mean_fraction:.0f}% of the maximum.</p>",
    ]
    parts += ['<h2 id="scores">Scores</h2>', _histogram(summary)]
    parts += ['<h2 id="statuses">Statuses</h2>', _table(("status", "submissions"), [(s, n) for s, n in sorted(summary.statuses.items())])]
    parts += [
        '<h2 id="tests">Failure rate per test</h2>',
        '<p class="small">Among submissions with scores; a test fails when its automatic score is below its points.</p>',
        _failure_plot(summary),
        _table(("test", "failed", "graded", "rate"), [(t.name, t.failed, t.ran, f"{100 * t.rate:.0f}%") for t in summary.tests]),
    ]
    parts.append('<h2 id="mistakes">Most frequent named mistakes</h2>')
    if summary.mistakes:
        parts.append('<p class="small">Mistakes a check recognised from the answer itself ("Likely mistake: ..." in its message).</p>')
        rows = [(len(m.students), m.mistake, m.test, ", ".join(m.students)) for m in summary.mistakes[:TOP]]
        parts.append(_table(("students", "mistake", "test", "who"), rows))
    else:
        parts.append("<p>No check named a mistake.</p>")
    parts.append('<h2 id="slowest">Slowest submissions</h2>')
    if summary.slowest:
        rows = [(s.student, f"{s.seconds:.1f}", s.status) for s in summary.slowest[:TOP]]
        parts.append(_table(("student", "seconds to grade", "status"), rows))
    else:
        parts.append("<p>No grading times recorded.</p>")
    parts += ['<h2 id="students">Students</h2>', _student_table(results)]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _table(headers: tuple[str, ...], rows: list[tuple]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{e(str(c))}</td>' if isinstance(c, (int, float)) else f"<td>{e(str(c))}</td>" for c in row
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _student_table(results: ClassResults) -> str:
    rows = []
    for s in results.students:
        failed = "; ".join(f"{c.name}: {c.message or 'failed'}" for c in s.failed_tests)
        rows.append(
            (
                s.student,
                s.status,
                f"{s.score:g} / {s.max_score:g}" if s.graded else "",
                s.manual_pending if s.graded else "",
                "" if s.seconds is None else f"{s.seconds:.1f}",
                failed or s.detail,
            )
        )
    return _table(("student", "status", "score", "awaiting manual grading", "seconds", "failed tests / detail"), rows)


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{html.escape(alt)}">'


def _histogram(summary: ClassSummary) -> str:
    from matplotlib.figure import Figure  # the object API: no pyplot state, no display backend

    scores = summary.scores
    if not scores:
        return "<p>No submission has scores.</p>"
    maximum = max(summary.results.max_score, max(scores), 1.0)
    # One bar per point for small totals, else 20 bars.
    edges = [i for i in range(int(maximum) + 2)] if maximum <= 30 else [maximum * i / 20 for i in range(21)]
    figure = Figure(figsize=(7, 3))
    axes = figure.add_subplot()
    axes.hist(scores, bins=edges, color="#4878a8", edgecolor="white", align="left" if maximum <= 30 else "mid")
    axes.set_xlabel(f"score (of {summary.results.max_score:g})")
    axes.set_ylabel("submissions")
    axes.yaxis.get_major_locator().set_params(integer=True)
    return _img(_png(figure), f"histogram of {len(scores)} scores")


def _failure_plot(summary: ClassSummary) -> str:
    from matplotlib.figure import Figure

    tests = summary.tests
    if not tests or not any(t.ran for t in tests):
        return ""
    figure = Figure(figsize=(7, 0.35 * len(tests) + 0.8))
    axes = figure.add_subplot()
    names = [t.name for t in tests][::-1]
    rates = [100 * t.rate for t in tests][::-1]
    axes.barh(names, rates, color="#c0504d")
    axes.set_xlim(0, 100)
    axes.set_xlabel("% of graded submissions failing")
    return _img(_png(figure), "failure rate per test")
