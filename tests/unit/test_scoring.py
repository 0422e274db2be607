"""router.domain.scoring on hand-made cases: GSM8K final numbers and SQuAD exact match / token F1."""
import pytest

from router.domain.scoring import (
    AnswerScore,
    exact_match,
    final_number,
    gsm8k_gold,
    normalize_answer,
    parse_number,
    score_answer,
    token_f1,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$1,000", 1000.0),
        ("1000", 1000.0),
        ("3.0", 3.0),
        ("3", 3.0),
        ("-2.5", -2.5),
        ("1,234.5", 1234.5),
        ("50%", 50.0),
        ("42.", 42.0),
        (" 7 ", 7.0),
        ("-$5", -5.0),
        (".5", 0.5),
    ],
)
def test_parse_number_reads_numbers_as_people_write_them(text, expected):
    assert parse_number(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "3/4", "1 000", "12 apples", "--5", "1.2.3"])
def test_parse_number_rejects_what_is_not_one_number(text):
    assert parse_number(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 42.", 42.0),
        ("She had 3 apples and 5 pears, so 8 in all.\n#### 8", 8.0),
        ("48/2 = 24 clips in May, 48 + 24 = 72 in all.\n#### 72\nHope this helps, 1 more.", 72.0),
        ("#### 18 is wrong? no: #### 19", 19.0),
        ("It cost $1,000 in total.", 1000.0),
        ("The change is -7 degrees.", -7.0),
        ("#### -12", -12.0),
        ("Roughly 3.5 hours.", 3.5),
        ("no digits here", None),
        ("", None),
        # A hyphen between two numbers is a minus, not a negative sign on the second.
        ("5-3", 3.0),
        ("COVID-19", 19.0),
        # The marker with no number after it falls back to the last number before it.
        ("2 + 2 = 4\n#### <number>", 4.0),
        # A boxed answer wins over numbers in the prose after it; the last box wins; #### beats a box.
        ("So she has \\boxed{-2} apples. Dora made 2 more.", -2.0),
        ("\\boxed{100000} tokens; 1,000,000 more next year.", 100000.0),
        ("First \\boxed{3}, corrected: \\boxed{\\$1,250}.", 1250.0),
        ("\\boxed{12}\n#### 13", 13.0),
        ("\\boxed{x} so 7", 7.0),
    ],
)
def test_final_number_prefers_the_last_marker_then_the_last_number(text, expected):
    assert final_number(text) == expected


def test_gsm8k_gold_is_the_text_after_the_marker():
    assert gsm8k_gold("Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72") == "72"
    assert gsm8k_gold("so 1,080 in all\n#### 1,080") == "1,080"
    with pytest.raises(ValueError, match="####"):
        gsm8k_gold("no marker at all: 72")
    with pytest.raises(ValueError, match="nothing after"):
        gsm8k_gold("trailing marker ####   ")


def test_normalize_answer_follows_the_official_squad_rules():
    assert normalize_answer("The Denver Broncos!") == "denver broncos"
    assert normalize_answer("  an   Apple, a day ") == "apple day"
    # Articles are whole words only: "theory" and "another" keep their letters.
    assert normalize_answer("the theory of another") == "theory of another"
    # Punctuation goes before articles are matched, as in the official script.
    assert normalize_answer("the-end") == "theend"


def test_exact_match_ignores_articles_case_and_punctuation():
    assert exact_match("Denver Broncos!", "the Denver Broncos")
    assert not exact_match("Denver", "Denver Broncos")


def test_token_f1_partial_overlap_by_hand():
    # prediction tokens: [denver, broncos, team] ; gold: [denver, broncos]
    # overlap 2, precision 2/3, recall 2/2, F1 = 2*(2/3)*1 / (2/3 + 1) = 0.8
    assert token_f1("the Denver Broncos team", "Denver Broncos") == pytest.approx(0.8)
    # a repeated token counts only as often as it occurs on both sides: [new, new] vs
    # [new, york] share {new: 1}, precision 1/2, recall 1/2, F1 0.5
    assert token_f1("new new", "New York") == pytest.approx(0.5)
    assert token_f1("Paris", "London") == 0.0


def test_token_f1_with_empty_sides():
    assert token_f1("", "Denver Broncos") == 0.0
    assert token_f1("Denver", "") == 0.0
    assert token_f1("the", "a") == 1.0  # both normalise to nothing, as exact match agrees


def test_score_answer_numeric_matches_formats_of_the_same_number():
    assert score_answer("So the total is $1,000.", ["1000"]) == AnswerScore(True, None, "numeric")
    assert score_answer("#### 3.0", ["3"]).correct
    assert score_answer("#### 3", ["3.0"]).correct
    assert score_answer("It is -2.5", ["-2.5"]).correct
    assert not score_answer("It is 2.5", ["-2.5"]).correct
    assert score_answer("Steps: 4, 9, 16.\n#### 18", ["18"]).correct
    assert not score_answer("Steps: 4, 9, 18.\n#### 16", ["18"]).correct


def test_score_answer_numeric_tolerance_is_relative_one_in_a_billion():
    assert score_answer("#### 0.30000000000000004", ["0.3"]).correct
    assert score_answer("#### 1000000000.5", ["1000000000"]).correct  # 5e-10 apart: within one in a billion
    assert not score_answer("#### 1000000005", ["1000000000"]).correct  # 5e-9 apart: outside
    assert not score_answer("#### 1000001", ["1000000"]).correct
    assert not score_answer("#### 192000001", ["192,000,000"]).correct
    assert score_answer("#### 0", ["0"]).correct


def test_score_answer_numeric_empty_prediction_is_wrong():
    assert score_answer("", ["18"]) == AnswerScore(False, None, "numeric")


def test_score_answer_text_takes_the_best_gold():
    golds = ["Denver Broncos", "the Broncos", "Broncos"]
    score = score_answer("Broncos!", golds)
    assert score.method == "text"
    assert score.correct
    assert score.f1 == 1.0
    partial = score_answer("the Denver Broncos team", ["Carolina Panthers", "Denver Broncos"])
    assert not partial.correct
    assert partial.f1 == pytest.approx(0.8)


def test_score_answer_text_empty_prediction_scores_zero():
    assert score_answer("", ["Denver Broncos"]) == AnswerScore(False, 0.0, "text")


def test_score_answer_chooses_text_when_any_gold_is_not_a_number():
    assert score_answer("1990", ["1990", "in 1990"]).method == "text"
    assert score_answer("the year 1990", ["1990"]).method == "numeric"


def test_score_answer_explicit_method_overrides_the_choice():
    # "1990.0" is 1990 as a number but "19900" once SQuAD drops the punctuation.
    assert score_answer("1990.0", ["1990"]).correct
    as_text = score_answer("1990.0", ["1990"], method="text")
    assert as_text.method == "text"
    assert not as_text.correct
    assert as_text.f1 == 0.0


def test_score_answer_rejects_bad_arguments():
    with pytest.raises(ValueError):
        score_answer("x", [])
    with pytest.raises(TypeError):
        score_answer("x", "42")
    with pytest.raises(ValueError, match="unknown scoring method"):
        score_answer("x", ["42"], method="fuzzy")
    with pytest.raises(ValueError, match="numeric golds"):
        score_answer("x", ["forty-two"], method="numeric")
