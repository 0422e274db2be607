"""bench/paired.py: two runs compared on the items both answered."""
import json

import numpy as np
import pytest

from bench.paired import MismatchedRunsError, compare, main, paired_difference


def record(item: str, *, correct: bool, f1=None, dataset="squad", mode="EDGE_ONLY", error=None,
           question=None) -> dict:
    return {"dataset": dataset, "item_id": item, "mode": mode, "correct": correct, "f1": f1, "error": error,
            "question": question or f"question {item}", "gold": ["g"]}


def test_only_items_both_runs_answered_are_paired_and_the_rest_counted():
    base = [record("a", correct=False, f1=0.0), record("b", correct=True, f1=1.0), record("c", correct=False, f1=0.5),
            record("d", correct=True, f1=1.0), record("f", correct=False, f1=0.0, error="timeout")]
    other = [record("a", correct=True, f1=1.0), record("b", correct=True, f1=1.0),
             record("c", correct=False, f1=0.2, error="timeout"), record("e", correct=True, f1=1.0),
             record("f", correct=False, f1=0.0, error="timeout")]
    (row,) = compare(base, other, resamples=200)
    assert (row.n, row.unpaired) == (2, 4)  # a and b; c and f lost to errors, d and e on one side only
    assert (row.accuracy.base, row.accuracy.other, row.accuracy.difference) == (0.5, 1.0, 0.5)
    assert row.f1 is not None and row.f1.difference == pytest.approx(0.5)
    assert (row.better, row.worse, row.same) == (1, 0, 1)


def test_maths_has_no_f1_and_a_later_record_replaces_an_earlier_one():
    base = [record("m1", correct=False, dataset="gsm8k"), record("m1", correct=True, dataset="gsm8k")]
    other = [record("m1", correct=False, dataset="gsm8k")]
    (row,) = compare(base, other, resamples=200)
    assert row.f1 is None and row.accuracy.difference == -1.0 and (row.better, row.worse) == (0, 1)


def test_the_interval_holds_the_difference_and_is_paired():
    rng = np.random.default_rng(1)
    base = rng.random(300)
    shifted = paired_difference(base, base + 0.05, seed=0)
    assert shifted.low == pytest.approx(0.05) and shifted.high == pytest.approx(0.05)  # what both share cancels
    noisy = paired_difference(base, rng.random(300), seed=0)
    assert noisy.low < noisy.difference < noisy.high and noisy.high - noisy.low > 0.05


def test_the_command_writes_the_table(tmp_path, capsys):
    for name, verdicts in (("base", [False, False]), ("adapter", [True, False])):
        (tmp_path / name).mkdir()
        lines = [record(f"g{i}", correct=v, dataset="gsm8k") for i, v in enumerate(verdicts)]
        (tmp_path / name / "results.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert main(["--base", str(tmp_path / "base"), "--other", str(tmp_path / "adapter"), "--other-label", "LoRA",
                 "--out", str(tmp_path / "paired.md")]) == 0
    table = (tmp_path / "paired.md").read_text()
    assert table == capsys.readouterr().out
    assert "| gsm8k | EDGE_ONLY | 2 | 0.000 | 0.500 | +0.500" in table and "LoRA" in table


def test_the_command_names_a_mode_it_could_not_pair(tmp_path, capsys):
    runs = {"base": [record("g0", correct=True, dataset="gsm8k"), record("s0", correct=True, f1=1.0, mode="EDGE_RAG")],
            "adapter": [record("g0", correct=False, dataset="gsm8k")]}
    for name, lines in runs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert main(["--base", str(tmp_path / "base"), "--other", str(tmp_path / "adapter")]) == 0
    assert "squad in EDGE_RAG: no item both runs answered, left out" in capsys.readouterr().err


def test_runs_that_asked_other_questions_under_the_same_ids_are_refused():
    base = [record("gsm8k-1", correct=True, dataset="gsm8k", question="2 + 2?")]
    other = [record("gsm8k-1", correct=True, dataset="gsm8k", question="3 + 3?")]
    with pytest.raises(MismatchedRunsError, match="gsm8k-1 has another question"):
        compare(base, other, resamples=10)


def test_a_mode_that_mixes_text_and_maths_scoring_is_refused():
    base = [record("a", correct=True, f1=1.0, dataset="mixed"), record("b", correct=True, dataset="mixed")]
    with pytest.raises(MismatchedRunsError, match="mixes text and maths"):
        compare(base, base, resamples=10)
