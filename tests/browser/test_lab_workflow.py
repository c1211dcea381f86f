"""The student's and the TA's workflows in a real browser, against one JupyterLab server.

The tests run in file order and share the session's Lab, as a course would: the student
opens the Assignment List before anything is released, validates an untouched and a solved
notebook, fetches and submits a released assignment; the TA collects and grades it, sees
scores and a flagged tampered submission in the formgrader, gives a manual grade that
survives a reload, releases feedback, which the student fetches; the class report renders
its plots.  Each step saves a screenshot (conftest: $COURSE_SCREENSHOTS).
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook
from nbgrader.utils import get_username

from autograder.samples import build_notebook, load_samples

ASSIGNMENT = "a01_encoding"
NOTEBOOK = "encoding.ipynb"
WRITTEN = "q_label_smoothing"  # the written answer a TA grades by hand
STUDENT = get_username()  # the Lab's user is the student of a single-machine course
#: Validate runs the notebook in a kernel (torch imports included): slow on a busy machine.
VALIDATE_MS = 240_000


def _shot(page, screenshots: Path, name: str) -> None:
    page.screenshot(path=str(screenshots / f"{name}.png"), full_page=False)


def _solved(lab) -> nbformat.NotebookNode:
    correct = next(s for s in load_samples(lab.course, ASSIGNMENT) if s.student == "correct")
    return build_notebook(lab.course, correct, NOTEBOOK)


def _open_assignment_list(page, lab) -> None:
    page.goto(f"{lab.url}/lab?reset")  # ?reset: a fresh workspace, not the tabs earlier tests opened
    page.locator("#jp-menu-panel div.lm-MenuBar-itemLabel", has_text="Nbgrader").click()
    page.locator(".lm-Menu .lm-Menu-itemLabel", has_text="Assignment List").click()
    page.locator("#released_assignments_list").wait_for()
    page.locator("#released_assignments_list_loading").wait_for(state="hidden")


def _validate(page, lab, relative: str) -> None:
    page.goto(f"{lab.url}/lab/tree/{relative}?reset")
    page.locator(".jp-Notebook .jp-Cell").first.wait_for()
    page.locator("jp-button.validate-button >> visible=true").click()


def test_the_assignment_list_works_before_any_release(page, lab, screenshots):
    _open_assignment_list(page, lab)
    page.locator("#released_assignments_list_placeholder").wait_for()
    assert "There are no assignments to fetch" in page.locator("#released_assignments_list").inner_text()
    assert "Error" not in page.locator("#course_list_default").inner_text()
    assert not page.locator("#released_assignments_list_error").is_visible()
    _shot(page, screenshots, "01-assignment-list-before-release")


def test_validate_lists_the_failures_of_an_untouched_notebook(page, lab, screenshots):
    _validate(page, lab, f"release/{ASSIGNMENT}/{NOTEBOOK}")
    dialog = page.locator(".nbgrader-ErrorDialog")
    dialog.wait_for(timeout=VALIDATE_MS)
    assert dialog.locator(".validation-failed").count() == 1, dialog.inner_text()[:2000]
    assert "NotImplementedError" in dialog.inner_text()
    _shot(page, screenshots, "02-validate-untouched")


def test_validate_says_success_on_a_solved_notebook(page, lab, screenshots):
    folder = lab.course.root / "solved"
    folder.mkdir(exist_ok=True)
    nbformat.write(_solved(lab), folder / NOTEBOOK)
    _validate(page, lab, f"solved/{NOTEBOOK}")
    dialog = page.locator(".nbgrader-SuccessDialog")
    dialog.wait_for(timeout=VALIDATE_MS)
    assert dialog.locator(".validation-success").count() == 1
    assert "Success" in dialog.inner_text()
    _shot(page, screenshots, "03-validate-solved")


def test_the_student_fetches_and_submits_a_released_assignment(page, lab, screenshots):
    lab.run("autograder", "release", ASSIGNMENT)
    lab.run("nbgrader", "release_assignment", ASSIGNMENT, "--force")
    _open_assignment_list(page, lab)
    released = page.locator("#released_assignments_list > .list_item")
    released.first.wait_for()
    assert ASSIGNMENT in released.first.inner_text()
    released.first.locator(".item_status button", has_text="Fetch").click()
    fetched = page.locator("#fetched_assignments_list > .list_item")
    fetched.first.wait_for()
    notebook = lab.course.root / ASSIGNMENT / NOTEBOOK
    assert notebook.is_file(), "Fetch puts the assignment in the course folder"
    nbformat.write(_solved(lab), notebook)  # the student's work
    fetched.first.locator(".item_status button", has_text="Submit").click()
    page.locator("#submitted_assignments_list > .list_item").first.wait_for()
    _shot(page, screenshots, "04-assignment-list-submitted")


@pytest.fixture(scope="module")
def graded(lab):
    """One more student submits a tampered notebook through the exchange; the TA collects the
    class and grades it."""
    tampered = _solved(lab)
    for cell in tampered.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "test_one_hot_basic":
            cell.source = "pass  # the test, edited away"
    home = lab.course.root.parent / "tampered-home"  # another student: own folder, own exchange cache
    (home / ASSIGNMENT).mkdir(parents=True)
    nbformat.write(tampered, home / ASSIGNMENT / NOTEBOOK)
    lab.run("nbgrader", "submit", ASSIGNMENT, "--student", "tampered", "--course", "lossfn",
            f"--Exchange.root={lab.course.root / 'exchange'}", f"--Exchange.cache={home / 'cache'}", cwd=home)
    lab.run("nbgrader", "collect", ASSIGNMENT)
    for student in (STUDENT, "tampered"):
        assert (lab.course.submitted / student / ASSIGNMENT / NOTEBOOK).is_file(), student
    lab.run("autograder", "grade", ASSIGNMENT, "--workers", "2", "--no-progress")
    with Gradebook(lab.course.db_url) as gradebook:
        return {
            student: (gradebook.find_submission_notebook(NOTEBOOK[:-6], ASSIGNMENT, student).id,
                      float(gradebook.find_submission(ASSIGNMENT, student).score))
            for student in (STUDENT, "tampered")
        }


def _submission_row(page, submission_id: str):
    """The formgrader's row of one submitted notebook (names are hidden there: "Submission #N")."""
    return page.locator(f'table tbody tr:has(a[href$="/formgrader/submissions/{submission_id}"])')


