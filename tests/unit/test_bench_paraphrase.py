"""The paraphrased-question set: how overlap is counted and which rewordings are kept."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.paraphrase import acceptable, clean, content_overlap
from bench.retrieval import read_paraphrased, render


def test_content_overlap_counts_the_originals_content_words_kept() -> None:
    original = "Which NFL team represented the AFC at Super Bowl 50?"
    assert content_overlap(original, original) == 1.0
    # kept: super, bowl, 50 of nfl, team, represented, afc, super, bowl, 50
    assert content_overlap(original, "In the 50th Super Bowl, who played for the conference?") == pytest.approx(2 / 7)
    assert content_overlap("the of a", "anything") == 0.0


@pytest.mark.parametrize("raw,expected", [
    ("Rewritten question: Who won?\nextra", "Who won?"),
    ('"Who won the game?"', "Who won the game?"),
    ("", ""),
])
def test_clean_keeps_the_first_line_without_a_label(raw: str, expected: str) -> None:
    assert clean(raw) == expected


def test_a_copy_an_empty_reply_or_no_question_is_not_kept() -> None:
    assert acceptable("Who won?", "Which side was victorious?")
    assert not acceptable("Who won?", "who won?") and not acceptable("Who won?", "")
    assert not acceptable("Who won?", "The Broncos won.")


def test_paraphrased_file_and_report(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"article": "A", "question": "Who won?", "paraphrase": "Which side prevailed?",
                                "answers": ["Broncos"], "overlap": 0.0}) + "\n")
    originals, paraphrases = read_paraphrased(path)
    assert originals[0].text == "Who won?" and paraphrases[0].text == "Which side prevailed?"
    assert paraphrases[0].answers == ("broncos",)
    row = {"n": 1, "recall": {"R@1": 0.9, "R@3": 0.96, "R@5": 0.99}, "latency_ms_p50": 2.0, "latency_ms_p99": 5.0}
    text = render({"command": "c", "finished_utc": "t", "ingest_s": 1.0, "ingested": {"documents": 1, "chunks": 1},
                   "machine": {"cpu": "x", "os": "y", "python": "3", "numpy": "2", "onnxruntime": "1"},
                   "sets": {"held out": row, "paraphrased": {**row, "recall": {"R@1": 0.5, "R@3": 0.7, "R@5": 0.8}}}})
    assert "- held out: met" in text and "- paraphrased: not met" in text
