"""Features and scores of an edge answer: pure functions, checked on real prompt shapes from the bench."""
from __future__ import annotations

import math

import pytest

from router.core.arbiters.features import (EARLY_LEVELS, FEATURE_NAMES, Draft, as_vector, base_features,
                                           consistency_features, early_feature_name, early_features, focus_sentence,
                                           has_passage, logprob_features, question_and_passage)
from router.core.arbiters.scorers import build_scorer, task_score, verification_messages
from router.core.arbiters.thresholds import FixedThreshold, TargetShareThreshold

PASSAGE = ("Super Bowl 50 was an American football game to determine the champion of the National Football "
           "League (NFL) for the 2015 season. The American Football Conference (AFC) champion Denver Broncos "
           "defeated the National Football Conference (NFC) champion Carolina Panthers 24–10 to earn their "
           "third Super Bowl title.")
READING = [{"role": "system", "content": "You are a helpful assistant."},
           {"role": "user", "content": "Answer the question with the shortest span copied from the passage. "
                                       f"Reply with the span only.\nPassage: {PASSAGE}\n"
                                       "Question: Which NFL team won Super Bowl 50?"}]
DEFEATED = [READING[0], {"role": "user", "content": READING[1]["content"].replace(
    "Which NFL team won Super Bowl 50?", "Which team did the Denver Broncos defeat?")}]
MATHS = [{"role": "user", "content": "Tom has 3 apples and buys 4 more. How many apples does he have?\n"
                                     "Solve it step by step. On the last line write the final answer as '#### <number>'."}]


def draft(messages, text, logprobs=(-0.1, -0.2, -0.3), finish="stop") -> Draft:
    return Draft(messages, text, logprobs, finish)


def test_logprob_statistics() -> None:
    features = logprob_features([-0.1, -1.0, -0.5, -2.0])
    assert features["lp_mean"] == pytest.approx(-0.9)
    assert features["lp_min"] == -2.0
    assert features["lp_p50"] == pytest.approx(-0.75)
    assert features["lp_exp_mean"] == pytest.approx(math.exp(-0.9))


def test_a_verbatim_short_span_of_the_passage_is_recognised() -> None:
    features = base_features(draft(READING, "Denver Broncos"))
    assert features["has_passage"] == 1.0
    assert features["span_verbatim"] == 1.0 and features["span_short"] == 1.0
    free = base_features(draft(READING, "The Broncos from Colorado won it"))
    assert free["span_verbatim"] == 0.0 and free["span_short"] == 0.0


def test_a_reading_request_is_cut_into_its_question_and_its_passage() -> None:
    question, passage = question_and_passage(READING[1]["content"])
    assert question == "Which NFL team won Super Bowl 50?" and passage == PASSAGE
    assert question_and_passage("Some notes.\nMore notes.\nWho wrote them?") == \
        ("Who wrote them?", "Some notes.\nMore notes.")


def test_the_focus_sentence_is_the_one_sharing_most_words_with_the_question() -> None:
    assert focus_sentence("Which team did the Denver Broncos defeat?", PASSAGE).startswith("The American Football")
    assert focus_sentence("Which NFL team won Super Bowl 50?", PASSAGE).startswith("Super Bowl 50 was")
    assert focus_sentence("anything", "") == ""


def test_a_span_from_the_sentence_that_matches_the_question_is_in_focus_and_one_from_elsewhere_is_not() -> None:
    in_focus = base_features(draft(DEFEATED, "Carolina Panthers"))
    elsewhere = base_features(draft(DEFEATED, "2015 season"))
    assert in_focus["span_in_focus"] == 1.0
    assert elsewhere["span_verbatim"] == 1.0 and elsewhere["span_in_focus"] == 0.0
    assert base_features(draft(MATHS, "apples"))["span_in_focus"] == 0.0  # no passage, no focus


def test_the_task_score_ranks_a_span_in_focus_above_one_from_elsewhere_at_equal_logprobs() -> None:
    in_focus, elsewhere = draft(DEFEATED, "Carolina Panthers"), draft(DEFEATED, "2015 season")
    assert task_score(in_focus, base_features(in_focus)) > task_score(elsewhere, base_features(elsewhere))


def test_the_task_score_ranks_a_short_span_above_a_free_answer_at_equal_logprobs() -> None:
    span, free = draft(READING, "Denver Broncos"), draft(READING, "The Broncos from Colorado won it")
    assert task_score(span, base_features(span)) > task_score(free, base_features(free))


