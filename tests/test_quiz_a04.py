"""Assignment 04's predict-the-output quiz is true on the pinned torch.

The snippets, the options and the key live in one place, the source notebook:

* each snippet is a fenced block in a markdown cell, tagged with its question
  id after the language (```` ```python q7 ````); a line a question shows as
  output is tagged the same way (```` ```text q1-shown ````);
* the options are the question's ``- **(a)** ...`` lines; an option's claim is
  its first code span;
* the key is the solution of the answer cell (``q7_answer = "c"``), and the
  test cell after it holds the key's digest.

This file reads all three from the notebook, runs every snippet, and checks
that the keyed option describes what PyTorch does, that no other option's code
does, and that every digest is the key's.  The table below says only *how* each
question is checked; it holds no snippet and no answer.
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
import warnings
from dataclasses import dataclass

import nbformat
import pytest
import torch

from course_checks import answer_digest
from conftest import REPO

NOTEBOOK = REPO / "source" / "a04_nll_api" / "nll.ipynb"
FENCE = re.compile(r"^```\w+ ([\w-]+)\n(.*?)^```", re.S | re.M)
OPTION = re.compile(r"^- \*\*\(([a-z])\)\*\*\s+(.*)$", re.M)
CODE_SPAN = re.compile(r"`([^`]+)`")
BLANK = "___"

# kind "outcome":    what the snippet prints (its `line`, if given), or "Type: message" if it raises,
#                    equals the keyed option's code (an error may be abbreviated to a prefix)
# kind "printed_by": after the snippet, the keyed option's print statement is the one that writes the shown line
# kind "runs":       the keyed option's code, put in the snippet's blank, is the only one that runs;
#                    a keyed option without code means that none runs
# kind "true":       after the snippet, the keyed option's expression is the only true one
# fill=(q, letter):  put option `letter` of question `q` in the snippet's blank first
CHECKS = {
    "q1": dict(kind="printed_by", snippet="q1", shown="q1-shown"),
    "q2": dict(kind="outcome", snippet="q1", line=-1),
    "q3": dict(kind="outcome", snippet="q3"),
    "q4": dict(kind="outcome", snippet="q4"),
    "q5": dict(kind="outcome", snippet="q5"),
    "q6": dict(kind="outcome", snippet="q6"),
    "q7": dict(kind="runs", snippet="q7"),
    "q8": dict(kind="outcome", snippet="q7", fill=("q7", "a")),
    "q9": dict(kind="outcome", snippet="q7", fill=("q7", "b")),
    "q10": dict(kind="runs", snippet="q10"),
    "q11": dict(kind="true", snippet="q11"),
    "q12": dict(kind="outcome", snippet="q11"),
}


@dataclass(frozen=True)
class Question:
    qid: str
    options: dict[str, str]
    key: str
    digest: str
    what: str

    def code(self, letter: str) -> str | None:
        spans = CODE_SPAN.findall(self.options[letter])
        return spans[0] if spans else None

    def coded_letters(self) -> list[str]:
        return [letter for letter in self.options if self.code(letter) is not None]


def _nbgrader(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def _key_from(source: str, variable: str) -> str | None:
    """The last string assigned to ``variable``: the release's placeholder comes first, the solution last."""
    key = None
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == variable for t in node.targets):
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                key = node.value.value
    return key


