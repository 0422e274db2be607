"""bench/routing_ledger.py: the ledger rows it retrains on leave out the corpus's held-out requests, and
its report shows every stage (no model: the ledger is written by the real writer, nothing is trained)."""
from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from bench.routing_ledger import _task_counts, ledger_training_rows, readable_ledger, render
from tests.unit.test_learning_deferral import _post
from tests.unit.test_ledger_support import open_ledger

HELD_OUT = "Solve: what is 5 + 9?"


def _ledger(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.db"
    ledger = open_ledger(path)
    ledger.record(*_post("train-1", reference="#### 7", question="What is 3 + 4?"))
    ledger.record(*_post("held-out", reference="#### 14", question=HELD_OUT))
    ledger.record(*_post("train-2", reference="#### 7", question="Passage: 3 and 4.\nQuestion: the sum?"))
    assert ledger.flush()
    ledger.close()
    return path


def test_rows_whose_request_is_held_out_are_dropped_and_counted(tmp_path: Path) -> None:
    rows, counts = ledger_training_rows(_ledger(tmp_path), {HELD_OUT})
    assert [row.item_id for row in rows] == ["train-1", "train-2"]  # in the order they were written
    assert counts["ledger_rows"] == 3 and counts["dropped_held_out"] == 1
    assert _task_counts(rows) == {"total": 2, "squad": 1, "gsm8k": 1}


def test_without_held_out_requests_every_row_is_kept(tmp_path: Path) -> None:
    rows, counts = ledger_training_rows(_ledger(tmp_path), set())
    assert len(rows) == 3 and counts["dropped_held_out"] == 0


def test_a_compressed_ledger_is_unpacked_into_the_work_dir_and_reads_the_same(tmp_path: Path) -> None:
    plain = _ledger(tmp_path)
    packed = tmp_path / "ledger.db.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    unpacked = readable_ledger(packed, tmp_path / "work")
    assert unpacked == tmp_path / "work" / "ledger.db" and readable_ledger(plain, tmp_path / "work") == plain
    rows, _ = ledger_training_rows(unpacked, {HELD_OUT})
    assert [row.item_id for row in rows] == ["train-1", "train-2"]
    with pytest.raises(SystemExit, match="nope.db.gz: no such ledger"):
        readable_ledger(tmp_path / "nope.db.gz", tmp_path / "work")


def test_the_report_has_a_row_per_stage_in_every_subset() -> None:
    def scores(cpt: float) -> dict:
        result = {"n": 10, "apgr": 0.5, "cpt_50": cpt, "cpt_80": 0.8, "oracle_cpt_50": 0.1, "random_cpt_50": 0.5}
        return {**result, "apgr_ci": [0.4, 0.6], "cpt_50_ci": None, "cpt_80_ci": [0.7, 0.9]}

    subsets = ("mixed", "gsm8k", "squad_passage")
    report = {"command": "python -m bench.routing_ledger", "started_at": "now", "machine": "m", "ledger": "l.db",
              "corpus": "c.jsonl", "split": "test", "bootstrap": 10, "first": 0.5,
              "counts": {"ledger_rows": 4, "dropped_held_out": 1},
              "stages": [{"name": "before", "router": "default rule", "trained_rows": None,
                          "scores": {name: scores(0.5) for name in subsets}},
                         {"name": "after", "router": "v0001", "trained_rows": {"total": 3, "gsm8k": 2, "squad": 1},
                          "scores": {name: scores(0.25) for name in subsets}}]}
    text = render(report)
    assert text.count("| before | — | default rule | 0.500 [0.40, 0.60] | 0.500 | 0.800 [0.70, 0.90] |") == 3
    assert text.count("| after | 3 (2 / 1) | v0001 | 0.500 [0.40, 0.60] | 0.250 | 0.800 [0.70, 0.90] |") == 3