def test_no_passage_and_a_numeric_answer() -> None:
    features = base_features(draft(MATHS, "3 + 4 = 7\n#### 7"))
    assert features["has_passage"] == 0.0 and not has_passage(draft(MATHS, ""))
    assert features["has_number"] == 1.0


def test_consistency_counts_samples_that_reach_the_greedy_number() -> None:
    features = consistency_features(7.0, [7.0, 8.0, None])
    assert features == {"has_consistency": 1.0, "consistency_agree": pytest.approx(1 / 3),
                        "consistency_distinct": 2.0}
    assert consistency_features(None, [7.0])["has_consistency"] == 0.0


def test_the_feature_vector_has_every_feature_in_order_and_no_nan() -> None:
    vector = as_vector(base_features(draft(MATHS, "", logprobs=())))
    assert len(vector) == len(FEATURE_NAMES)
    assert all(math.isfinite(value) for value in vector)


def test_the_verification_prompt_ends_with_the_question_and_the_answer() -> None:
    messages = verification_messages(draft(READING, "Denver Broncos"))
    assert messages[0]["role"] == "system" and messages[-1]["role"] == "user"
    assert "Denver Broncos" in messages[-1]["content"] and "Super Bowl 50" in messages[-1]["content"]
    assert [m["role"] for m in messages[1:-1]] == ["user", "assistant"] * 2


def test_unknown_scorer_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot build 'oracle'"):
        build_scorer("oracle")


def test_a_fixed_threshold_is_a_score() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        FixedThreshold(1.5)


def test_target_share_calibrates_on_recent_scores_and_drifts_with_them() -> None:
    threshold = TargetShareThreshold(share=0.3, window=100, min_samples=10, initial=0.9)
    for value in range(5):
        threshold.observe(value / 100)
    assert threshold.current() == 0.9  # too few scores yet
    for value in range(100):
        threshold.observe(value / 100)
    assert threshold.current() == pytest.approx(0.297, abs=0.01)
    below = sum(1 for value in range(100) if value / 100 < threshold.current())
    assert below == 30
    for _ in range(100):  # traffic drifts: every score is now high
        threshold.observe(0.95)
    assert threshold.current() == pytest.approx(0.95)


@pytest.mark.parametrize("share", [0.0, 1.0, -0.2])
def test_a_target_share_outside_zero_one_is_refused(share: float) -> None:
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        TargetShareThreshold(share=share)


def test_target_share_holds_its_share_when_many_scores_tie_on_the_threshold() -> None:
    # Self-consistency agreement takes few values: 40% of requests at 0 and 60% at 1, asked for 30%.
    threshold = TargetShareThreshold(share=0.3, window=100, min_samples=10, seed=0)
    traffic = [0.0] * 40 + [1.0] * 60
    for score in traffic:
        threshold.observe(score)
    escalated = sum(not threshold.keeps(score, threshold.current()) for score in traffic * 50)
    assert escalated / (len(traffic) * 50) == pytest.approx(0.3, abs=0.02)


def test_target_share_never_escalates_above_the_threshold_nor_keeps_below_it() -> None:
    threshold = TargetShareThreshold(share=0.3, window=100, min_samples=10, seed=0)
    for value in range(100):
        threshold.observe(value / 100)
    current = threshold.current()
    assert threshold.keeps(current + 0.01, current) and not threshold.keeps(current - 0.01, current)


def test_early_features_find_where_the_running_confidence_first_falls_below_each_level() -> None:
    confident = [math.log(0.95)] * 20
    doubtful = [math.log(0.3)] * 16
    features = early_features(confident + doubtful, window=16)
    # The window's mean falls as doubtful tokens replace confident ones; it crosses 0.8 first.
    crossings = [features[early_feature_name(level)] for level in EARLY_LEVELS]
    assert all(c > 20 for c in crossings), crossings
    assert crossings == sorted(crossings, reverse=True)  # lower levels are crossed later
    assert features["early_window_min"] == pytest.approx(0.3)
    assert set(FEATURE_NAMES).isdisjoint(features)  # diagnostics only: no model reads them


def test_early_features_of_a_short_or_confident_draft_record_no_crossing() -> None:
    for logprobs in ([math.log(0.1)] * 15, [math.log(0.99)] * 40):
        features = early_features(logprobs, window=16)
        assert all(features[early_feature_name(level)] == 0.0 for level in EARLY_LEVELS)
    assert early_features([math.log(0.1)] * 15)["early_window_min"] == 1.0