def _digest_from(source: str, variable: str) -> tuple[str, str]:
    """(digest, what) of the check_choice call on ``variable`` in a test cell."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "check_choice":
            if isinstance(node.args[0], ast.Name) and node.args[0].id == variable:
                what = next(k.value.value for k in node.keywords if k.arg == "what")
                return node.args[1].value, what
    raise AssertionError(f"no check_choice({variable}, ...) in the test cell")


def _load() -> tuple[dict[str, str], dict[str, Question]]:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    blocks: dict[str, str] = {}
    questions: dict[str, Question] = {}
    question_text = ""
    pending: dict[str, tuple[dict[str, str], str]] = {}
    for cell in notebook.cells:
        meta = _nbgrader(cell)
        grade_id = meta.get("grade_id", "")
        if cell.cell_type == "markdown" and not meta:
            for tag, body in FENCE.findall(cell.source):
                assert tag not in blocks, f"block tag {tag} is used twice"
                blocks[tag] = body
            question_text = cell.source
        elif meta.get("solution") and re.fullmatch(r"q\d+", grade_id):
            options = dict(OPTION.findall(question_text))
            pending[grade_id] = (options, _key_from(cell.source, f"{grade_id}_answer"))
        elif meta.get("grade") and grade_id.startswith("test_quiz_"):
            qid = grade_id.removeprefix("test_quiz_")
            options, key = pending.pop(qid)
            digest, what = _digest_from(cell.source, f"{qid}_answer")
            questions[qid] = Question(qid, options, key, digest, what)
    assert not pending, f"answer cells without a test cell: {sorted(pending)}"
    return blocks, questions


BLOCKS, QUESTIONS = _load()


def _run(code: str, namespace: dict | None = None) -> tuple[str, str | None, dict]:
    """Run ``code`` as a student would paste it: (stdout, "Type: message" or None, namespace)."""
    if namespace is None:
        namespace = {"torch": torch, "nn": torch.nn, "F": torch.nn.functional}
        torch.manual_seed(0)
    out = io.StringIO()
    error = None
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out):
        warnings.simplefilter("always")
        try:
            exec(compile(code, "<quiz snippet>", "exec"), namespace)
        except Exception as err:  # noqa: BLE001 - the error is the snippet's outcome
            error = f"{type(err).__name__}: {err}"
    assert not caught, f"snippet warned: {[str(w.message) for w in caught]}"
    return out.getvalue(), error, namespace


def _snippet(check: dict) -> str:
    code = BLOCKS[check["snippet"]]
    if "fill" in check:
        qid, letter = check["fill"]
        code = code.replace(BLANK, QUESTIONS[qid].code(letter))
    assert BLANK not in code, "the snippet still has a blank to fill"
    return code


def _outcome_matches(claim: str, outcome: str, raised: bool) -> bool:
    return outcome == claim or (raised and outcome.startswith(claim))


def test_every_quiz_question_is_checked_here():
    assert set(QUESTIONS) == set(CHECKS), "each quiz question needs an entry in CHECKS, and only those"
    for check in CHECKS.values():
        assert check["snippet"] in BLOCKS, f"no block tagged {check['snippet']} in the notebook"


@pytest.mark.parametrize("qid", sorted(CHECKS, key=lambda q: int(q[1:])))
def test_quiz_question_is_well_formed_and_its_digest_is_the_keys(qid):
    question = QUESTIONS[qid]
    assert list(question.options) == ["a", "b", "c", "d"], f"{qid}: options {list(question.options)}"
    assert question.key in question.options, f"{qid}: key {question.key!r} is not an option"
    assert question.what == f"question {qid[1:]}", f"{qid}: the check says what={question.what!r}"
    assert question.digest == answer_digest(f"{question.what}: {question.key}"), (
        f"{qid}: the test cell's digest is not the digest of the key {question.key!r}"
    )


@pytest.mark.parametrize("qid", sorted(CHECKS, key=lambda q: int(q[1:])))
def test_quiz_key_is_what_pinned_torch_does(qid):
    question, check = QUESTIONS[qid], CHECKS[qid]
    kind = check["kind"]
    if kind == "outcome":
        stdout, error, _ = _run(_snippet(check))
        outcome = error if error else stdout.strip()
        if not error and "line" in check:
            outcome = stdout.splitlines()[check["line"]].strip()
        claim = question.code(question.key)
        assert claim is not None, f"{qid}: the keyed option shows no code to check"
        assert _outcome_matches(claim, outcome, error is not None), f"{qid}: the snippet gives {outcome!r}, key says {claim!r}"
        for letter in question.coded_letters():
            if letter != question.key:
                spans = CODE_SPAN.findall(question.options[letter])
                assert not any(_outcome_matches(s, outcome, error is not None) for s in spans), (
                    f"{qid}: option {letter} also matches {outcome!r}"
                )
    elif kind == "printed_by":
        stdout, error, namespace = _run(_snippet(check))
        assert error is None, f"{qid}: the snippet raised {error}"
        shown = BLOCKS[check["shown"]].strip()
        assert shown in stdout.splitlines(), f"{qid}: the shown line is not among the snippet's output {stdout!r}"
        writers = set()
        for letter in question.coded_letters():
            printed, error, _ = _run(question.code(letter), namespace)
            assert error is None, f"{qid}: option {letter} raised {error}"
            if printed.strip() == shown:
                writers.add(letter)
        assert writers == {question.key}, f"{qid}: the shown line comes from option(s) {sorted(writers)}"
    elif kind == "runs":
        template = BLOCKS[check["snippet"]]
        assert template.count(BLANK) == 1, f"{qid}: the snippet needs exactly one blank"
        running = set()
        for letter in question.coded_letters():
            _, error, _ = _run(template.replace(BLANK, question.code(letter)))
            if error is None:
                running.add(letter)
        expected = {question.key} if question.code(question.key) is not None else set()
        assert running == expected, f"{qid}: option(s) {sorted(running)} run, key says {sorted(expected) or 'none'}"
    elif kind == "true":
        _, error, namespace = _run(_snippet(check))
        assert error is None, f"{qid}: the snippet raised {error}"
        true = {letter for letter in question.coded_letters() if bool(eval(question.code(letter), namespace))}
        assert true == {question.key}, f"{qid}: option(s) {sorted(true)} are true, key says {question.key}"
    else:
        raise AssertionError(f"{qid}: unknown kind {kind}")


def test_quiz_snippets_are_shown_not_run():
    """A snippet that raises must not sit in a code cell, where it would stop the notebook."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    for tag, body in BLOCKS.items():
        first_line = body.strip().splitlines()[0]
        assert first_line not in code, f"block {tag} also appears in a code cell"
