"""check_choice: the multiple-choice check behind assignment 04's predict-the-output quiz."""

import pytest

import course_checks as cc

KEY = cc.answer_digest("question 1: c")


@pytest.mark.parametrize("answer", ["c", "C", " c ", "(c)", "( C )"])
def test_check_choice_accepts_the_key_written_loosely(answer):
    cc.check_choice(answer, KEY, what="question 1")


@pytest.mark.parametrize("answer", [None, "", "   "])
def test_check_choice_says_an_unanswered_question_is_unanswered_and_names_the_stub(answer):
    with pytest.raises(AssertionError) as info:
        cc.check_choice(answer, KEY, what="question 1", hint="about the topic")
    message = str(info.value)
    assert message.startswith("question 1: no answer given yet")
    assert "raise NotImplementedError()" in message
    assert "about the topic" not in message, "the topic hint is for wrong answers, not missing ones"


@pytest.mark.parametrize("answer", ["e", "ab", "c is my answer", 3])
def test_check_choice_rejects_what_is_not_an_option_letter(answer):
    with pytest.raises(AssertionError, match="is not one of the options 'a', 'b', 'c', 'd'"):
        cc.check_choice(answer, KEY, what="question 1")


def test_check_choice_reports_a_wrong_letter_with_the_hint_as_advice():
    with pytest.raises(AssertionError) as info:
        cc.check_choice("a", KEY, what="question 1", hint="NLLLoss takes no log")
    message = str(info.value)
    assert message == "question 1: 'a' is not the right answer. Hint: NLLLoss takes no log"
    assert cc.LIKELY not in message, "a wrong letter names no mistake: the check has no signature for it"


def test_check_choice_honours_other_choice_sets():
    cc.check_choice("e", cc.answer_digest("question 9: e"), what="question 9", choices="abcde")
    with pytest.raises(AssertionError, match="'a', 'b', 'c'"):
        cc.check_choice("d", KEY, what="question 9", choices="abc")


def test_check_choice_is_a_test_cell_name():
    assert "check_choice" in cc.TEST_CELL_NAMES and "check_choice" in cc.__all__


def test_check_choice_digests_depend_on_the_question():
    cc.check_choice("c", cc.answer_digest("question 2: c"), what="question 2")
    with pytest.raises(AssertionError, match="not the right answer"):
        cc.check_choice("c", KEY, what="question 2")
