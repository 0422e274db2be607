"""bench/improve_curves.py: POST_ARBITRATION's curves before and after the adapter, on the same items."""
import json

import numpy as np
import pytest

from bench.improve_curves import (DRAFT_SCORERS, ImproveCurvesError, after_rows, compare, quality_at,
                                  share_to_match_cloud, write_items)


def test_the_share_to_match_the_cloud_escalates_the_lowest_scores_first():
    edge = np.array([0.0, 1.0, 0.0, 1.0])
    cloud = np.array([1.0, 1.0, 1.0, 0.0])
    # The edge's last answer beats the cloud's, so escalating one wrong answer already matches the cloud's mean.
    assert share_to_match_cloud(np.array([0.1, 0.9, 0.2, 0.8]), edge, cloud) == pytest.approx(0.25)
    # Ranked the other way, the item the cloud gets wrong goes early and must be made up for: all of it.
    assert share_to_match_cloud(np.array([0.9, 0.1, 0.8, 0.2]), edge, cloud) == pytest.approx(1.0)
    # An edge as good as the cloud needs none of it.
    assert share_to_match_cloud(np.array([0.5, 0.5]), np.ones(2), np.ones(2)) == 0.0


def corpus_row(dataset, item_id, edge_quality, cloud_quality, lp):
    return {"dataset": dataset, "item_id": item_id, "split": "test", "group": item_id, "text": "q",
            "edge_quality": edge_quality, "cloud_quality": cloud_quality, "rule_score": 0.5,
            "features": {"lp_exp_mean": lp, "has_passage": 0.0}}


def test_a_better_edge_with_the_same_ranking_matches_the_cloud_with_a_smaller_share():
    before = [corpus_row("gsm8k", f"g{i}", 0.0 if i < 6 else 1.0, 1.0, 0.1 * i) for i in range(10)]
    after = [dict(row, edge_quality=0.0 if i < 3 else 1.0) for i, row in enumerate(before)]
    logprob = [f for f in DRAFT_SCORERS if f.name == "logprob"]
    (pair,) = compare(before, after, resamples=200, seed=0, functions=logprob)
    assert pair.share_before == pytest.approx(0.6) and pair.share_after == pytest.approx(0.3)
    assert quality_at(pair.before, 0.0) == pytest.approx(0.4) and quality_at(pair.after, 0.0) == pytest.approx(0.7)
    assert quality_at(pair.after, 0.15) == pytest.approx(0.85)  # half way between escalating 1 and 2 of 10
    low, high = pair.difference_interval
    assert low < -0.2 and high <= 0.0  # a better edge never needs more of the cloud here
    with pytest.raises(ImproveCurvesError, match="same items"):
        compare(before, list(reversed(after)), resamples=10, seed=0, functions=logprob)


def bench_record(item_id, *, correct, text="#### 4", error=None, features=True):
    return {"dataset": "gsm8k", "item_id": item_id, "mode": "POST_ARBITRATION", "error": error,
            "edge_text": text, "edge_correct": correct, "edge_tokens": 5,
            "decision": {"score": 0.5, "features": {"lp_exp_mean": 0.7} if features else {}},
            "runs": [{"backend": "edge", "purpose": "answer", "cost_usd": 2e-5, "total_s": 1.5}]}


def write_run(folder, records):
    folder.mkdir()
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def test_the_after_rows_take_the_edge_side_from_the_run_and_keep_the_clouds(tmp_path):
    data = tmp_path / "gsm8k.jsonl"
    data.write_text("".join(json.dumps({"id": f"g{i}", "question": f"{i} + 2?", "answer": "#### 4"}) + "\n"
                            for i in range(2)))
    before = [corpus_row("gsm8k", "g0", 0.0, 1.0, 0.2), corpus_row("gsm8k", "g1", 1.0, 0.0, 0.9)]
    run = write_run(tmp_path / "after", [bench_record("g0", correct=True), bench_record("g1", correct=False)])
    rows = after_rows(before, run, specs=[f"gsm8k:{data}"])
    assert [r["edge_quality"] for r in rows] == [1.0, 0.0] and [r["cloud_quality"] for r in rows] == [1.0, 0.0]
    assert rows[0]["features"]["lp_exp_mean"] == 0.7 and rows[0]["edge_answer_usd"] == pytest.approx(2e-5)
    assert "arithmetic_checked" in rows[0]["features"]  # the text's features are computed afresh
    for broken, match in (([bench_record("g0", correct=True)], "no answer for gsm8k/g1"),
                          ([bench_record("g0", correct=True), bench_record("g1", correct=True, error="timeout")],
                           "timeout"),
                          ([bench_record("g0", correct=True), bench_record("g1", correct=True, features=False)],
                           "no scorer features")):
        folder = write_run(tmp_path / f"broken-{len(list(tmp_path.iterdir()))}", broken)
        with pytest.raises(ImproveCurvesError, match=match):
            after_rows(before, folder, specs=[f"gsm8k:{data}"])


def test_the_items_are_cut_from_the_data_with_their_ids(tmp_path):
    gsm8k = tmp_path / "train.jsonl"
    gsm8k.write_text("".join(json.dumps({"question": f"q{i}", "answer": f"#### {i}"}) + "\n" for i in range(1, 4)))
    squad = tmp_path / "squad.json"
    squad.write_text(json.dumps({"version": "1.1", "data": [{"title": "T", "paragraphs": [
        {"context": "c", "qas": [{"id": "s1", "question": "?", "answers": [{"text": "c", "answer_start": 0}]},
                                 {"id": "s2", "question": "?", "answers": [{"text": "c", "answer_start": 0}]}]}]}]}))
    rows = [{"dataset": "gsm8k", "item_id": "gsm8k-2"}, {"dataset": "squad_passage", "item_id": "s2"}]
    written = write_items(rows, tmp_path / "items", gsm8k_path=gsm8k, squad_path=squad)
    (line,) = written["gsm8k"].read_text().splitlines()
    assert json.loads(line) == {"id": "gsm8k-2", "question": "q2", "answer": "#### 2"}
    (article,) = json.loads(written["squad_passage"].read_text())["data"]
    assert article["title"] == "T" and [qa["id"] for qa in article["paragraphs"][0]["qas"]] == ["s2"]
    with pytest.raises(ImproveCurvesError, match="found 2 of the 3"):
        write_items(rows + [{"dataset": "gsm8k", "item_id": "gsm8k-9"}], tmp_path / "more", gsm8k_path=gsm8k,
                    squad_path=squad)
