"""Bench summaries: pure functions over per-request records, and the writer of summary.json/.md.

A record is a dict with the stable fields `dataset, item_id, mode, question, gold, text,
served_by, correct, f1, cost_usd, cloud_cost_usd, edge_cost_usd, ttft_s, latency_s, cloud_calls,
edge_tokens, cloud_tokens, decision`, and optionally `edge_mean_logprob` and `error`.

Three views come out of the records:
- one row per (dataset, mode): accuracy with a bootstrap interval, dollars per 1,000 requests,
  cloud share, latency percentiles;
- the design study's claims beside the measured values;
- offline cost–quality sweeps in the manner of RouteLLM (APGR, CPT), from logged scores only.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from bench.study import (
    CLAIMS_BY_MODE,
    MODE_ORDER,
    NOT_IMPLEMENTED,
    STUDY_COLUMNS,
    mode_rank,
)

Record = Mapping[str, Any]

BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95
CPT_TARGETS = (0.5, 0.8)
EDGE_ONLY = "EDGE_ONLY"
CLOUD_ONLY = "CLOUD_ONLY"
EDGE_CONFIDENCE_OFFLINE = "edge-confidence (offline)"
SUMMARY_VERSION = 1
IMPROVEMENT_NOT_MEASURED = "not measured (no learning loop in this bench)"


# ---------------------------------------------------------------- record fields


def mode_name(value: Any) -> str:
    """"EDGE_ONLY" for "edge_only", "EDGE_ONLY" or a Mode enum member."""
    name = getattr(value, "name", None)
    return name if isinstance(name, str) else str(value).strip().upper()


def has_error(record: Record) -> bool:
    return bool(record.get("error"))


def is_correct(record: Record) -> bool:
    """A failed request counts as a wrong answer: errors must not flatter a mode's accuracy."""
    return bool(record.get("correct")) and not has_error(record)


def _number(value: Any) -> Optional[float]:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def numeric_values(records: Iterable[Record], key: str) -> list[float]:
    """The finite numbers under `key`; missing, null and non-numeric values are skipped."""
    return [n for n in (_number(r.get(key)) for r in records) if n is not None]


def _percentile(values: Sequence[float], q: float) -> Optional[float]:
    return float(np.percentile(values, q)) if values else None


def _mean(values: Sequence[float]) -> Optional[float]:
    return float(np.mean(values)) if values else None


# ---------------------------------------------------------------- per-mode rows


