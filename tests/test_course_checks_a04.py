"""check_choice, behind assignment 04's predict-the-output quiz, and the tolerance its stability checks rely on."""

import functools

import pytest
import torch
import torch.nn.functional as F

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


# -- what assignment 04's hidden stability checks rely on ----------------------------
# test_log_softmax_stable and test_pixelwise_ce_hidden compare a float32 answer at logits of
# +-1000 with a float64 reference under scale=1000: every standard float32 formulation passes,
# the named mistakes do not.

EXTREME = torch.tensor([[1000.0, 0.0, -1000.0], [-1000.0, -1000.0, -1000.0], [1000.0, 1000.0, 999.0]])


def _z_minus_lse(z):
    return z - torch.logsumexp(z, dim=1, keepdim=True)


def _shift_then_log_sum(z):
    shifted = z - z.amax(dim=1, keepdim=True)
    return shifted - shifted.exp().sum(dim=1, keepdim=True).log()


def _hand_lse(z):
    m = z.amax(dim=1, keepdim=True)
    return z - (m + (z - m).exp().sum(dim=1, keepdim=True).log())


def _logaddexp_fold(z):
    return z - functools.reduce(torch.logaddexp, z.unbind(1)).unsqueeze(1)


def _float64_cast_back(z):
    return F.log_softmax(z.double(), dim=1).float()


@pytest.mark.parametrize("form", [_z_minus_lse, _shift_then_log_sum, _hand_lse, _logaddexp_fold, _float64_cast_back,
                                  lambda z: F.log_softmax(z, dim=1)])
def test_every_float32_log_softmax_form_meets_the_policy_at_1000(form):
    cc.check_close(form(EXTREME), F.log_softmax(EXTREME.double(), dim=1), what="log-softmax at +-1000", scale=1000)


def test_z_minus_lse_needs_the_scale_at_1000():
    """The cancellation in z - lse costs ~1000 eps: without scale= the policy would fail a correct answer."""
    with pytest.raises(AssertionError):
        cc.check_close(_hand_lse(EXTREME), F.log_softmax(EXTREME.double(), dim=1), what="log-softmax at +-1000")


@pytest.mark.parametrize("mistake", [
    lambda z: torch.log(z.exp() / z.exp().sum(dim=1, keepdim=True)),
    lambda z: torch.log(torch.softmax(z, dim=1)),
    lambda z: _shift_then_log_sum(z.T).T,
])
def test_the_named_log_softmax_mistakes_fail_even_at_scale_1000(mistake):
    with pytest.raises(AssertionError):
        cc.check_close(mistake(EXTREME), F.log_softmax(EXTREME.double(), dim=1), what="log-softmax at +-1000", scale=1000)


@pytest.mark.parametrize("form", [
    lambda x, t: F.cross_entropy(x.permute(0, 3, 1, 2), t),
    lambda x, t: (torch.logsumexp(x, dim=-1) - x.gather(-1, t.unsqueeze(-1)).squeeze(-1)).mean(),
    lambda x, t: F.nll_loss(_hand_lse(x.reshape(-1, x.shape[-1])), t.reshape(-1)),
])
def test_every_float32_pixelwise_cross_entropy_form_meets_the_policy_at_1000(form):
    generator = torch.Generator().manual_seed(47)
    logits = 1000.0 * torch.randn(2, 2, 3, 4, generator=generator).sign()
    target = torch.randint(0, 4, (2, 2, 3), generator=generator)
    expected = F.cross_entropy(logits.permute(0, 3, 1, 2).double(), target)
    cc.check_close(form(logits, target), expected, what="pixelwise cross-entropy at +-1000", scale=1000)
