"""QA metrics against values computed by hand on fixed strings."""

from __future__ import annotations

import pytest

from hmtbench.qa.metrics import contains, exact_match, normalize_answer, rouge_l, score_answer, token_f1


def test_normalisation_drops_case_punctuation_articles_and_extra_spaces() -> None:
    assert normalize_answer("  The  Quick, brown fox!  ") == "quick brown fox"
    assert normalize_answer("An apple a day") == "apple day"


def test_token_f1_by_hand() -> None:
    # normalised: [cat, sat, on, mat] vs [cat, is, on, mat]: 3 shared, P = R = 3/4
    assert token_f1("the cat sat on the mat", "the cat is on the mat") == pytest.approx(0.75)
    # [paris, france] vs [paris]: P = 1/2, R = 1, F1 = 2/3
    assert token_f1("Paris, France", "paris") == pytest.approx(2 / 3)
    # repeated tokens count once per match: [a1, a1, b] vs [a1]: common 1, P = 1/3, R = 1 -> 1/2
    assert token_f1("a1 a1 b", "a1") == pytest.approx(0.5)
    assert token_f1("dog", "cat") == 0.0
    assert token_f1("", "") == 1.0
    assert token_f1("the", "cat") == 0.0  # only an article: empty after normalisation


def test_exact_match_by_hand() -> None:
    assert exact_match("The Cat!", "cat") == 1.0
    assert exact_match("a black cat", "black cat.") == 1.0
    assert exact_match("cats", "cat") == 0.0


def test_rouge_l_by_hand() -> None:
    # tokens [the, cat, sat, on, the, mat] vs [the, cat, is, on, the, mat]: LCS 5, P = R = 5/6
    assert rouge_l("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    # [a, b, c, d] vs [a, c, e]: LCS [a, c] = 2, P = 2/4, R = 2/3, F = 2PR/(P+R) = 4/7
    assert rouge_l("a b c d", "a c e") == pytest.approx(4 / 7)
    # order matters for an LCS: [x, y, z] vs [z, y, x] share only one in order: P = R = 1/3
    assert rouge_l("x y z", "z y x") == pytest.approx(1 / 3)
    assert rouge_l("Hello, World", "hello world") == pytest.approx(1.0)  # lower-cased, punctuation dropped
    assert rouge_l("nothing shared", "at all") == 0.0


def test_accuracy_is_whole_word_containment() -> None:
    assert contains("The pass key is 68213. Done", "68213") == 1.0
    assert contains("682139", "68213") == 0.0  # a longer number is not the key
    assert contains("She went to the bathroom.", "Bathroom") == 1.0
    assert contains("kitchen", "bathroom") == 0.0


def test_score_answer_takes_the_best_reference() -> None:
    scores = score_answer("the cat sat", ["dog", "the cat sat on the mat"])
    # best reference is the second: F1 = 2 * (2/2) * (2/4) / (1 + 1/2) = 2/3 over [cat, sat] vs [cat, sat, on, mat]
    assert scores["f1"] == pytest.approx(2 / 3)
    assert scores["rouge_l"] == pytest.approx(2 * 1.0 * 0.5 / 1.5)  # LCS 3 of 3 and of 6 tokens
    assert scores["exact_match"] == 0.0
    assert scores["accuracy"] == 0.0
    assert score_answer("Dog.", ["cat", "dog"])["exact_match"] == 1.0
