"""bench.summary and bench.plots on hand-made records: rows, the study table, the offline sweep
(APGR and CPT worked out by hand), the written summary and the PNG plots."""
import enum
import json
import random

import pytest
from matplotlib.image import imread

from bench.plots import pareto_frontier, write_plots
from bench.study import MODE_ORDER, NOT_IMPLEMENTED, STUDY_CLAIMS
from bench.summary import (
    EDGE_CONFIDENCE_OFFLINE,
    SweepItem,
    arbiter_sweeps,
    bootstrap_interval,
    build_summary,
    mode_name,
    mode_rows,
    random_router,
    study_table,
    sweep,
    sweep_points,
    write_summary,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def record(mode, item_id, correct, *, dataset="gsm8k", latency=1.0, cost=0.0, cloud_calls=0,
           logprob=None, error=None, f1=None):
    return {
        "dataset": dataset, "item_id": item_id, "mode": mode, "question": "q", "gold": "1",
        "text": "t", "served_by": "cloud" if cloud_calls else "edge", "correct": correct,
        "f1": f1, "cost_usd": cost, "cloud_cost_usd": cost, "edge_cost_usd": 0.0,
        "ttft_s": latency / 4, "latency_s": latency, "cloud_calls": cloud_calls,
        "edge_tokens": 0 if cloud_calls else 10, "cloud_tokens": 12 if cloud_calls else 0,
        "decision": {}, "edge_mean_logprob": logprob, "error": error,
    }


# ---------------------------------------------------------------- per-mode rows


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    outcomes = [True] * 50 + [False] * 50
    low, high = bootstrap_interval(outcomes, seed=0)
    assert (low, high) == bootstrap_interval(outcomes, seed=0)
    # The normal approximation gives 0.5 ± 1.96 * 0.05 = [0.402, 0.598].
    assert low == pytest.approx(0.40, abs=0.03)
    assert high == pytest.approx(0.60, abs=0.03)
    assert bootstrap_interval([True] * 7, seed=0) == (1.0, 1.0)
    with pytest.raises(ValueError):
        bootstrap_interval([], seed=0)


def test_mode_rows_compute_accuracy_cost_share_and_percentiles():
    records = [
        record("CLOUD_ONLY", "a", True, latency=1.0, cost=0.001, cloud_calls=1),
        record("CLOUD_ONLY", "b", True, latency=2.0, cost=0.003, cloud_calls=2),
        record("CLOUD_ONLY", "c", False, latency=3.0, cost=0.0, cloud_calls=0),
        # an error counts as wrong even if a correct flag slipped through
        record("CLOUD_ONLY", "d", True, latency=4.0, cost=0.0, error="UNAVAILABLE"),
        record("EDGE_ONLY", "a", False),
    ]
    edge, cloud = mode_rows(records)  # wire order: EDGE_ONLY first
    assert (edge.mode, cloud.mode) == ("EDGE_ONLY", "CLOUD_ONLY")
    assert cloud.n == 4
    assert cloud.accuracy == 0.5
    assert cloud.accuracy_ci_low <= 0.5 <= cloud.accuracy_ci_high
    assert cloud.usd_per_1k_requests == pytest.approx(1000 * 0.004 / 4)
    assert cloud.cloud_share == 0.5
    assert cloud.latency_p50_s == pytest.approx(2.5)
    assert cloud.latency_p95_s == pytest.approx(3.85)  # numpy's linear interpolation
    assert cloud.errors == 1
    assert cloud.mean_f1 is None
    assert edge.accuracy == 0.0


def test_mode_rows_mean_f1_only_over_records_that_have_one():
    records = [record("EDGE_ONLY", "a", True, dataset="squad", f1=1.0),
               record("EDGE_ONLY", "b", False, dataset="squad", f1=0.5),
               record("EDGE_ONLY", "c", False, dataset="squad", f1=None)]
    [row] = mode_rows(records)
    assert row.mean_f1 == pytest.approx(0.75)


def test_mode_name_accepts_enum_members_and_any_case():
    class Mode(enum.IntEnum):
        EDGE_ONLY = 1

    assert mode_name(Mode.EDGE_ONLY) == "EDGE_ONLY"
    assert mode_name("edge_only") == "EDGE_ONLY"


# ---------------------------------------------------------------- the study table


def test_study_table_puts_measured_values_beside_every_claim():
    rows = mode_rows([record("EDGE_ONLY", "a", True, latency=2.0),
                      record("CLOUD_ONLY", "a", True, cloud_calls=1, cost=0.002)])
    table = study_table(rows)
    assert [entry["mode"] for entry in table] == list(MODE_ORDER)
    by_mode = {entry["mode"]: entry for entry in table}
    assert by_mode["EDGE_ONLY"]["claims"]["latency"] == "edge fast, cloud slow"
    assert by_mode["EDGE_ONLY"]["study_row"] == "EDGE_ONLY, CLOUD_ONLY"
    assert "acc 1.00" in by_mode["EDGE_ONLY"]["measured"]["quality"]
    assert "p50 2.00 s" in by_mode["EDGE_ONLY"]["measured"]["latency"]
    assert "$2.00/1k" in by_mode["CLOUD_ONLY"]["measured"]["cost"]
    assert "cloud 100%" in by_mode["CLOUD_ONLY"]["measured"]["cost"]
    pre = by_mode["PRE_ARBITRATION"]
    assert pre["claims"]["quality"] == "worst: router error plus model error"
    assert set(pre["measured"].values()) == {NOT_IMPLEMENTED}


def test_every_mode_has_one_claim_row():
    claimed = [mode for claim in STUDY_CLAIMS for mode in claim.modes]
    assert sorted(claimed) == sorted(MODE_ORDER)


# ---------------------------------------------------------------- sweeps

# By hand: edge right on B, D; cloud right on A, B, D; the arbiter ranks A > B > C > D.
# Sending k of them to the cloud, best score first: correct = 2, 3, 3, 3, 3 of 4.
# PGR = (correct - 2) / (3 - 2) = 0, 1, 1, 1, 1 at shares 0, .25, .5, .75, 1.
# APGR = 0.25 * (0 + 1) / 2 + 0.75 * 1 = 0.875; CPT(50%) = 0.125, CPT(80%) = 0.2.
HAND_ITEMS = [
    SweepItem("A", edge_correct=False, cloud_correct=True, score=4.0),
    SweepItem("B", edge_correct=True, cloud_correct=True, score=3.0),
    SweepItem("C", edge_correct=False, cloud_correct=False, score=2.0),
    SweepItem("D", edge_correct=True, cloud_correct=True, score=1.0),
]


def test_sweep_metrics_match_the_hand_computation():
    result = sweep(HAND_ITEMS, arbiter="hand", dataset="d")
    assert [p["cloud_share"] for p in result["points"]] == [0, 0.25, 0.5, 0.75, 1]
    assert [p["accuracy"] for p in result["points"]] == [0.5, 0.75, 0.75, 0.75, 0.75]
    assert result["edge_accuracy"] == 0.5
    assert result["cloud_accuracy"] == 0.75
    assert result["oracle_accuracy"] == 0.75
    assert result["apgr"] == pytest.approx(0.875)
    assert result["cpt"] == {"50%": pytest.approx(0.125), "80%": pytest.approx(0.2)}
    assert result["reason"] is None


def test_a_reversed_arbiter_does_worse_than_random():
    reversed_items = [SweepItem(i.item_id, i.edge_correct, i.cloud_correct, -i.score)
                      for i in HAND_ITEMS]
    # Order D, C, B, A: correct = 2, 2, 2, 2, 3 -> PGR 0, 0, 0, 0, 1 -> APGR 0.125.
    result = sweep(reversed_items, arbiter="reversed", dataset="d")
    assert result["apgr"] == pytest.approx(0.125)
    assert result["cpt"] == {"50%": pytest.approx(0.875), "80%": pytest.approx(0.95)}


def test_sweep_cannot_split_tied_scores():
    tied = [SweepItem("A", False, True, 1.0), SweepItem("B", True, False, 1.0),
            SweepItem("C", False, True, 0.0)]
    points = sweep_points(tied)
    assert [p["cloud_calls"] for p in points] == [0, 2, 3]
    assert [p["threshold"] for p in points] == [None, 1.0, 0.0]


def test_random_router_is_the_straight_line():
    baseline = random_router(10, 4, 8)
    assert baseline["apgr"] == 0.5
    assert baseline["cpt"] == {"50%": 0.5, "80%": 0.8}
    assert baseline["points"] == [{"cloud_share": 0.0, "accuracy": 0.4},
                                  {"cloud_share": 1.0, "accuracy": 0.8}]


def test_sweep_reports_null_with_a_reason_when_the_gap_is_not_positive():
    items = [SweepItem("A", True, False, 1.0), SweepItem("B", True, True, 0.0)]
    result = sweep(items, arbiter="x", dataset="d")
    assert result["apgr"] is None
    assert result["cpt"] == {"50%": None, "80%": None}
    assert "gap not positive" in result["reason"]
    assert result["random"]["apgr"] is None
    assert result["points"]  # the curve itself is still reported


def test_arbiter_sweeps_pair_edge_and_cloud_records_by_item():
    records = [
        # edge unsure (low logprob) where it is wrong: a good arbiter
        record("EDGE_ONLY", "a", False, logprob=-2.0),
        record("EDGE_ONLY", "b", True, logprob=-0.1),
        record("EDGE_ONLY", "c", True, logprob=-0.2),
        record("EDGE_ONLY", "lonely", True, logprob=-0.2),  # no cloud twin
        record("EDGE_ONLY", "e", False, logprob=None),  # no score
        record("CLOUD_ONLY", "a", True, cloud_calls=1),
        record("CLOUD_ONLY", "b", True, cloud_calls=1),
        record("CLOUD_ONLY", "c", False, cloud_calls=1),
        record("CLOUD_ONLY", "e", True, cloud_calls=1),
        record("CLOUD_ONLY", "f", True, cloud_calls=1, error="DEADLINE_EXCEEDED"),
    ]
    [result] = arbiter_sweeps(records)
    assert result["arbiter"] == EDGE_CONFIDENCE_OFFLINE
    assert result["n"] == 3
    assert result["excluded"] == 3  # lonely, e, f
    # scores a 2.0, c 0.2, b 0.1: a to the cloud gains one (3), then c loses one (2), b is even
    assert [p["correct"] for p in result["points"]] == [2, 3, 2, 2]
    assert result["edge_accuracy"] == pytest.approx(2 / 3)
    assert result["cloud_accuracy"] == pytest.approx(2 / 3)
    assert "gap not positive" in result["reason"]


def test_arbitration_modes_are_swept_over_their_logged_scores():
    def arbitrated(item_id, confidence):
        logged = record("POST_ARBITRATION", item_id, True, cloud_calls=0)
        logged["decision"] = {"mode": "POST_ARBITRATION", "arbiter": "logprob", "score": confidence, "reason": ""}
        return logged

    edge_right = {"a": False, "b": True, "c": False, "d": True}
    cloud_right = {"a": True, "b": True, "c": True, "d": False}
    records = [record("EDGE_ONLY", i, ok, logprob=-1.0) for i, ok in edge_right.items()]
    records += [record("CLOUD_ONLY", i, ok, cloud_calls=1) for i, ok in cloud_right.items()]
    # A perfect arbiter: least confident exactly where the edge is wrong and the cloud right.
    records += [arbitrated("a", 0.1), arbitrated("c", 0.2), arbitrated("b", 0.8), arbitrated("d", 0.9),
                arbitrated("unscored", None)]
    sweeps = {result["arbiter"]: result for result in arbiter_sweeps(records)}
    logged = sweeps["POST_ARBITRATION / logprob"]
    assert (logged["n"], logged["excluded"]) == (4, 1)
    # edge 2/4, cloud 3/4: a and c to the cloud first (+2, PGR 2), then b (even), then d (-1)
    assert [p["correct"] for p in logged["points"]] == [2, 3, 4, 4, 3]
    assert logged["cpt"]["50%"] == pytest.approx(0.125)  # PGR 0 -> 1 over the first quarter of the items
    assert logged["apgr"] > sweeps[EDGE_CONFIDENCE_OFFLINE]["apgr"] == pytest.approx(0.5)


def test_arbiter_sweeps_explain_when_nothing_pairs():
    [result] = arbiter_sweeps([record("EDGE_ONLY", "a", True)])  # no logprob, no cloud
    assert result["n"] == 0
    assert result["apgr"] is None
    assert "pairs" in result["reason"]


# ---------------------------------------------------------------- summary files and plots


def realistic_records():
    records = []
    for n in range(20):
        edge_right, cloud_right = n % 3 == 0, n % 5 != 0
        logprob = -0.1 if edge_right else -1.0 - n / 100
        for dataset in ("gsm8k", "squad"):
            f1 = None if dataset == "gsm8k" else 0.5
            item = f"{dataset}-{n}"
            records.append(record("EDGE_ONLY", item, edge_right, dataset=dataset, logprob=logprob,
                                  latency=1 + n / 10, f1=f1))
            records.append(record("CLOUD_ONLY", item, cloud_right, dataset=dataset,
                                  cloud_calls=1, cost=0.0005, latency=3 + n / 5, f1=f1))
    return records


META = {
    "models": {"edge": {"file": "qwen2.5-coder-0.5b.gguf", "sha256": "1d9614638d18"}},
    "hardware": "2 CPU cores",
    "seed": 7,
    "command": "python -m router bench --demo",
    "prompts": {"gsm8k": "{question}\nSolve it step by step."},
}


def test_write_summary_writes_strict_json_and_markdown(tmp_path):
    summary = write_summary(realistic_records(), tmp_path, META)
    on_disk = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"),
                         parse_constant=lambda name: pytest.fail(f"non-strict JSON: {name}"))
    assert on_disk == summary
    assert summary["bootstrap"]["seed"] == 7
    assert [(r["dataset"], r["mode"]) for r in summary["rows"]] == [
        ("gsm8k", "EDGE_ONLY"), ("gsm8k", "CLOUD_ONLY"),
        ("squad", "EDGE_ONLY"), ("squad", "CLOUD_ONLY")]
    [gsm8k_sweep, squad_sweep] = summary["sweeps"]
    assert gsm8k_sweep["apgr"] > 0.5  # the arbiter sees exactly where the edge is wrong
    markdown = (tmp_path / "summary.md").read_text(encoding="utf-8")
    for expected in ("| gsm8k | EDGE_ONLY | 20 |", "1d9614638d18", "python -m router bench --demo",
                     "Solve it step by step.", "2 CPU cores",
                     "worst: router error plus model error", NOT_IMPLEMENTED,
                     EDGE_CONFIDENCE_OFFLINE, "random router (expected)", "CPT(80%)"):
        assert expected in markdown


