"""Choosing early escalation's threshold offline: each level's firing, precision and savings."""
from __future__ import annotations

import pytest

from bench.arbitration_early import level_row
from router.core.arbiters.features import EARLY_LEVELS, early_feature_name


def record(edge_correct: bool, cloud_correct: bool, first_below: dict, tokens: int = 200) -> dict:
    features = {early_feature_name(level): 0.0 for level in EARLY_LEVELS}
    features.update({early_feature_name(level): float(at) for level, at in first_below.items()})
    features.update(early_window_min=0.5, completion_tokens=float(tokens))
    return {"dataset": "gsm8k", "edge_correct": edge_correct, "cloud_correct": cloud_correct,
            "decision": {"features": features}}


def test_a_level_counts_fired_stops_their_precision_and_what_they_save() -> None:
    records = [record(False, True, {0.7: 50, 0.8: 20}), record(False, False, {0.7: 100, 0.8: 30}),
               record(True, True, {0.8: 40}), record(False, True, {})]
    row = level_row(records, 0.7)
    assert (row["fired"], row["precision"], row["cloud_fixes"], row["missed_edge_wrong"]) == (2, 1.0, 1, 1)
    assert row["stop_token_mean"] == 75 and row["generation_saved_mean"] == pytest.approx((0.75 + 0.5) / 2)
    loose = level_row(records, 0.8)
    assert loose["fired"] == 3 and loose["precision"] == pytest.approx(2 / 3)
    assert level_row(records, 0.4)["precision"] is None
