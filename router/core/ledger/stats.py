"""Per-mode statistics: volume, accuracy by signal kind, cloud share, cost and latency.

Accuracy reads, for each request, the latest signal of each kind about the served answer (target
`final`) or about the pair (agreement), so a judge score that was later revised counts once.

The arbitration modes are split by what decided (`version`): PRE_ARBITRATION by its router ("router
v0003", or the rule with its reason), POST_ARBITRATION by its scorer ("learned v0002", "rule", ...), as
the decision recorded it (`decision_json`, schema v5), so a retrained model can be compared with the one
before it. Other modes have one row, with an empty version.

Requests that ended without an answer (cancelled by their client or at shutdown, or failed after a
backend call; `served_by` UNSPECIFIED) count in `requests` and their spend in the costs, since they
were paid for; the cloud share and the latency percentiles are over answered requests only, since an
abandoned request was served by no one and its duration is not an answer's latency.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np


@dataclass(frozen=True)
class SignalAccuracy:
    kind: str
    count: int                       # requests with a scored or labelled signal of this kind
    mean_score: Optional[float]      # mean of the scores (None when none had a score)
    scored: int                      # how many had a score
    share_correct: Optional[float]   # share with correct = true, among those with a correct flag
    labelled: int                    # how many had a correct flag


@dataclass(frozen=True)
class ModeStats:
    mode: str
    requests: int
    accuracy: Mapping[str, SignalAccuracy]   # keyed by signal kind: reference, judge, agreement, feedback
    cloud_share: float                       # share of answered requests served by the cloud
    cost_per_1k_usd: float                   # answering plus judging: what the mode cost
    cloud_cost_per_1k_usd: float             # the cloud's answers plus the judge's grading calls
    edge_cost_per_1k_usd: float
    judge_cost_per_1k_usd: float             # the cloud judge's part of the cloud figure
    latency_p50_s: Optional[float]           # total latency
    latency_p95_s: Optional[float]
    ttft_p50_s: Optional[float]
    ttft_p95_s: Optional[float]
    version: str = ""  # what decided, for the arbitration modes: the router's or scorer's name and version


# The version of a request's decision: its scorer, for the modes where a trained model may decide.
_VERSION = ("CASE WHEN {r}mode IN ('PRE_ARBITRATION', 'POST_ARBITRATION') "
            "THEN COALESCE(json_extract({r}decision_json, '$.scorer'), '') ELSE '' END")
_V = _VERSION.format(r="")
_RV = _VERSION.format(r="r.")

_TOTALS = f"""
    SELECT mode, {_V}, COUNT(*), SUM(served_by != 'UNSPECIFIED'), SUM(served_by = 'CLOUD'), SUM(total_cost_usd),
           SUM(cloud_cost_usd), SUM(edge_cost_usd)
    FROM requests WHERE created_at >= ? GROUP BY 1, 2
"""
_ACCURACY = f"""
    SELECT r.mode, {_RV}, s.kind, COUNT(*), AVG(s.score), COUNT(s.score), SUM(s.correct), COUNT(s.correct)
    FROM signals AS s JOIN requests AS r ON r.id = s.request_id
    WHERE r.created_at >= ? AND s.id IN (
        SELECT MAX(id) FROM signals
        WHERE target IN ('final', 'pair') AND (score IS NOT NULL OR correct IS NOT NULL)
        GROUP BY request_id, kind, target)
    GROUP BY 1, 2, 3
"""
# The judge grades after the answer went out, so its cloud call is priced on its signal, not on the request.
_JUDGE_COSTS = f"""
    SELECT r.mode, {_RV}, SUM(COALESCE(json_extract(s.detail_json, '$.cost_usd'), 0))
    FROM signals AS s JOIN requests AS r ON r.id = s.request_id
    WHERE r.created_at >= ? AND s.kind = 'judge'
    GROUP BY 1, 2
"""
_LATENCIES = f"SELECT mode, {_V}, total_s, ttft_s FROM requests WHERE created_at >= ? AND served_by != 'UNSPECIFIED'"


def _percentiles(values: list[float]) -> tuple[Optional[float], Optional[float]]:
    if not values:
        return None, None
    p50, p95 = np.percentile(np.asarray(values, dtype=float), [50, 95])
    return float(p50), float(p95)


def mode_stats(conn: sqlite3.Connection, since: str = "") -> list[ModeStats]:
    """Statistics per mode (and per deciding version, for the arbitration modes) for requests created
    at or after `since` (ISO-8601 UTC; "" = all), sorted by mode name, then version."""
    accuracy: dict[tuple[str, str], dict[str, SignalAccuracy]] = {}
    for mode, version, kind, count, mean, scored, correct, labelled in conn.execute(_ACCURACY, (since,)):
        accuracy.setdefault((mode, version), {})[kind] = SignalAccuracy(
            kind=kind, count=count, mean_score=mean, scored=scored,
            share_correct=(correct / labelled) if labelled else None, labelled=labelled)
    latencies: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
    for mode, version, total_s, ttft_s in conn.execute(_LATENCIES, (since,)):
        totals, ttfts = latencies.setdefault((mode, version), ([], []))
        if total_s is not None:
            totals.append(total_s)
        if ttft_s is not None:
            ttfts.append(ttft_s)
    judge_costs = {(mode, version): cost or 0.0 for mode, version, cost in conn.execute(_JUDGE_COSTS, (since,))}
    stats = []
    for mode, version, requests, answered, cloud_served, cost, cloud_cost, edge_cost in conn.execute(_TOTALS, (since,)):
        key = (mode, version)
        totals, ttfts = latencies.get(key, ([], []))
        p50, p95 = _percentiles(totals)
        ttft_p50, ttft_p95 = _percentiles(ttfts)
        per_1k = 1000.0 / requests
        judge_cost = judge_costs.get(key, 0.0)
        stats.append(ModeStats(
            mode=mode, version=version, requests=requests, accuracy=accuracy.get(key, {}),
            cloud_share=(cloud_served or 0) / answered if answered else 0.0,
            cost_per_1k_usd=((cost or 0.0) + judge_cost) * per_1k,
            cloud_cost_per_1k_usd=((cloud_cost or 0.0) + judge_cost) * per_1k,
            edge_cost_per_1k_usd=(edge_cost or 0.0) * per_1k,
            judge_cost_per_1k_usd=judge_cost * per_1k,
            latency_p50_s=p50, latency_p95_s=p95, ttft_p50_s=ttft_p50, ttft_p95_s=ttft_p95))
    return sorted(stats, key=lambda s: (s.mode, s.version))