def test_build_summary_depends_on_the_records_not_on_their_order():
    records = realistic_records()
    shuffled = records[:]
    random.Random(0).shuffle(shuffled)  # the bench's concurrent requests finish in any order
    summary = build_summary(records, META)
    assert shuffled != records and build_summary(shuffled, META) == summary
    # And the comparison can tell summaries apart: one outcome more is a different summary.
    changed = [dict(records[0], correct=not records[0]["correct"]), *records[1:]]
    assert build_summary(changed, META) != summary


def test_pareto_frontier_keeps_only_undominated_points():
    points = [(0.0, 0.3), (0.2, 0.25), (0.4, 0.7), (0.3, 0.5), (0.5, 0.7)]
    assert pareto_frontier(points) == [(0.0, 0.3), (0.3, 0.5), (0.4, 0.7)]


def test_write_plots_writes_valid_pngs(tmp_path):
    records = realistic_records()
    summary = build_summary(records, META)
    paths = write_plots(records, summary, tmp_path)
    assert sorted(p.name for p in paths) == [
        "accuracy_vs_cost.png", "cloud_share_sweeps.png", "latency_cdf.png"]
    for path in paths:
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        height, width, _channels = imread(path).shape
        assert width > 400 and height > 300


def test_write_plots_skips_what_has_no_data(tmp_path):
    records = [record("POST_ARBITRATION", "a", True, cloud_calls=1, cost=0.001)]
    summary = build_summary(records, {})
    paths = write_plots(records, summary, tmp_path)
    assert sorted(p.name for p in paths) == ["accuracy_vs_cost.png", "latency_cdf.png"]
    assert not (tmp_path / "cloud_share_sweeps.png").exists()


def test_summary_says_how_many_cloud_costs_rest_on_estimated_tokens(tmp_path):
    records = realistic_records()
    cloud_records = [r for r in records if r.get("cloud_calls")]
    for r in cloud_records[:3]:
        r["cloud_usage_estimated"] = True
    summary = write_summary(records, tmp_path, META)
    assert sum(row["cloud_usage_estimated"] for row in summary["rows"]) == 3
    markdown = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert f"Cloud dollars on 3 of {len(cloud_records)} requests" in markdown

    exact = realistic_records()
    write_summary(exact, tmp_path, META)
    assert "Cloud dollars on" not in (tmp_path / "summary.md").read_text(encoding="utf-8")
