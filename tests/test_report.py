"""`autograder report A`: the class page and summary say what the grading run found, and the page opens offline."""

from __future__ import annotations

import base64
import re
from collections import Counter
from html.parser import HTMLParser

import pytest

import course_checks
from autograder.class_data import ClassResults, StudentResult, load_class, named_mistake
from autograder.class_report import render_html, summarise, write_report
from test_cli import _one_line_error, autograder

ASSIGNMENT = "a01_encoding"
UNGRADED = {"missing", "invalid notebook", "grader error"}


@pytest.fixture(scope="module")
def reported(graded_class):
    course, rows = graded_class
    result = autograder("report", ASSIGNMENT, "--course", str(course.root))
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    return course, rows, result.stdout


def test_named_mistake_reads_what_course_checks_writes():
    from autograder import class_data

    assert class_data.LIKELY == course_checks.LIKELY
    assert named_mistake("Likely mistake: max instead of argmax. from_one_hot(...): got 1, expected 2") == "max instead of argmax"
    assert named_mistake("AssertionError: Likely mistake: a float32 array; use float64.") == "a float32 array; use float64"
    assert named_mistake("Likely mistake: probs[:, labels] picks an N x N block") == "probs[:, labels] picks an N x N block"
    assert named_mistake("shape (5, 2), expected (5, 4). Hint: Likely the width") is None
    assert named_mistake("") is None


def test_summary_counts_every_status(reported):
    _, rows, stdout = reported
    counts = Counter(str(row.status) for row in rows.values())
    assert {"graded", "tampered", "invalid notebook", "missing"} <= set(counts)
    expected = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    assert f"{len(rows)} submission(s): {expected}" in stdout
    assert "report written to" in stdout and "report.html" in stdout


def test_numbers_match_the_grading_run(reported):
    course, rows, _ = reported
    summary = summarise(load_class(course, ASSIGNMENT))
    assert Counter(summary.statuses) == Counter(str(row.status) for row in rows.values())
    ran = [row for row in rows.values() if str(row.status) not in UNGRADED]
    # Failure rates: the gradebook's automatic scores against the failures grading reported.
    for test in summary.tests:
        assert test.ran == len(ran), test
        assert test.failed == sum(test.name in row.failures for row in ran), test
    # Named mistakes: read from the autograded notebooks; grading reported them in each failure's summary.
    expected: dict[tuple[str, str], set[str]] = {}
    for row in ran:
        for test, message in row.failures.items():
            if named_mistake(message):
                expected.setdefault((named_mistake(message), test), set()).add(row.student)
    found = {(m.mistake, m.test): set(m.students) for m in summary.mistakes}
    assert found == expected
    assert expected, "the a01 samples name mistakes: the report must list them"
    counts = [len(m.students) for m in summary.mistakes]
    assert counts == sorted(counts, reverse=True)


def test_scores_are_the_gradebooks_with_manual_grades(reported):
    course, rows, _ = reported
    results = {s.student: s for s in load_class(course, ASSIGNMENT).students}
    # The fixture's TA gave "correct" the written answer's 2 points after grading.
    assert results["correct"].score == rows["correct"].score + 2
    assert not next(c for c in results["correct"].cells if c.name == "q_label_smoothing").needs_manual_grade
    for student, row in rows.items():
        if student != "correct" and str(row.status) not in UNGRADED:
            assert results[student].score == row.score, student
    assert not results["corrupt"].graded and not results["renamed"].graded


def test_slowest_submissions_are_timed_and_sorted(reported):
    course, _, stdout = reported
    summary = summarise(load_class(course, ASSIGNMENT))
    times = [s.seconds for s in summary.slowest]
    assert len(times) == len(summary.results.graded), "every graded submission has its grading time"
    assert all(t > 0 for t in times) and times == sorted(times, reverse=True)
    assert f"slowest: {summary.slowest[0].student} " in stdout


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.links: list[str] = []
        self.images: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "srcset", "action", "poster", "data"):
                self.links.append(value or "")
            if name == "id":
                self.ids.add(value)
        if tag == "img":
            self.images.append(dict(attrs).get("src", ""))


def test_page_needs_no_network_and_embeds_its_plots(reported):
    course, _, _ = reported
    text = (course.reports / ASSIGNMENT / "report.html").read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    assert all(link.startswith(("data:", "#")) for link in page.links), [l[:60] for l in page.links if not l.startswith("data:")]
    assert not re.search(r"url\(|@import|https?://", text), "the page must not fetch anything"
    assert len(page.images) == 2, "a score histogram and a failure-rate plot"
    for uri in page.images:
        assert uri.startswith("data:image/png;base64,")
        png = base64.b64decode(uri.split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    assert {"scores", "statuses", "tests", "mistakes", "slowest", "students"} <= page.ids


def test_page_escapes_what_students_wrote():
    student = StudentResult("x<script>alert(1)</script>", "invalid notebook", "<img src=http://evil>", 12.0)
    html_text = render_html(summarise(ClassResults("a01_encoding", 12.0, ["test_a"], [student])))
    assert "<script>alert" not in html_text and "<img src=http" not in html_text
    assert "&lt;script&gt;" in html_text


def test_report_of_an_unknown_assignment(graded_class):
    course, _ = graded_class
    _one_line_error(autograder("report", "a99_nothing", "--course", str(course.root)), "unknown assignment 'a99_nothing'")


def test_report_of_an_assignment_never_graded(graded_class):
    course, _ = graded_class
    _one_line_error(autograder("report", "a02_cross_entropy", "--course", str(course.root)), "has not been graded yet")


def test_write_report_replaces_the_page(graded_class):
    course, _ = graded_class
    path, _ = write_report(course, ASSIGNMENT)
    assert path == course.reports / ASSIGNMENT / "report.html" and path.stat().st_size > 0
    assert not list(path.parent.glob(".*.partial"))


def test_a_submission_stopped_before_any_test_has_no_score(graded_class, tmp_path):
    import shutil

    from nbgrader.api import Gradebook

    from autograder.course import Course
    from autograder.record import _write_status
    from autograder.status import Status

    course = Course.open(shutil.copytree(graded_class[0].root, tmp_path / "course"))
    with Gradebook(course.db_url) as gradebook:
        # What a grader killed past the submission's time budget leaves: rows without automatic scores.
        gradebook.update_or_create_student("stopped")
        gradebook.add_submission(ASSIGNMENT, "stopped")
        _write_status(gradebook.db, ASSIGNMENT, "stopped", Status.TIMEOUT, "killed after 600 s", "bubblewrap")
        gradebook.db.commit()
    results = load_class(course, ASSIGNMENT)
    stopped = next(s for s in results.students if s.student == "stopped")
    assert stopped.status == "timeout" and not stopped.graded
    summary = summarise(results)
    assert all(test.ran == len(results.graded) for test in summary.tests)
    assert "stopped" not in {s.student for s in summary.slowest}