def bootstrap_interval(
    outcomes: Sequence[bool], *, seed: int, resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = CONFIDENCE,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of 0/1 outcomes.

    Resampling n outcomes with replacement and counting the ones is exactly a Binomial(n, k/n)
    draw, so the resamples are drawn that way: the same distribution, without an n-by-resamples
    index matrix.
    """
    n = len(outcomes)
    if n == 0:
        raise ValueError("no outcomes to bootstrap")
    share = sum(bool(o) for o in outcomes) / n
    rng = np.random.default_rng(seed)
    means = rng.binomial(n, share, size=resamples) / n
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class ModeRow:
    dataset: str
    mode: str
    n: int
    accuracy: float
    accuracy_ci_low: float
    accuracy_ci_high: float
    mean_f1: Optional[float]  # over records that carry an F1 (text scoring)
    usd_per_1k_requests: float
    cloud_usd_per_1k_requests: float
    edge_usd_per_1k_requests: float
    cloud_share: float  # share of requests with at least one cloud call
    latency_p50_s: Optional[float]
    latency_p95_s: Optional[float]
    ttft_p50_s: Optional[float]
    ttft_p95_s: Optional[float]
    mean_edge_tokens: Optional[float]
    mean_cloud_tokens: Optional[float]
    errors: int
    # Requests whose cloud server streamed no usage, so their cloud tokens (and dollars) are the router's
    # count: completion tokens one per streamed chunk, prompt tokens estimated from characters.
    cloud_usage_estimated: int = 0
    # The Info service (EDGE_RAG_CLOUD_INFO, the agent): its dollars (inside usd_per_1k_requests), requests
    # answered degraded (retrieval failed), and where the item's own passage ranked among those retrieved.
    info_usd_per_1k_requests: float = 0.0
    degraded: int = 0
    gold_recall_at_1: Optional[float] = None
    gold_recall_at_k: Optional[float] = None
    retrieved_k: Optional[int] = None


def _gold_recall(records: Sequence[Record]) -> tuple[Optional[float], Optional[float], Optional[int]]:
    """Recall@1 and @k of the item's own passage over the records that retrieved with a known gold passage."""
    ranked = [r for r in records if r.get("gold_document_id")]
    if not ranked:
        return None, None, None
    k = max(len(r.get("retrieved_ids") or []) for r in ranked)
    ranks = [r.get("gold_rank") for r in ranked]
    return (sum(rank == 1 for rank in ranks) / len(ranked),
            sum(rank is not None for rank in ranks) / len(ranked), k)


def _per_1k(records: Sequence[Record], key: str) -> float:
    return 1000.0 * sum(numeric_values(records, key)) / len(records)


def _estimated_usage_markdown(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    estimated = sum(row.get("cloud_usage_estimated", 0) for row in rows)
    reached = sum(round(row["cloud_share"] * row["n"]) for row in rows)
    if not estimated:
        return []
    return ["", f"Cloud dollars on {estimated} of {reached} requests that reached the cloud rest on the "
                "router's own token count, because the server streamed no usage (llama-cpp-python's server "
                "does not): completion tokens are counted one per streamed chunk, prompt tokens estimated "
                "as characters ÷ 4."]


def mode_row(dataset: str, mode: str, records: Sequence[Record], *, seed: int) -> ModeRow:
    outcomes = [is_correct(r) for r in records]
    low, high = bootstrap_interval(outcomes, seed=seed)
    latencies = numeric_values(records, "latency_s")
    ttfts = numeric_values(records, "ttft_s")
    return ModeRow(
        dataset=dataset,
        mode=mode,
        n=len(records),
        accuracy=sum(outcomes) / len(records),
        accuracy_ci_low=low,
        accuracy_ci_high=high,
        mean_f1=_mean(numeric_values(records, "f1")),
        usd_per_1k_requests=_per_1k(records, "cost_usd"),
        cloud_usd_per_1k_requests=_per_1k(records, "cloud_cost_usd"),
        edge_usd_per_1k_requests=_per_1k(records, "edge_cost_usd"),
        cloud_share=sum((_number(r.get("cloud_calls")) or 0) > 0 for r in records) / len(records),
        latency_p50_s=_percentile(latencies, 50),
        latency_p95_s=_percentile(latencies, 95),
        ttft_p50_s=_percentile(ttfts, 50),
        ttft_p95_s=_percentile(ttfts, 95),
        mean_edge_tokens=_mean(numeric_values(records, "edge_tokens")),
        mean_cloud_tokens=_mean(numeric_values(records, "cloud_tokens")),
        errors=sum(has_error(r) for r in records),
        cloud_usage_estimated=sum(bool(r.get("cloud_usage_estimated")) for r in records),
        info_usd_per_1k_requests=_per_1k(records, "info_cost_usd"),
        degraded=sum(bool(r.get("degraded")) for r in records),
        **dict(zip(("gold_recall_at_1", "gold_recall_at_k", "retrieved_k"), _gold_recall(records))),
    )


def group_records(records: Iterable[Record]) -> dict[tuple[str, str], list[Record]]:
    """Records by (dataset, mode), in dataset-name then wire-mode order."""
    groups: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for record in records:
        groups[(str(record["dataset"]), mode_name(record["mode"]))].append(record)
    return {key: groups[key] for key in sorted(groups, key=lambda k: (k[0], mode_rank(k[1])))}


def mode_rows(records: Iterable[Record], *, seed: int = 0) -> list[ModeRow]:
    return [mode_row(dataset, mode, group, seed=seed)
            for (dataset, mode), group in group_records(records).items()]


# ---------------------------------------------------------------- the design study's table


def _fmt(value: Optional[float], spec: str = ".2f", suffix: str = "") -> str:
    return "–" if value is None else f"{value:{spec}}{suffix}"


def fmt_usd(value: Optional[float]) -> str:
    if value is None:
        return "–"
    if value == 0:
        return "$0"
    return f"${value:,.2f}" if abs(value) >= 1 else f"${value:.3g}"


def _measured_cells(rows: Sequence[ModeRow]) -> dict[str, str]:
    quality, cost, latency = [], [], []
    for row in rows:
        accuracy = (f"{row.dataset}: acc {row.accuracy:.2f} "
                    f"[{row.accuracy_ci_low:.2f}, {row.accuracy_ci_high:.2f}]")
        if row.mean_f1 is not None:
            accuracy += f", F1 {row.mean_f1:.2f}"
        quality.append(accuracy)
        cost.append(f"{row.dataset}: {fmt_usd(row.usd_per_1k_requests)}/1k, "
                    f"cloud {row.cloud_share:.0%}")
        latency.append(f"{row.dataset}: p50 {_fmt(row.latency_p50_s, '.2f', ' s')}, "
                       f"p95 {_fmt(row.latency_p95_s, '.2f', ' s')}")
    return {"quality": "; ".join(quality), "cost": "; ".join(cost),
            "latency": "; ".join(latency), "improvement": IMPROVEMENT_NOT_MEASURED}


def study_table(rows: Sequence[ModeRow]) -> list[dict[str, Any]]:
    """One entry per mode: the study's claims and our measured values, cell by cell."""
    by_mode: dict[str, list[ModeRow]] = defaultdict(list)
    for row in rows:
        by_mode[row.mode].append(row)
    modes = list(MODE_ORDER) + sorted(set(by_mode) - set(MODE_ORDER))
    table = []
    for mode in modes:
        claim = CLAIMS_BY_MODE.get(mode)
        claims = ({key: getattr(claim, key) for key, _ in STUDY_COLUMNS} if claim
                  else {key: "no claim in the study" for key, _ in STUDY_COLUMNS})
        measured = (_measured_cells(by_mode[mode]) if mode in by_mode
                    else {key: NOT_IMPLEMENTED for key, _ in STUDY_COLUMNS})
        table.append({
            "mode": mode,
            "study_row": claim.label if claim else None,
            "measured_in_this_run": mode in by_mode,
            "claims": claims,
            "measured": measured,
        })
    return table


# ---------------------------------------------------------------- cost–quality sweeps


@dataclass(frozen=True)
class SweepItem:
    """One item seen by both models, with the arbiter's score (higher: send to the cloud)."""

    item_id: str
    edge_correct: bool
    cloud_correct: bool
    score: float


def sweep_points(items: Sequence[SweepItem]) -> list[dict[str, Any]]:
    """The (cloud share, accuracy) reached by each threshold over the scores.

    Routing sends to the cloud every item with score >= threshold. Items with equal scores cannot
    be separated by any threshold, so points fall only between distinct scores; the first point
    (threshold None) sends nothing, the last sends everything.
    """
    n = len(items)
    if n == 0:
        return []
    ranked = sorted(items, key=lambda item: -item.score)
    correct = sum(item.edge_correct for item in items)
    points = [{"threshold": None, "cloud_calls": 0, "correct": correct,
               "cloud_share": 0.0, "accuracy": correct / n}]
    for index, item in enumerate(ranked):
        correct += int(item.cloud_correct) - int(item.edge_correct)
        is_last_of_tie = index + 1 == n or ranked[index + 1].score != item.score
        if is_last_of_tie:
            points.append({"threshold": item.score, "cloud_calls": index + 1, "correct": correct,
                           "cloud_share": (index + 1) / n, "accuracy": correct / n})
    return points


def _gap_reason(n: int, edge_correct: int, cloud_correct: int) -> Optional[str]:
    if n == 0:
        return ("no EDGE_ONLY record with edge_mean_logprob pairs with a CLOUD_ONLY record "
                "by item_id")
    if cloud_correct <= edge_correct:
        return (f"gap not positive: cloud accuracy {cloud_correct / n:.3f} is not above edge "
                f"accuracy {edge_correct / n:.3f} on the {n} paired items, so PGR is undefined")
    return None


def _trapezoid_area(xs: Sequence[float], ys: Sequence[float]) -> float:
    return sum((xs[i + 1] - xs[i]) * (ys[i] + ys[i + 1]) / 2 for i in range(len(xs) - 1))


def _cpt(shares: Sequence[float], pgrs: Sequence[float], target: float) -> float:
    """The smallest cloud share whose PGR reaches `target`, along the piecewise-linear curve
    (between two thresholds, a router that mixes them at random traces the straight line)."""
    if pgrs[0] >= target:
        return shares[0]
    for i in range(len(shares) - 1):
        c0, c1, p0, p1 = shares[i], shares[i + 1], pgrs[i], pgrs[i + 1]
        if p0 < target <= p1:
            return c0 + (target - p0) / (p1 - p0) * (c1 - c0)
    return shares[-1]


def random_router(n: int, edge_correct: int, cloud_correct: int) -> dict[str, Any]:
    """A router that sends each item to the cloud with probability c: its expected accuracy is the
    straight line from edge-only to cloud-only, so APGR = 0.5 and CPT(x) = x."""
    reason = _gap_reason(n, edge_correct, cloud_correct)
    points = ([] if n == 0 else
              [{"cloud_share": 0.0, "accuracy": edge_correct / n},
               {"cloud_share": 1.0, "accuracy": cloud_correct / n}])
    return {
        "arbiter": "random",
        "points": points,
        "apgr": None if reason else 0.5,
        "cpt": {f"{t:.0%}": (None if reason else t) for t in CPT_TARGETS},
        "reason": reason,
    }


def sweep(items: Sequence[SweepItem], *, arbiter: str, dataset: str,
          excluded: int = 0) -> dict[str, Any]:
    """RouteLLM's metrics for one arbiter on one dataset.

    PGR(c) = (acc(c) - acc_edge) / (acc_cloud - acc_edge); APGR is its integral over the cloud
    share c in [0, 1] (trapezoids between thresholds); CPT(x) is the smallest c with PGR >= x.
    """
    n = len(items)
    edge_correct = sum(item.edge_correct for item in items)
    cloud_correct = sum(item.cloud_correct for item in items)
    either_correct = sum(item.edge_correct or item.cloud_correct for item in items)
    points = sweep_points(items)
    reason = _gap_reason(n, edge_correct, cloud_correct)
    apgr: Optional[float] = None
    cpt: dict[str, Optional[float]] = {f"{t:.0%}": None for t in CPT_TARGETS}
    if reason is None:
        gap = cloud_correct - edge_correct
        # Integer counts keep PGR exactly 0 and 1 at the ends.
        pgrs = [(p["correct"] - edge_correct) / gap for p in points]
        shares = [p["cloud_share"] for p in points]
        for point, pgr in zip(points, pgrs):
            point["pgr"] = pgr
        apgr = _trapezoid_area(shares, pgrs)
        cpt = {f"{t:.0%}": _cpt(shares, pgrs, t) for t in CPT_TARGETS}
    return {
        "arbiter": arbiter,
        "dataset": dataset,
        "n": n,
        "excluded": excluded,
        "edge_accuracy": edge_correct / n if n else None,
        "cloud_accuracy": cloud_correct / n if n else None,
        "oracle_accuracy": either_correct / n if n else None,
        "points": points,
        "apgr": apgr,
        "cpt": cpt,
        "reason": reason,
        "random": random_router(n, edge_correct, cloud_correct),
    }


def _edge_confidence_score(edge: Record, cloud: Record) -> Optional[float]:
    """Low mean logprob on the edge's own answer: the edge was unsure, so ask the cloud."""
    logprob = _number(edge.get("edge_mean_logprob"))
    return None if logprob is None else -logprob


# Arbiters scorable offline from a pair (EDGE_ONLY record, CLOUD_ONLY record) of one item.
OFFLINE_ARBITERS: Mapping[str, Callable[[Record, Record], Optional[float]]] = MappingProxyType({
    EDGE_CONFIDENCE_OFFLINE: _edge_confidence_score,
})


def _first_by_item(records: Iterable[Record]) -> dict[str, Record]:
    """Each item's first error-free record (a re-run of an item does not count twice)."""
    by_item: dict[str, Record] = {}
    for record in records:
        if not has_error(record):
            by_item.setdefault(str(record["item_id"]), record)
    return by_item


def offline_sweep_items(
    records: Iterable[Record], score: Callable[[Record, Record], Optional[float]],
) -> dict[str, tuple[list[SweepItem], int]]:
    """Per dataset: the EDGE_ONLY/CLOUD_ONLY pairs that `score` can score, and how many of the
    items either mode saw were left out (unpaired, errored or unscorable)."""
    groups = group_records(records)
    datasets = sorted({d for (d, m) in groups if m in (EDGE_ONLY, CLOUD_ONLY)})
    result = {}
    for dataset in datasets:
        edge = _first_by_item(groups.get((dataset, EDGE_ONLY), []))
        cloud = _first_by_item(groups.get((dataset, CLOUD_ONLY), []))
        seen = {str(r["item_id"]) for m in (EDGE_ONLY, CLOUD_ONLY)
                for r in groups.get((dataset, m), [])}
        items = []
        for item_id in sorted(set(edge) & set(cloud)):
            item_score = score(edge[item_id], cloud[item_id])
            if item_score is not None:
                items.append(SweepItem(item_id=item_id, edge_correct=is_correct(edge[item_id]),
                                       cloud_correct=is_correct(cloud[item_id]),
                                       score=item_score))
        result[dataset] = (items, len(seen) - len(items))
    return result


def _logged_edge_confidence(record: Record) -> Optional[float]:
    decision = record.get("decision") or {}
    return _number(decision.get("score")) if isinstance(decision, Mapping) else None


def logged_sweep_items(records: Iterable[Record]) -> dict[tuple[str, str], tuple[list[SweepItem], int]]:
    """Per (arbiter, dataset): each arbitration mode's logged `decision.score` (the arbiter's confidence
    in the edge answer, higher keeps the edge) beside what EDGE_ONLY and CLOUD_ONLY got on the same item,
    so the arbiter's threshold is swept over logged scores with no new generations; and how many of the
    mode's items were left out (no score, or no edge/cloud pair)."""
    groups = group_records(records)
    result = {}
    for (dataset, mode), group in groups.items():
        if mode in (EDGE_ONLY, CLOUD_ONLY):
            continue
        logged = _first_by_item(group)
        edge = _first_by_item(groups.get((dataset, EDGE_ONLY), []))
        cloud = _first_by_item(groups.get((dataset, CLOUD_ONLY), []))
        by_arbiter: dict[str, list[SweepItem]] = defaultdict(list)
        for item_id in sorted(set(logged) & set(edge) & set(cloud)):
            confidence = _logged_edge_confidence(logged[item_id])
            if confidence is not None:
                arbiter = f"{mode} / {(logged[item_id].get('decision') or {}).get('arbiter') or 'arbiter'}"
                by_arbiter[arbiter].append(SweepItem(item_id=item_id, edge_correct=is_correct(edge[item_id]),
                                                     cloud_correct=is_correct(cloud[item_id]),
                                                     score=-confidence))
        for arbiter, items in by_arbiter.items():
            result[(arbiter, dataset)] = (items, len(group) - len(items))
    return result


def arbiter_sweeps(records: Sequence[Record]) -> list[dict[str, Any]]:
    sweeps = []
    for arbiter, score in OFFLINE_ARBITERS.items():
        for dataset, (items, excluded) in offline_sweep_items(records, score).items():
            sweeps.append(sweep(items, arbiter=arbiter, dataset=dataset, excluded=excluded))
    for (arbiter, dataset), (items, excluded) in logged_sweep_items(records).items():
        sweeps.append(sweep(items, arbiter=arbiter, dataset=dataset, excluded=excluded))
    return sweeps


# ---------------------------------------------------------------- summary.json and summary.md


def _json_safe(value: Any) -> Any:
    """NaN and infinities become null, so summary.json is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def build_summary(records: Iterable[Record], meta: Mapping[str, Any], *,
                  seed: Optional[int] = None) -> dict[str, Any]:
    """Everything summary.json holds. The bootstrap seed defaults to meta["seed"], else 0."""
    records = list(records)
    if seed is None:
        seed = meta.get("seed", 0) if isinstance(meta.get("seed", 0), int) else 0
    rows = mode_rows(records, seed=seed)
    return _json_safe({
        "summary_version": SUMMARY_VERSION,
        "meta": dict(meta),
        "n_records": len(records),
        "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "confidence": CONFIDENCE, "seed": seed},
        "rows": [asdict(row) for row in rows],
        "study": study_table(rows),
        "sweeps": arbiter_sweeps(records),
    })


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(headings: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headings) + " |", "|" + "---|" * len(headings)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _rows_markdown(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    if not rows:
        return ["No records."]
    return _table(
        ["dataset", "mode", "n", "accuracy [95% CI]", "mean F1", "$/1k req", "cloud $/1k",
         "edge $/1k", "reached cloud", "latency p50", "latency p95", "TTFT p50", "TTFT p95",
         "errors"],
        ([r["dataset"], r["mode"], r["n"],
          f"{r['accuracy']:.3f} [{r['accuracy_ci_low']:.3f}, {r['accuracy_ci_high']:.3f}]",
          _fmt(r["mean_f1"], ".3f"), fmt_usd(r["usd_per_1k_requests"]),
          fmt_usd(r["cloud_usd_per_1k_requests"]), fmt_usd(r["edge_usd_per_1k_requests"]),
          f"{r['cloud_share']:.0%}",
          _fmt(r["latency_p50_s"], ".2f", " s"), _fmt(r["latency_p95_s"], ".2f", " s"),
          _fmt(r["ttft_p50_s"], ".2f", " s"), _fmt(r["ttft_p95_s"], ".2f", " s"), r["errors"]]
         for r in rows),
    )


def _retrieval_markdown(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The Info service's part, for the modes that used it."""
    used = [r for r in rows if r.get("info_usd_per_1k_requests") or r.get("gold_recall_at_k") is not None]
    if not used:
        return []
    return ["", "## Retrieval (the Info service)", "",
            "Recall: the share of requests whose own passage (the item's SQuAD paragraph) came back, at rank 1 "
            "and within the k retrieved. Degraded: answered without passages because retrieval failed.", "",
            *_table(["dataset", "mode", "n", "k", "recall@1", "recall@k", "info $/1k", "degraded"],
                    ([r["dataset"], r["mode"], r["n"], r.get("retrieved_k") or "–", _fmt(r.get("gold_recall_at_1"), ".3f"),
                      _fmt(r.get("gold_recall_at_k"), ".3f"), fmt_usd(r.get("info_usd_per_1k_requests", 0.0)),
                      r.get("degraded", 0)] for r in used))]


def _study_markdown(study: Sequence[Mapping[str, Any]]) -> list[str]:
    headings = ["mode", "study row"]
    for _, heading in STUDY_COLUMNS:
        headings += [f"{heading}: claim", f"{heading}: measured"]
    table_rows = []
    for entry in study:
        cells = [entry["mode"], entry["study_row"] or "–"]
        for key, _ in STUDY_COLUMNS:
            cells += [entry["claims"][key], entry["measured"][key]]
        table_rows.append(cells)
    return _table(headings, table_rows)


def _sweeps_markdown(sweeps: Sequence[Mapping[str, Any]]) -> list[str]:
    if not sweeps:
        return ["No EDGE_ONLY or CLOUD_ONLY records, so no offline sweep."]
    table_rows = []
    for s in sweeps:
        for result, name in ((s, s["arbiter"]), (s["random"], "random router (expected)")):
            table_rows.append([
                s["dataset"], name, s["n"], _fmt(s["edge_accuracy"], ".3f"),
                _fmt(s["cloud_accuracy"], ".3f"), _fmt(s["oracle_accuracy"], ".3f"),
                _fmt(result["apgr"], ".3f"),
                *(_fmt(v, ".0%") for v in result["cpt"].values()),
                result["reason"] or "",
            ])
    cpt_headings = [f"CPT({key})" for key in sweeps[0]["cpt"]]
    return _table(["dataset", "arbiter", "paired items", "edge acc", "cloud acc", "oracle acc",
                   "APGR", *cpt_headings, "note"], table_rows)


def _meta_markdown(meta: Mapping[str, Any], depth: int = 0) -> list[str]:
    indent = "  " * depth
    lines = []
    for key, value in meta.items():
        if isinstance(value, Mapping):
            lines.append(f"{indent}- **{key}**:")
            lines += _meta_markdown(value, depth + 1)
        elif isinstance(value, (list, tuple)):
            lines.append(f"{indent}- **{key}**:")
            lines += [f"{indent}  - `{v}`" for v in value]
        elif isinstance(value, str) and ("\n" in value or key == "command"):
            lines += [f"{indent}- **{key}**:", "", f"{indent}  ```text"]
            lines += [f"{indent}  {line}" for line in value.splitlines()]
            lines += [f"{indent}  ```", ""]
        else:
            lines.append(f"{indent}- **{key}**: `{value}`")
    return lines


def render_markdown(summary: Mapping[str, Any]) -> str:
    boot = summary["bootstrap"]
    lines = ["# Bench summary", "", "## Run", ""]
    lines += _meta_markdown(summary["meta"]) or ["(no metadata)"]
    lines += ["", f"{summary['n_records']} records.", "", "## Per mode", "",
              f"Accuracy counts failed requests as wrong. The interval is a percentile bootstrap "
              f"({boot['resamples']} resamples, seed {boot['seed']}). Dollars are per 1,000 "
              "requests; \"reached cloud\" is the share of requests with at least one cloud call.",
              ""]
    lines += _rows_markdown(summary["rows"])
    lines += _retrieval_markdown(summary["rows"])
    lines += _estimated_usage_markdown(summary["rows"])
    lines += ["", "## The design study's claims beside our measurements", ""]
    lines += _study_markdown(summary["study"])
    lines += ["", "## Cost–quality sweeps (offline, no new generations)", "",
              "Each arbiter's threshold is swept over logged scores of items that both EDGE_ONLY "
              "and CLOUD_ONLY answered. APGR is the area under PGR(c) = (acc(c) − acc_edge) / "
              "(acc_cloud − acc_edge) over the cloud share c ∈ [0, 1]; CPT(x) is the smallest "
              "cloud share with PGR ≥ x. A random router scores APGR 0.5.", ""]
    lines += _sweeps_markdown(summary["sweeps"])
    return "\n".join(lines) + "\n"


def write_summary(records: Iterable[Record], out_dir: Union[str, Path],
                  meta: Mapping[str, Any]) -> dict[str, Any]:
    """Writes summary.json and summary.md into out_dir and returns the summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = build_summary(records, meta)
    (out / "summary.json").write_text(
        json.dumps(summary, indent=2, ensure_ascii=False, allow_nan=False) + "\n",
        encoding="utf-8")
    (out / "summary.md").write_text(render_markdown(summary), encoding="utf-8")
    return summary
