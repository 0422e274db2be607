"""Per-mode statistics computed from a real ledger file."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from router.core.ledger import AccuracySignal, SignalKind
from router.domain.types import BackendKind, Mode
from tests.unit.test_ledger_support import a_moment_between, make_exchange, make_run, make_unanswered, open_ledger


def test_stats_per_mode(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path / "ledger.db")
    post_latencies = [0.5, 1.0, 2.0, 4.0, 8.0]
    for index, total_s in enumerate(post_latencies):
        served = BackendKind.CLOUD if index < 2 else BackendKind.EDGE
        ledger.record(*make_exchange(
            f"post{index}", edge="#### 7" if index % 2 else "#### 8", cloud="#### 7", served_by=served,
            mode=Mode.POST_ARBITRATION, reference="7", edge_cost=0.0001, cloud_cost=0.003,
            total_s=total_s, ttft_s=total_s / 10))
    for index in range(3):
        ledger.record(*make_exchange(f"edge{index}", edge="Paris", mode=Mode.EDGE_ONLY, total_s=0.2,
                                     edge_cost=0.0002))
    # Judge scores: the later one for edge0 replaces the earlier.
    ledger.add_signal("edge0", AccuracySignal(kind=SignalKind.JUDGE, score=0.2))
    ledger.add_signal("edge0", AccuracySignal(kind=SignalKind.JUDGE, score=1.0))
    ledger.add_signal("edge1", AccuracySignal(kind=SignalKind.JUDGE, score=0.5, correct=False,
                                              detail={"cost_usd": 0.0003}))
    assert ledger.flush()
    ledger.feedback("edge2", score=None, thumbs_up=True, corrected_answer=None)

    by_mode = {s.mode: s for s in ledger.stats()}
    assert list(by_mode) == ["EDGE_ONLY", "POST_ARBITRATION"]

    post = by_mode["POST_ARBITRATION"]
    assert post.requests == 5
    assert post.cloud_share == pytest.approx(2 / 5)
    assert post.cloud_cost_per_1k_usd == pytest.approx(3.0)
    assert post.edge_cost_per_1k_usd == pytest.approx(0.1)
    assert post.cost_per_1k_usd == pytest.approx(3.1)
    assert post.latency_p50_s == pytest.approx(np.percentile(post_latencies, 50))
    assert post.latency_p95_s == pytest.approx(np.percentile(post_latencies, 95))
    assert post.ttft_p50_s == pytest.approx(0.2)
    reference = post.accuracy["reference"]
    # Served answers: cloud (#### 7) twice, then edge: #### 8, #### 7, #### 8.
    assert (reference.count, reference.labelled) == (5, 5)
    assert reference.share_correct == pytest.approx(3 / 5)
    assert reference.mean_score == pytest.approx(3 / 5)
    agreement = post.accuracy["agreement"]
    assert agreement.count == 5 and agreement.mean_score == pytest.approx(2 / 5)

    edge = by_mode["EDGE_ONLY"]
    assert edge.requests == 3 and edge.cloud_share == 0.0
    # The judge's grading call is cloud spend of the mode it graded: 0.0003 over 3 requests.
    assert edge.edge_cost_per_1k_usd == pytest.approx(0.2) and edge.judge_cost_per_1k_usd == pytest.approx(0.1)
    assert edge.cloud_cost_per_1k_usd == pytest.approx(0.1) and edge.cost_per_1k_usd == pytest.approx(0.3)
    assert post.judge_cost_per_1k_usd == 0.0
    judge = edge.accuracy["judge"]
    assert (judge.count, judge.scored, judge.labelled) == (2, 2, 1)
    assert judge.mean_score == pytest.approx(0.75)
    assert judge.share_correct == 0.0
    feedback = edge.accuracy["feedback"]
    assert (feedback.count, feedback.mean_score, feedback.share_correct) == (1, 1.0, 1.0)
    assert "reference" not in edge.accuracy
    ledger.close()


def test_stats_since(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path / "ledger.db")
    ledger.record(*make_exchange("before", edge="x"))
    cutoff = a_moment_between()
    ledger.record(*make_exchange("after1", edge="x"))
    ledger.record(*make_exchange("after2", edge="x", mode=Mode.CLOUD_ONLY, cloud="y",
                                 served_by=BackendKind.CLOUD))
    assert ledger.flush()
    assert {s.mode: s.requests for s in ledger.stats()} == {"EDGE_ONLY": 2, "CLOUD_ONLY": 1}
    assert {s.mode: s.requests for s in ledger.stats(since=cutoff)} == {"EDGE_ONLY": 1, "CLOUD_ONLY": 1}
    assert ledger.stats(since=datetime(2999, 1, 1)) == []
    ledger.close()


def test_unanswered_requests_count_for_their_spend_but_not_for_latency_or_cloud_share(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path / "ledger.db")
    ledger.record(*make_exchange("answered", cloud="Paris", served_by=BackendKind.CLOUD, mode=Mode.CLOUD_ONLY,
                                 cloud_cost=0.003, total_s=1.0))
    cancelled = [make_run(BackendKind.CLOUD, "Par", cost=0.001, finish_reason="cancelled")]
    ledger.record(*make_unanswered("cancelled", cancelled, total_s=9.0))
    assert ledger.flush()
    [cloud] = ledger.stats()
    assert cloud.requests == 2
    assert cloud.cloud_cost_per_1k_usd == pytest.approx(2.0)  # (0.003 + 0.001) over 2 requests
    assert cloud.cloud_share == 1.0  # of the answered: a cancelled request was served by no one
    assert cloud.latency_p50_s == pytest.approx(1.0) and cloud.latency_p95_s == pytest.approx(1.0)
    ledger.close()


def test_arbitration_modes_are_split_by_the_router_or_scorer_that_decided(tmp_path: Path) -> None:
    import dataclasses

    from router.domain.types import Decision

    ledger = open_ledger(tmp_path / "ledger.db")

    def pre(request_id: str, scorer: str, *, cloud: bool, reference: str) -> None:
        request, result = make_exchange(request_id, edge=None if cloud else "7", cloud="7" if cloud else None,
                                        served_by=BackendKind.CLOUD if cloud else BackendKind.EDGE,
                                        mode=Mode.PRE_ARBITRATION, reference=reference, cloud_cost=0.01 if cloud else 0)
        ledger.record(request, dataclasses.replace(result, decision=Decision(
            mode=Mode.PRE_ARBITRATION, arbiter="pre", scorer=scorer, escalated=cloud)))

    pre("a1", "router v0001", cloud=True, reference="7")
    pre("a2", "router v0001", cloud=False, reference="8")
    pre("b1", "router v0002", cloud=False, reference="7")
    ledger.record(*make_exchange("e1", edge="7", reference="7"))
    assert ledger.flush()
    rows = {(s.mode, s.version): s for s in ledger.stats()}
    assert set(rows) == {("EDGE_ONLY", ""), ("PRE_ARBITRATION", "router v0001"), ("PRE_ARBITRATION", "router v0002")}
    old, new = rows["PRE_ARBITRATION", "router v0001"], rows["PRE_ARBITRATION", "router v0002"]
    assert (old.requests, old.cloud_share, old.accuracy["reference"].share_correct) == (2, 0.5, 0.5)
    assert (new.requests, new.cloud_share, new.accuracy["reference"].share_correct) == (1, 0.0, 1.0)
    assert old.cost_per_1k_usd == pytest.approx(5.0) and new.cost_per_1k_usd == 0.0
    ledger.close()