def test_the_formgrader_shows_scores_and_flags_the_tampered_submission(page, lab, graded, screenshots):
    page.goto(f"{lab.url}/formgrader/gradebook/{ASSIGNMENT}/{NOTEBOOK[:-6]}")
    for student, (submission_id, score) in graded.items():
        row = _submission_row(page, submission_id)
        row.wait_for()
        overall = row.locator("td").nth(2).inner_text()
        assert re.match(rf"\s*{score:g} / ", overall), f"{student}: overall score {overall!r}, the gradebook has {score:g}"
    assert _submission_row(page, graded["tampered"][0]).locator(".glyphicon-flag").count() == 1, "the tampered submission is flagged"
    assert _submission_row(page, graded[STUDENT][0]).locator(".glyphicon-flag").count() == 0
    _shot(page, screenshots, "05-formgrader-scores-and-flag")
    # The submission itself carries the grader's note on its answers (the formgrader shows an
    # automatic comment as the comment box's placeholder).
    page.goto(f"{lab.url}/formgrader/submissions/{graded['tampered'][0]}/?index=0")
    page.locator(f"#{WRITTEN}-comment").wait_for()
    page.wait_for_function(
        f"(document.getElementById('{WRITTEN}-comment').placeholder || '').startsWith('Autograder')")
    assert "Autograder: tampered" in page.locator(f"#{WRITTEN}-comment").get_attribute("placeholder")
    _shot(page, screenshots, "06-formgrader-tampered-note")


