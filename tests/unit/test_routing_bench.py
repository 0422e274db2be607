"""bench/routing.py's report, from hand-made decisions (no daemon)."""
from __future__ import annotations

import json

import pytest

from bench.routing import held_out_requests, summarize


def decision(dataset: str, decide_ms: float, escalated: bool) -> dict:
    return {"dataset": dataset, "item_id": "x", "decide_ms": decide_ms, "escalated": escalated}


def test_the_report_takes_percentiles_and_the_share_after_calibration() -> None:
    # 4 warm-up decisions (fixed threshold, all escalated), then 10 with 3 escalated.
    decisions = ([decision("gsm8k", 1.0, True)] * 4 + [decision("gsm8k", 2.0, True)] * 3
                 + [decision("squad_passage", 3.0, False)] * 7)
    summary = summarize(decisions, share=0.3, min_samples=4)
    assert summary["cloud_share_after_calibration"] == pytest.approx(0.3)
    assert summary["cloud_share_all"] == pytest.approx(7 / 14)
    assert summary["decide_ms"]["p50"] == pytest.approx(2.5) and summary["decide_ms"]["max"] == 3.0
    assert summary["decide_target_met"] is True
    assert summary["by_dataset"] == {"gsm8k": 1.0, "squad_passage": 0.0}


def test_a_slow_router_misses_the_target() -> None:
    summary = summarize([decision("gsm8k", 6.0, False)] * 3, share=0.3, min_samples=1)
    assert summary["decide_target_met"] is False


def test_only_test_split_lines_with_text_are_sent(tmp_path) -> None:
    lines = [{"split": "test", "text": "a", "item_id": "1"}, {"split": "train", "text": "b", "item_id": "2"},
             {"split": "test", "text": "", "item_id": "3"}]
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert [row["item_id"] for row in held_out_requests(corpus, limit=10, seed=0)] == ["1"]
