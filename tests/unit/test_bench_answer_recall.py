"""bench/answer_recall.py: a retrieved passage counts when it holds a gold answer, at its rank."""
from __future__ import annotations

from bench.answer_recall import answer_found_at, recall_by_mode
from router.domain.scoring import normalize_answer

TEXTS = {pid: normalize_answer(text) for pid, text in {
    "sb#0": "The Denver Broncos won Super Bowl 50.", "sb#1": "The game was played in Santa Clara.",
    "zoo#0": "Vienna has a zoo."}.items()}


def test_a_gold_answer_counts_at_the_rank_of_the_first_passage_that_holds_it() -> None:
    record = {"gold": ["Santa Clara, California", "Santa Clara"], "retrieved_ids": ["zoo#0", "sb#1", "sb#0"]}
    assert answer_found_at(record, TEXTS) == [False, True]  # R@1 misses, R@3 finds it at rank 2
    assert answer_found_at({"gold": ["the Broncos"], "retrieved_ids": ["sb#0"]}, TEXTS) == [True, True]
    # Whole words: "5" is not found inside "50".
    assert answer_found_at({"gold": ["5"], "retrieved_ids": ["sb#0"]}, TEXTS) == [False, False]


def test_nothing_retrieved_or_an_unknown_id_is_a_miss_and_is_counted() -> None:
    records = [{"mode": "RAG", "gold": ["Broncos"], "retrieved_ids": ["sb#0"]},
               {"mode": "RAG", "gold": ["Broncos"], "retrieved_ids": []},
               {"mode": "RAG", "gold": ["Broncos"], "retrieved_ids": ["gone#9"]}]
    table = recall_by_mode(records, TEXTS)
    assert table["RAG"]["n"] == 3 and table["RAG"]["retrieved"] == 2
    assert table["RAG"]["R@1"] == table["RAG"]["R@3"] == 1 / 3