def test_a_manual_grade_persists_after_a_reload(page, lab, graded, screenshots):
    submission = graded[STUDENT][0]
    page.goto(f"{lab.url}/formgrader/submissions/{submission}/?index=0")
    score = page.locator(f"input.score#{WRITTEN}")
    score.wait_for()
    with page.expect_response(lambda response: "/formgrader/api/grade/" in response.url and response.request.method == "PUT"):
        score.fill("1")
        score.press("Tab")
    comment = page.locator(f"#{WRITTEN}-comment")
    with page.expect_response(lambda response: "/formgrader/api/comment/" in response.url and response.request.method == "PUT"):
        comment.fill("Good: you named both effects.")
        comment.press("Tab")
    page.reload()
    page.locator(f"input.score#{WRITTEN}").wait_for()
    page.wait_for_function(f"document.getElementById('{WRITTEN}').value !== ''")
    assert page.locator(f"input.score#{WRITTEN}").input_value() == "1"
    assert page.locator(f"#{WRITTEN}-comment").input_value() == "Good: you named both effects."
    _shot(page, screenshots, "07-formgrader-manual-grade")
    with Gradebook(lab.course.db_url) as gradebook:
        grade = gradebook.find_grade(WRITTEN, NOTEBOOK[:-6], ASSIGNMENT, STUDENT)
        assert grade.manual_score == 1 and not grade.needs_manual_grade


def _click_and_expect_success(page, button) -> None:
    button.click()
    modal = page.locator("#success-modal, #error-modal").first  # the formgrader's createModal(id, ...)
    modal.wait_for(timeout=VALIDATE_MS)
    text = modal.inner_text()
    assert "Success" in text, text[:2000]
    modal.locator(".modal-footer button", has_text="OK").click()
    modal.wait_for(state="detached")


def test_the_ta_releases_feedback_and_the_student_fetches_it(page, lab, graded, screenshots):
    page.goto(f"{lab.url}/formgrader/manage_assignments")
    row = page.locator("table tbody tr", has_text=ASSIGNMENT).first
    row.wait_for()
    _click_and_expect_success(page, row.locator(".generate-feedback a"))
    _click_and_expect_success(page, row.locator(".release-feedback a"))
    _shot(page, screenshots, "08-formgrader-feedback-released")

    _open_assignment_list(page, lab)
    submitted = page.locator("#submitted_assignments_list > .list_item")
    submitted.first.wait_for()
    submitted.first.locator("button", has_text="Fetch Feedback").click()
    page.locator("#submitted_assignments_list a", has_text="view feedback").first.wait_for()
    _shot(page, screenshots, "09-assignment-list-feedback-fetched")
    feedback = list((lab.course.root / ASSIGNMENT / "feedback").glob(f"*/{NOTEBOOK[:-6]}.html"))
    assert len(feedback) == 1, feedback
    text = feedback[0].read_text()
    assert "BEGIN HIDDEN TESTS" not in text


def test_the_class_report_renders_its_plots(page, lab, graded, screenshots):
    lab.run("autograder", "report", ASSIGNMENT)
    report = lab.course.reports / ASSIGNMENT / "report.html"
    page.goto(report.as_uri())
    images = page.locator("img")
    assert images.count() >= 1, "the report has plots"
    page.wait_for_function("Array.from(document.images).every(img => img.complete)")
    widths = page.evaluate("Array.from(document.images).map(img => img.naturalWidth)")
    assert all(width > 0 for width in widths), f"a plot did not render: widths {widths}"
    sources = page.evaluate("Array.from(document.images).map(img => img.src.slice(0, 22))")
    assert all(src.startswith("data:image/") for src in sources), sources
    _shot(page, screenshots, "10-class-report")
