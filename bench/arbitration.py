"""The arbitration corpus and its offline evaluation (issue 16): `python -m bench.arbitration`.

    python -m bench.arbitration export --results bench/results/corpus --out bench/corpus/arbitration.jsonl
    python -m bench.arbitration evaluate --corpus bench/corpus/arbitration.jsonl --out bench/results/arbitration

`export` turns the labelling run's bench records (POST_ARBITRATION with the `shadow` arbiter: the edge
answered, every scorer's features were computed, and the cloud answered too) into a compact JSONL
corpus, one line per item, so scorers can be evaluated and trained again without the models.

`evaluate` draws RouteLLM-style escalation curves on graded quality (token F1 for reading, 1/0 for
maths) for each score function, per subset (GSM8K, SQuAD with the passage, and a seeded half-and-half
mix): APGR, CPT(50%) and CPT(80%) with bootstrap intervals, and the $ per 1,000 requests of a cascade
at each threshold. Scores are "higher keeps the edge": the lowest scores are escalated first.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench.datasets import GSM8K, SQUAD_PASSAGE, BenchItem, build_messages, load_dataset, split_of, user_turn
from bench.runner import RESULTS_FILE, latest_records, load_records
from router.core.arbiters.features import refreshed_text_features
from router.core.arbiters.scorers import (consistency_score_from_features, current_rule_score, logprob_score,
                                          task_score_from_features)
from router.core.arbiters.thresholds import TargetShareThreshold
from router.domain.config import RoutingSettings
from router.domain.scoring import NUMERIC

Row = Mapping[str, Any]

POST_ARBITRATION = "POST_ARBITRATION"
SHADOW = "shadow"
SIGNIFICANT_DIGITS = 6  # features, costs and times in the corpus: enough to rank, small to commit
MIXED = "mixed"
SUBSET_ORDER = (MIXED, GSM8K, SQUAD_PASSAGE)
CPT_TARGETS = (0.5, 0.8)
CONFIDENCE = 0.95
# The acceptance target: some strategy recovers 80% of the gap with under half the traffic.
TARGET_PGR = 0.8
TARGET_SHARE = 0.5
# A quality gap this small is no gap: sums of F1 scores leave float dust where the true gap is 0.
GAP_EPSILON = 1e-9
REQUESTS_PER_REPORT_UNIT = 1000  # costs are reported in $ per 1,000 requests
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
CURVES_PNG = "escalation_curves.png"
COST_PNG = "quality_vs_cost.png"
RANDOM = "random"
ORACLE = "oracle"
LEARNED = "learned"
PRE_RULE = "pre:rule"       # PRE_ARBITRATION's default rule
PRE_ROUTER = "pre:router"   # PRE_ARBITRATION's trained router
PROBE = "probe"             # POST_ARBITRATION's draft probe (the edge's state at the end of its answer)
PRE_PROBE = "pre:probe"     # PRE_ARBITRATION after the prefill (the edge's state at the end of the prompt)
AUTO = "auto"               # AUTO: the prefill probe's bands, the draft probe between them
ROUTER_SAVING = 2 / 3       # PRE_ARBITRATION's target: CPT(50%) at most this share of random's
# Cloud shares asked of a target_share threshold calibrated on the train split (the daemon's own
# TargetShareThreshold), to report the share each one gives on the evaluated split and what it recovers.
CALIBRATION_SHARES = (0.1, 0.3, 0.5)


class CorpusError(ValueError):
    """A results or corpus file this module cannot use; the message names the file and the place."""


# ================================================================ export


# Which share of the bill a backend run belongs to. The edge's first answer is a "draft" under
# POST_ARBITRATION and an "answer" elsewhere; samples and verification are the scorers' own calls.
_EDGE_PARTS = MappingProxyType({"draft": "edge_answer", "answer": "edge_answer", "sample": "sample",
                                "verify": "verify"})
_COST_PARTS = ("edge_answer", "sample", "verify", "cloud")


def _significant(value: float, digits: int = SIGNIFICANT_DIGITS) -> float:
    return float(f"{value:.{digits}g}")


def run_part(run: Mapping[str, Any]) -> str:
    """"edge_answer", "sample", "verify" or "cloud"."""
    if run["backend"] == "CLOUD":
        return "cloud"
    purpose = run.get("purpose", "answer")
    if purpose not in _EDGE_PARTS:
        raise CorpusError(f"an edge run with an unknown purpose {purpose!r}")
    return _EDGE_PARTS[purpose]


def costs_by_part(runs: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Dollars and seconds per part of the request; scorer_* adds the samples and the verification."""
    usd = dict.fromkeys(_COST_PARTS, 0.0)
    seconds = dict.fromkeys(_COST_PARTS, 0.0)
    for run in runs:
        part = run_part(run)
        usd[part] += float(run.get("cost_usd") or 0.0)
        seconds[part] += float(run.get("total_s") or 0.0)
    usd["scorer"] = usd["sample"] + usd["verify"]
    seconds["scorer"] = seconds["sample"] + seconds["verify"]
    return ({f"{part}_usd": _significant(value) for part, value in usd.items()}
            | {f"{part}_s": _significant(value) for part, value in seconds.items()})


def graded_quality(record: Row, side: str, scoring: str) -> Optional[float]:
    """Correctness as 1/0 for a numeric item, token F1 for a text item; None when unscored."""
    if scoring == NUMERIC:
        correct = record.get(f"{side}_correct")
        return None if correct is None else float(bool(correct))
    f1 = record.get(f"{side}_f1")
    return None if f1 is None else float(f1)


def skip_reason(record: Row) -> Optional[str]:
    """Why a bench record cannot be a corpus item, or None when it can."""
    if record.get("error"):
        return "error"
    if record.get("mode") != POST_ARBITRATION:
        return "not POST_ARBITRATION"
    decision = record.get("decision") or {}
    if decision.get("arbiter") != SHADOW:
        return "not the shadow arbiter"  # a cascade asks the cloud only when it escalates: biased labels
    if not decision.get("features") or decision.get("score") is None:
        return "no features"
    if record.get("edge_text") is None or record.get("cloud_text") is None:
        return "an answer is missing"
    return None


def corpus_row(record: Row, item: BenchItem) -> dict[str, Any]:
    """One compact corpus line: identity and split, graded labels, features, rule score, costs."""
    edge_quality = graded_quality(record, "edge", item.scoring)
    cloud_quality = graded_quality(record, "cloud", item.scoring)
    if edge_quality is None or cloud_quality is None:
        raise CorpusError(f"{item.dataset}/{item.item_id}: an answer has no score")
    features = text_features(record, item)
    return {
        "dataset": item.dataset,
        "item_id": item.item_id,
        # GSM8K problems stand alone; a SQuAD article's questions share a passage and a split.
        "group": item.group or item.item_id,
        "split": split_of(item),
        # What the daemon embeds for the learned scorer: the user turn the edge saw.
        "text": user_turn(item),
        "edge_quality": edge_quality,
        "cloud_quality": cloud_quality,
        "features": {name: _significant(float(value)) for name, value in sorted(features.items())},
        # The default rule as the code now draws it (RuleScorer's choice), so that a change to a scorer
        # shows in the `rule` row and in the baseline the trainers report, without relabelling.
        "rule_score": _significant(current_rule_score(features, float(record["decision"]["score"]))),
        **costs_by_part(record.get("runs") or ()),
        "edge_tokens": int(record.get("edge_tokens") or 0),
        "cloud_tokens": int(record.get("cloud_tokens") or 0),
    }


def text_features(record: Row, item: BenchItem) -> dict[str, float]:
    """The decision's features, with those that are pure functions of the request and the edge's text
    computed afresh: a feature added after an item was labelled (span_in_focus) then needs no relabelling."""
    return refreshed_text_features(build_messages(item), record["edge_text"], record["decision"]["features"])


@dataclass
class ExportReport:
    records_read: int = 0
    written: Counter = field(default_factory=Counter)  # (dataset, split) -> items
    skipped: Counter = field(default_factory=Counter)  # reason -> records


def results_file(results: Path) -> Path:
    return results / RESULTS_FILE if results.is_dir() else results


def items_by_key(datasets: Iterable[str], load: Callable[[str], list[BenchItem]]) -> dict[tuple[str, str], BenchItem]:
    return {(item.dataset, item.item_id): item for name in sorted(set(datasets)) for item in load(name)}


def write_jsonl_atomically(path: Path, rows: Iterable[Row]) -> None:
    """Write beside the target and rename, so a reader sees the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    with open(partial, "w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
    os.replace(partial, path)


def export_corpus(results: Path, out: Path, *,
                  load: Callable[[str], list[BenchItem]] = load_dataset) -> ExportReport:
    """Write the corpus of every usable record in `results` (a directory or its results.jsonl).

    The results file may be growing while this reads it (the labelling run appends): a torn last
    line is skipped by load_records, and the next export picks the item up.
    """
    report = ExportReport()
    # The last record of an item wins, as in the bench summary (a retried error replaces the error).
    records = latest_records(load_records(results_file(results)))
    report.records_read = len(records)
    usable = []
    for record in records:
        reason = skip_reason(record)
        if reason:
            report.skipped[reason] += 1
        else:
            usable.append(record)
    items = items_by_key((record["dataset"] for record in usable), load)
    rows = []
    for record in usable:
        item = items.get((record["dataset"], record["item_id"]))
        if item is None:
            raise CorpusError(f"{results_file(results)}: {record['dataset']}/{record['item_id']} is not in "
                              "the data set as loaded now: was the run made on another data file?")
        rows.append(corpus_row(record, item))
    rows.sort(key=lambda row: (row["dataset"], row["item_id"]))
    write_jsonl_atomically(out, rows)
    report.written.update((row["dataset"], row["split"]) for row in rows)
    return report


def export_lines(report: ExportReport, out: Path) -> list[str]:
    lines = [f"read {report.records_read} records; wrote {sum(report.written.values())} items to {out}"]
    lines += [f"  {dataset} {split}: {count}" for (dataset, split), count in sorted(report.written.items())]
    lines += [f"  skipped ({reason}): {count}" for reason, count in sorted(report.skipped.items())]
    return lines


# ================================================================ score functions


def consistency_score(row: Row) -> float:
    """As ConsistencyScorer: the agreement of the samples for a numeric answer, else the task score."""
    return consistency_score_from_features(row["features"])


@dataclass(frozen=True)
class ScoreFunction:
    """A way to rank the items (higher keeps the edge's answer), and the scorer runs a cascade using
    it pays on every request (sample_usd, verify_usd), beside the edge's answer."""

    name: str
    score: Callable[[Row], float]
    extra_cost_keys: tuple[str, ...] = ()
    # PRE_ARBITRATION: decided before generating, so a request sent to the cloud never pays the edge.
    routes_before: bool = False
    # Per item instead (AUTO: the items its prefill band sends to the cloud at once).
    routed_before: Optional[Callable[[Row], bool]] = None


SCORE_FUNCTIONS = (
    ScoreFunction("logprob", lambda row: logprob_score(row["features"])),
    ScoreFunction("task", lambda row: task_score_from_features(row["features"])),
    ScoreFunction("consistency", consistency_score, ("sample_usd",)),
    ScoreFunction("verify", lambda row: row["features"]["verify_p_yes"], ("verify_usd",)),
    # The default rule samples numeric answers (consistency) and never verifies.
    ScoreFunction("rule", lambda row: row["rule_score"], ("sample_usd",)),
    # Knows each item's gain: escalates the largest cloud_quality - edge_quality first.
    ScoreFunction(ORACLE, lambda row: row["edge_quality"] - row["cloud_quality"]),
)


# ================================================================ curves and metrics


def _cpt_key(target: float) -> str:
    return f"cpt_{target:.0%}".replace("%", "")


METRIC_KEYS = ("apgr",) + tuple(_cpt_key(t) for t in CPT_TARGETS)


@dataclass(frozen=True)
class Curve:
    """The escalation curve's points, one per threshold, from nothing escalated to everything."""

    thresholds: list[Optional[float]]  # escalate scores <= threshold; None: escalate nothing
    shares: np.ndarray  # cloud share
    qualities: np.ndarray  # mean graded quality of the cascade
    pgrs: Optional[np.ndarray]  # share of the edge-to-cloud gap recovered; None when there is no gap
    cloud_usd: np.ndarray  # mean cloud $ per request


def escalation_curve(scores: np.ndarray, edge_quality: np.ndarray, cloud_quality: np.ndarray,
                     cloud_usd: Optional[np.ndarray] = None) -> Curve:
    """Escalate the lowest scores first. Equal scores are escalated together, since no threshold can
    part them, so points fall only between distinct scores (as bench.summary.sweep_points does)."""
    n = len(scores)
    cloud_usd = np.zeros(n) if cloud_usd is None else cloud_usd
    order = np.argsort(scores, kind="stable")
    ranked = scores[order]
    last_of_tie = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True))
    escalated = np.concatenate(([0], last_of_tie + 1))
    gained = np.concatenate(([0.0], np.cumsum((cloud_quality - edge_quality)[order])[last_of_tie]))
    spent = np.concatenate(([0.0], np.cumsum(cloud_usd[order])[last_of_tie]))
    # Dividing by the last cumulative gain (not a separate sum) keeps PGR exactly 0 and 1 at the ends.
    pgrs = gained / gained[-1] if gained[-1] / n > GAP_EPSILON else None
    return Curve(thresholds=[None] + ranked[last_of_tie].tolist(), shares=escalated / n,
                 qualities=(edge_quality.sum() + gained) / n, pgrs=pgrs, cloud_usd=spent / n)


def area_under(shares: np.ndarray, pgrs: np.ndarray) -> float:
    """APGR: the trapezoid area under PGR over the cloud share in [0, 1]."""
    return float(np.sum(np.diff(shares) * (pgrs[1:] + pgrs[:-1]) / 2))


def cost_to_reach(shares: np.ndarray, pgrs: np.ndarray, target: float) -> float:
    """CPT: the smallest cloud share whose PGR reaches `target` along the piecewise-linear curve
    (between two thresholds, a router mixing them at random traces the straight line)."""
    reached = np.flatnonzero(pgrs >= target)
    if len(reached) == 0:
        return float(shares[-1])
    j = reached[0]
    if j == 0:
        return float(shares[0])
    c0, c1, p0, p1 = shares[j - 1], shares[j], pgrs[j - 1], pgrs[j]
    return float(c0 + (target - p0) / (p1 - p0) * (c1 - c0))


def curve_metrics(curve: Curve) -> dict[str, Optional[float]]:
    if curve.pgrs is None:
        return {"apgr": None, **{_cpt_key(t): None for t in CPT_TARGETS}}
    return {"apgr": area_under(curve.shares, curve.pgrs),
            **{_cpt_key(t): cost_to_reach(curve.shares, curve.pgrs, t) for t in CPT_TARGETS}}


# ================================================================ subsets


@dataclass(frozen=True)
class Subset:
    name: str
    rows: list[Row]
    counts: dict[str, int]  # items per data set


def split_rows(rows: Iterable[Row], split: str) -> list[Row]:
    return [row for row in rows if split == "all" or row["split"] == split]


def build_subsets(rows: Sequence[Row], *, seed: int) -> dict[str, Subset]:
    """GSM8K alone, SQuAD alone, and the mixed workload: as many items of each as the smaller of
    the two holds, drawn with `seed`, so neither task's quality scale dominates the mix."""
    by_dataset: dict[str, list[Row]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: (r["dataset"], r["item_id"])):
        by_dataset[row["dataset"]].append(row)
    per_task = min(len(by_dataset[GSM8K]), len(by_dataset[SQUAD_PASSAGE]))
    draw = random.Random(seed)
    mixed = draw.sample(by_dataset[GSM8K], per_task) + draw.sample(by_dataset[SQUAD_PASSAGE], per_task)
    subsets = {MIXED: Subset(MIXED, mixed, {GSM8K: per_task, SQUAD_PASSAGE: per_task})}
    for dataset in (GSM8K, SQUAD_PASSAGE):
        subsets[dataset] = Subset(dataset, by_dataset[dataset], {dataset: len(by_dataset[dataset])})
    return subsets


# ================================================================ evaluation of one subset


def _column(rows: Sequence[Row], key: str) -> np.ndarray:
    return np.array([float(row[key]) for row in rows], dtype=float)


def gap_reason(n: int, edge_quality: float, cloud_quality: float) -> Optional[str]:
    if n == 0:
        return "no items"
    if cloud_quality - edge_quality <= GAP_EPSILON:
        return (f"gap not positive: cloud quality {cloud_quality:.3f} is not above edge quality "
                f"{edge_quality:.3f} on {n} items, so PGR is undefined")
    return None


def usd_per_1k(curve: Curve, base_usd_per_request: float) -> np.ndarray:
    return REQUESTS_PER_REPORT_UNIT * (base_usd_per_request + curve.cloud_usd)


def bootstrap(scores: Mapping[str, np.ndarray], edge_quality: np.ndarray, cloud_quality: np.ndarray, *,
              resamples: int, seed: int) -> tuple[dict[str, dict[str, list[float]]], int]:
    """Each metric of each score function over `resamples` resamples of the items (with replacement,
    the same resamples for every function, so they are compared on the same draws), and how many
    resamples had no positive gap and were left out."""
    rng = np.random.default_rng(seed)
    n = len(edge_quality)
    draws: dict[str, dict[str, list[float]]] = {name: {key: [] for key in METRIC_KEYS} for name in scores}
    without_gap = 0
    for _ in range(resamples):
        picked = rng.integers(0, n, size=n)
        edge, cloud = edge_quality[picked], cloud_quality[picked]
        if (cloud.sum() - edge.sum()) / n <= GAP_EPSILON:
            without_gap += 1
            continue
        for name, values in scores.items():
            for key, value in curve_metrics(escalation_curve(values[picked], edge, cloud)).items():
                draws[name][key].append(value)
    return draws, without_gap


def percentile_interval(values: Sequence[float]) -> Optional[list[float]]:
    if not values:
        return None
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return [float(low), float(high)]


def _rounded(values: Iterable[Optional[float]]) -> list[Optional[float]]:
    return [None if value is None else _significant(float(value)) for value in values]


def scorer_result(function: ScoreFunction, rows: Sequence[Row], scores: np.ndarray,
                  draws: Mapping[str, list[float]]) -> dict[str, Any]:
    edge, cloud = _column(rows, "edge_quality"), _column(rows, "cloud_quality")
    edge_usd = _column(rows, "edge_answer_usd")
    # What sending an item to the cloud adds: its cloud call, less its edge answer when routed before.
    before = (np.array([function.routed_before(row) for row in rows], dtype=bool) if function.routed_before
              else np.full(len(rows), function.routes_before))
    marginal_usd = _column(rows, "cloud_usd") - np.where(before, edge_usd, 0.0)
    curve = escalation_curve(scores, edge, cloud, marginal_usd)
    base_usd = float(np.mean(edge_usd))
    extra_usd = sum(float(np.mean(_column(rows, key))) for key in function.extra_cost_keys)
    return {
        "scorer": function.name,
        **curve_metrics(curve),
        **{f"{key}_ci": percentile_interval(draws[key]) for key in METRIC_KEYS},
        "scorer_usd_per_1k": REQUESTS_PER_REPORT_UNIT * extra_usd,
        "points": {
            "threshold": _rounded(curve.thresholds),
            "cloud_share": _rounded(curve.shares),
            "quality": _rounded(curve.qualities),
            "pgr": None if curve.pgrs is None else _rounded(curve.pgrs),
            "usd_per_1k": _rounded(usd_per_1k(curve, base_usd + extra_usd)),
        },
    }


def random_result(rows: Sequence[Row], reason: Optional[str]) -> dict[str, Any]:
    """A router that escalates each request with probability c: the straight line from edge-only to
    cloud-only in quality and in cost, so APGR = 0.5 and CPT(x) = x exactly (no interval)."""
    edge, cloud = np.mean(_column(rows, "edge_quality")), np.mean(_column(rows, "cloud_quality"))
    edge_usd = np.mean(_column(rows, "edge_answer_usd"))
    cloud_usd = np.mean(_column(rows, "cloud_usd"))
    exact = reason is None
    return {
        "scorer": RANDOM,
        "exact": True,
        "apgr": 0.5 if exact else None,
        **{_cpt_key(t): (t if exact else None) for t in CPT_TARGETS},
        **{f"{key}_ci": None for key in METRIC_KEYS},
        "scorer_usd_per_1k": 0.0,
        "points": {"threshold": [None, None], "cloud_share": [0.0, 1.0],
                   "quality": _rounded([edge, cloud]), "pgr": [0.0, 1.0] if exact else None,
                   "usd_per_1k": _rounded([REQUESTS_PER_REPORT_UNIT * edge_usd,
                                           REQUESTS_PER_REPORT_UNIT * (edge_usd + cloud_usd)])},
    }


def calibrated_points(calibration_scores: np.ndarray, scores: np.ndarray, edge_quality: np.ndarray,
                      cloud_quality: np.ndarray, *, seed: int,
                      window: int = RoutingSettings.model_fields["window"].default) -> list[dict[str, Any]]:
    """For each share in CALIBRATION_SHARES, the daemon's target_share threshold (its default window)
    as a device would run it: warmed up on `calibration_scores` (the train split's), then deciding each
    of `scores` in a seeded random order as a request, observing its score first and re-calibrating as
    it goes (ties drawn, seeded). The cloud share that results, the quality served and the gap recovered."""
    if len(calibration_scores) == 0 or len(scores) == 0:
        return []
    gap = float(cloud_quality.mean() - edge_quality.mean())
    order = np.random.default_rng(seed).permutation(len(scores))
    warm_up = np.random.default_rng(seed).permutation(calibration_scores)[-window:]
    points = []
    for share in CALIBRATION_SHARES:
        threshold = TargetShareThreshold(share=share, window=window, min_samples=1, seed=seed)
        for score in warm_up:
            threshold.observe(float(score))
        escalated = np.zeros(len(scores), dtype=bool)
        for index in order:
            threshold.observe(float(scores[index]))  # as the cascade does, before deciding
            escalated[index] = not threshold.keeps(float(scores[index]), threshold.current())
        quality = float(np.where(escalated, cloud_quality, edge_quality).mean())
        points.append({"asked": share, "given": round(float(escalated.mean()), 4), "quality": round(quality, 4),
                       "pgr": round((quality - float(edge_quality.mean())) / gap, 4) if gap > GAP_EPSILON else None})
    return points


def evaluate_subset(subset: Subset, *, resamples: int, seed: int,
                    functions: Sequence[ScoreFunction] = SCORE_FUNCTIONS,
                    calibration_rows: Sequence[Row] = ()) -> dict[str, Any]:
    """The subset's curves and metrics per scorer; with `calibration_rows` (the train split's matching
    subset), also each scorer's cloud share and gap recovered under a threshold calibrated on them."""
    rows = subset.rows
    n = len(rows)
    result: dict[str, Any] = {"subset": subset.name, "n": n, "counts": subset.counts,
                              "edge_quality": None, "cloud_quality": None, "oracle_quality": None,
                              "reason": "no items" if n == 0 else None, "bootstrap_without_gap": 0,
                              "scorers": []}
    if n == 0:
        return result
    edge, cloud = _column(rows, "edge_quality"), _column(rows, "cloud_quality")
    result.update(edge_quality=float(edge.mean()), cloud_quality=float(cloud.mean()),
                  oracle_quality=float(np.maximum(edge, cloud).mean()),
                  reason=gap_reason(n, float(edge.mean()), float(cloud.mean())))
    scores = {f.name: np.array([float(f.score(row)) for row in rows]) for f in functions}
    draws, without_gap = (bootstrap(scores, edge, cloud, resamples=resamples, seed=seed)
                          if result["reason"] is None else
                          ({f.name: {key: [] for key in METRIC_KEYS} for f in functions}, 0))
    result["bootstrap_without_gap"] = without_gap
    result["scorers"] = ([scorer_result(f, rows, scores[f.name], draws[f.name]) for f in functions]
                         + [random_result(rows, result["reason"])])
    for function, scorer in zip(functions, result["scorers"]):
        if function.name != ORACLE:  # the oracle's score is the label itself: nothing to calibrate
            train_scores = np.array([float(function.score(row)) for row in calibration_rows])
            scorer["calibrated"] = calibrated_points(train_scores, scores[function.name], edge, cloud, seed=seed)
    return result


# ================================================================ the target


def target_verdict(mixed: Mapping[str, Any], split: str) -> dict[str, Any]:
    """Whether the best real strategy (the oracle is no strategy) has CPT(80%) < 0.50 on the mixed
    subset. Picking the best by its point estimate flatters it a little: the interval says how much
    the claim can be trusted."""
    cpt_key = _cpt_key(TARGET_PGR)
    size = (f"n={mixed['n']}: " + " + ".join(f"{count} {name}" for name, count in mixed["counts"].items()))
    claim = f"CPT({TARGET_PGR:.0%}) < {TARGET_SHARE:.2f} on the mixed {split} split ({size})"
    # POST_ARBITRATION's strategies: not the oracle, and not the pre-router (it has its own target).
    candidates = [s for s in mixed["scorers"] if s["scorer"] not in (ORACLE, AUTO) and not s["scorer"].startswith("pre:")
                  and s[cpt_key] is not None]
    if not candidates:
        reason = mixed["reason"] or "no scorer has a curve"
        return {"claim": claim, "met": None, "best": None, "cpt": None, "ci": None,
                "text": f"target {claim}: not measurable ({reason})"}
    best = min(candidates, key=lambda s: s[cpt_key])
    value, interval = best[cpt_key], best[f"{cpt_key}_ci"]
    met = value < TARGET_SHARE
    shown = f"{best['scorer']} CPT({TARGET_PGR:.0%}) = {value:.3f}" + (
        f", 95% CI [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")
    if not met:
        verdict = "NOT met"
    elif interval and interval[1] < TARGET_SHARE:
        verdict = "met, and the whole 95% interval is below the target"
    else:
        verdict = "met by the point estimate only: the 95% interval reaches the target"
    return {"claim": claim, "met": met, "best": best["scorer"], "cpt": value, "ci": interval,
            "text": f"target {claim}: {verdict}; best strategy {shown}"}


# The hidden-state probes' targets on the mixed split (issue 29): (scorer, metric, at most / at least, value).
PROBE_TARGETS = ((PROBE, "cpt_80", "at most", 0.45), (PRE_PROBE, "cpt_50", "at most", 0.30),
                 (AUTO, "apgr", "at least", 0.75))
PROBE_CPT80_UPPER = 0.55  # and the draft probe's CPT(80%) interval must end below this


def probe_verdicts(mixed: Mapping[str, Any], split: str) -> list[dict[str, Any]]:
    """Each scored probe's target on the mixed split, met or not, with its interval."""
    by_name = {s["scorer"]: s for s in mixed["scorers"]}
    verdicts = []
    for name, key, direction, bound in PROBE_TARGETS:
        scorer = by_name.get(name)
        if scorer is None:
            continue
        label = "APGR" if key == "apgr" else f"CPT({key[4:]}%)"
        claim = f"{name} {label} {'<=' if direction == 'at most' else '>='} {bound} on the mixed {split} split (n={mixed['n']})"
        value, interval = scorer.get(key), scorer.get(f"{key}_ci")
        if value is None:
            verdicts.append({"claim": claim, "met": None, "text": f"target {claim}: not measurable"})
            continue
        met = value <= bound if direction == "at most" else value >= bound
        if name == PROBE and interval is not None:
            claim += f", its 95% CI ending below {PROBE_CPT80_UPPER}"
            met = met and interval[1] < PROBE_CPT80_UPPER
        shown = f"{label} = {value:.3f}" + (f", 95% CI [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")
        verdicts.append({"claim": claim, "met": met, "text": f"target {claim}: {'met' if met else 'NOT met'}; {shown}"})
    return verdicts


def router_verdict(mixed: Mapping[str, Any], split: str) -> Optional[dict[str, Any]]:
    """PRE_ARBITRATION's target: the trained router (else the default rule) reaches CPT(50%) at no more
    than 2/3 of random's cloud share, a saving of at least 1.5x; None when no pre-router was scored."""
    by_name = {s["scorer"]: s for s in mixed["scorers"]}
    chosen = by_name.get(PRE_ROUTER) or by_name.get(PRE_RULE)
    if chosen is None:
        return None
    limit = ROUTER_SAVING * by_name[RANDOM]["cpt_50"] if by_name.get(RANDOM, {}).get("cpt_50") else None
    claim = f"{chosen['scorer']} CPT(50%) <= 2/3 of random's on the mixed {split} split (n={mixed['n']})"
    value, interval = chosen.get("cpt_50"), chosen.get("cpt_50_ci")
    if value is None or limit is None:
        return {"claim": claim, "met": None, "text": f"target {claim}: not measurable ({mixed['reason']})"}
    met = value <= limit
    verdict = ("NOT met" if not met else "met, and the whole 95% interval is within it"
               if interval and interval[1] <= limit else "met by the point estimate only")
    shown = f"CPT(50%) = {value:.3f}" + (f", 95% CI [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")
    return {"claim": claim, "met": met, "scorer": chosen["scorer"], "cpt": value, "ci": interval, "limit": limit,
            "text": f"target {claim}: {verdict}; {shown} against {limit:.3f}"}


# ================================================================ the report


def load_corpus(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The corpus rows and the file's line count."""
    rows = []
    lines = path.read_text(encoding="utf-8").split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise CorpusError(f"{path}:{number}: bad JSON: {exc.msg}") from None
    return rows, len(rows)


def _fmt(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.3f}"


def _with_interval(result: Mapping[str, Any], key: str) -> str:
    interval = result[f"{key}_ci"]
    if result[key] is None:
        return "—"
    if interval:
        return f"{result[key]:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"
    return f"{result[key]:.3f} " + ("(exact)" if result.get("exact") else "[no interval]")


def subset_markdown(result: Mapping[str, Any]) -> list[str]:
    counts = ", ".join(f"{count} {name}" for name, count in result["counts"].items())
    lines = [f"### {result['subset']} (n={result['n']}: {counts})", ""]
    if result["n"] == 0:
        return lines + ["No items.", ""]
    lines.append(f"Mean quality: edge {_fmt(result['edge_quality'])}, cloud {_fmt(result['cloud_quality'])}, "
                 f"oracle {_fmt(result['oracle_quality'])}.")
    if result["reason"]:
        return lines + ["", f"No curve: {result['reason']}.", ""]
    if result["bootstrap_without_gap"]:
        lines.append(f"{result['bootstrap_without_gap']} bootstrap resamples had no positive gap and were "
                     "left out of the intervals.")
    lines += ["", "| scorer | APGR [95% CI] | CPT(50%) [95% CI] | CPT(80%) [95% CI] | scorer's own $/1k |",
              "| --- | --- | --- | --- | --- |"]
    for scorer in result["scorers"]:
        cells = [scorer["scorer"]] + [_with_interval(scorer, key) for key in METRIC_KEYS]
        lines.append("| " + " | ".join(cells + [f"{scorer['scorer_usd_per_1k']:.4f}"]) + " |")
    return lines + [""] + calibration_markdown(result)


def calibration_markdown(result: Mapping[str, Any]) -> list[str]:
    calibrated = [s for s in result["scorers"] if s.get("calibrated")]
    if not calibrated:
        return []
    asked = [point["asked"] for point in calibrated[0]["calibrated"]]
    lines = ["The daemon's `target_share` threshold (window 500), warmed up on the train split's scores of the "
             "same subset, then deciding these items one by one as requests and re-calibrating as it goes: the "
             "cloud share asked, the share given, and the gap recovered (PGR). The learned models' train scores "
             "are in-sample (they were fitted on those items).", "",
             "| scorer | " + " | ".join(f"asked {share:.0%}: given, PGR" for share in asked) + " |",
             "| --- |" + " --- |" * len(asked)]
    for scorer in calibrated:
        cells = [f"{p['given']:.3f}, " + ("—" if p["pgr"] is None else f"{p['pgr']:.3f}") for p in scorer["calibrated"]]
        lines.append(f"| {scorer['scorer']} | " + " | ".join(cells) + " |")
    return lines + [""]


def render_markdown(summary: Mapping[str, Any]) -> str:
    corpus = summary["corpus"]
    lines = [
        "# Arbitration: escalation curves on the labelled corpus", "",
        f"- command: `{summary['command']}`",
        f"- corpus: `{corpus['path']}` ({corpus['lines']} lines); split: {summary['split']}",
        f"- bootstrap: {summary['bootstrap']} resamples of the items, seed {summary['seed']}, "
        f"{CONFIDENCE:.0%} percentile intervals",
        "- quality: token F1 for SQuAD, 1/0 correctness for GSM8K; PGR(c) = (q(c) - q_edge) / "
        "(q_cloud - q_edge), APGR its area over the cloud share c, CPT(p) the smallest share with PGR >= p",
        "- cost of a cascade: every request pays the edge's answer and the scorer's own runs (samples for "
        "consistency and rule, the verification for verify); escalated requests add the cloud",
    ]
    learned = summary.get("learned_model")
    if learned:
        trained_on = learned.get("training_corpus") or {}
        lines.append(f"- learned: `{learned['path']}` ({learned.get('regressor')}; embedding "
                     f"{learned.get('embedding_dim')}-d; trained on {trained_on.get('train_items')} train items of "
                     f"`{trained_on.get('path')}`), scored through onnxruntime as the daemon does")
    router = summary.get("router_model")
    if router:
        trained_on = router.get("training_corpus") or {}
        lines.append(f"- pre:router: `{router['path']}` ({router.get('regressor')}; trained on "
                     f"{trained_on.get('train_items')} train items); pre:rule is PRE_ARBITRATION's default rule. "
                     "A pre-router's escalated requests pay the cloud only, never the edge")
    probes = summary.get("probes")
    if probes:
        for name, key in ((PROBE, "draft"), (PRE_PROBE, "prefill")):
            model = probes.get(key)
            if model:
                bound = model.get("hidden_state") or {}
                lines.append(f"- {name}: `{model['path']}` ({model.get('regressor')}; the {bound.get('layer')} state "
                             f"at the {bound.get('at')} of {bound.get('edge_model')}, {bound.get('dims')}-d; states "
                             f"from `{probes['states']}`), scored through onnxruntime as the daemon does; it asks the "
                             "edge nothing more" + (" (a pre-router: escalated requests pay the prefill and the cloud, "
                                                    "never the edge's answer)" if key == "prefill" else ""))
        if probes.get("auto_bands"):
            cloud_below, edge_above = probes["auto_bands"]
            lines.append(f"- auto: prefill score < {cloud_below} to the cloud at once, >= {edge_above} to the edge "
                         "alone, the cascade on the draft probe between (bands chosen out of fold on the train split: "
                         "`python -m bench.auto_bands`)")
    lines += ["", f"**{summary['target']['text']}**", ""]
    if summary.get("router_target"):
        lines += [f"**{summary['router_target']['text']}**", ""]
    for verdict in summary.get("probe_targets") or ():
        lines += [f"**{verdict['text']}**", ""]
    for name in SUBSET_ORDER:
        lines += subset_markdown(summary["subsets"][name])
    lines += [f"Plots: `{CURVES_PNG}` (PGR against cloud share), `{COST_PNG}` (quality against $/1k requests).", ""]
    return "\n".join(lines)


def _panels(count: int) -> tuple[Figure, list[Any]]:
    figure = Figure(figsize=(5.5 * count, 4.2), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)  # Agg, through the object API: no global pyplot state
    return figure, list(figure.subplots(1, count, squeeze=False)[0])


# The two references are drawn apart from the scorers, and from each other.
_REFERENCE_STYLES = MappingProxyType({RANDOM: MappingProxyType({"color": "grey", "linestyle": "--"}),
                                      ORACLE: MappingProxyType({"color": "black", "linestyle": ":"})})


def _empty_panel(ax: Any, result: Mapping[str, Any]) -> None:
    ax.text(0.5, 0.5, result["reason"] or "no items", ha="center", va="center", wrap=True, fontsize=9)
    ax.set_axis_off()


def plot_escalation_curves(summary: Mapping[str, Any], path: Path) -> Path:
    """PGR against cloud share, one panel per subset (mixed first), a line per scorer."""
    figure, axes = _panels(len(SUBSET_ORDER))
    for ax, name in zip(axes, SUBSET_ORDER):
        result = summary["subsets"][name]
        ax.set_title(f"{name} (n={result['n']})")
        if result["reason"]:
            _empty_panel(ax, result)
            continue
        for scorer in result["scorers"]:
            style = _REFERENCE_STYLES.get(scorer["scorer"], {})
            ax.plot(scorer["points"]["cloud_share"], scorer["points"]["pgr"],
                    label=f"{scorer['scorer']} (APGR {scorer['apgr']:.2f})", **style)
        ax.axhline(TARGET_PGR, color="black", linewidth=0.5)
        ax.axvline(TARGET_SHARE, color="black", linewidth=0.5)
        ax.set_xlabel("share of requests sent to the cloud")
        ax.set_ylabel("share of the edge-to-cloud gap recovered (PGR)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    figure.savefig(path, format="png")
    return path


def plot_quality_vs_cost(summary: Mapping[str, Any], path: Path) -> Path:
    """Mean graded quality against $ per 1,000 requests along each scorer's thresholds."""
    figure, axes = _panels(len(SUBSET_ORDER))
    for ax, name in zip(axes, SUBSET_ORDER):
        result = summary["subsets"][name]
        ax.set_title(f"{name} (n={result['n']})")
        if result["n"] == 0:
            _empty_panel(ax, result)
            continue
        for scorer in result["scorers"]:
            style = _REFERENCE_STYLES.get(scorer["scorer"], {})
            ax.plot(scorer["points"]["usd_per_1k"], scorer["points"]["quality"], label=scorer["scorer"], **style)
        ax.set_xlabel("dollars per 1,000 requests")
        ax.set_ylabel("mean quality (F1 / correct)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    figure.savefig(path, format="png")
    return path


def learned_score_function(model_dir: Path, rows: Sequence[Row], *, model_cache: Path) -> ScoreFunction:
    """The learned deferral model of `model_dir`, as the daemon runs it: the features and, when it was
    trained with them, the embedding of each row's text, through onnxruntime. It needs the `all`
    scorer's features, so a cascade using it pays the samples and the verification."""
    from edge.catalogue import ModelCache
    from edge.encoder import TextEncoder
    from router.core.arbiters.features import as_vector
    from router.core.arbiters.learned import LearnedModel, LearnedModelError, gain_to_score

    try:
        model = LearnedModel(model_dir)
    except LearnedModelError as exc:
        raise CorpusError(str(exc)) from None
    encoder = TextEncoder.from_cache(ModelCache(model_cache)) if model.meta.embedding_dim else None
    untexted = [row["item_id"] for row in rows if encoder is not None and not row.get("text")]
    if untexted:
        raise CorpusError(f"{len(untexted)} corpus line(s) have no text for the model's embedding (first: "
                          f"{untexted[0]}): export the corpus again")
    scores: dict[tuple[str, str], float] = {}
    for row in rows:
        vector = np.asarray(as_vector(row["features"]), dtype=np.float32)
        if encoder is not None:
            vector = np.concatenate([vector, encoder.encode([row["text"]])[0]])
        scores[(row["dataset"], row["item_id"])] = gain_to_score(float(model.predict_gain(vector[None, :])[0]))
    return ScoreFunction(LEARNED, lambda row: scores[(row["dataset"], row["item_id"])], ("sample_usd", "verify_usd"))


def router_score_functions(rows: Sequence[Row], model_dir: Optional[Path], *,
                           model_cache: Path) -> tuple[ScoreFunction, ...]:
    """PRE_ARBITRATION's default rule and, with `model_dir`, its trained router (hybrid-router
    train-router), both reading each row's text as the daemon reads the request. None without texts."""
    from router.core.routing.features import ROUTER_FEATURE_NAMES, router_features
    from router.core.routing.model import rule_score

    if not rows or any(not row.get("text") for row in rows):
        if model_dir is not None:
            raise CorpusError("the corpus lines have no text for the router: export the corpus again")
        return ()
    functions = [ScoreFunction(PRE_RULE, lambda row: rule_score(router_features(row["text"])), routes_before=True)]
    if model_dir is not None:
        from edge.catalogue import ModelCache
        from edge.encoder import TextEncoder
        from router.core.arbiters.learned import ROUTER_KIND, LearnedModel, LearnedModelError
        from router.core.routing.model import LearnedRouter

        try:
            model = LearnedModel(model_dir, feature_names=ROUTER_FEATURE_NAMES, kind=ROUTER_KIND)
        except LearnedModelError as exc:
            raise CorpusError(str(exc)) from None
        encoder = TextEncoder.from_cache(ModelCache(model_cache)) if model.meta.embedding_dim else None
        # As the daemon decides: the same object, the row's text as the request's last user message.
        router = LearnedRouter(model=model, encoder=encoder)
        scores = {(row["dataset"], row["item_id"]): router.decide([{"role": "user", "content": row["text"]}]).score
                  for row in rows}
        functions.append(ScoreFunction(PRE_ROUTER, lambda row: scores[(row["dataset"], row["item_id"])],
                                       routes_before=True))
    return tuple(functions)


@dataclass(frozen=True)
class ProbeInputs:
    """The probes to evaluate and the states they read (python -m bench.hidden_states), and AUTO's bands."""

    states: Path
    draft: Optional[Path] = None
    prefill: Optional[Path] = None
    auto_bands: Optional[tuple[float, float]] = None  # (cloud_below, edge_above); needs both probes


def probe_score_functions(rows: Sequence[Row], probes: ProbeInputs) -> tuple[ScoreFunction, ...]:
    """The draft probe (POST), the prefill probe (PRE after the prefill) and AUTO, as the daemon scores:
    each row's features and its stored state through the probe's ONNX model."""
    from router.core.arbiters.corpus import TrainingError
    from router.core.arbiters.learned import LearnedModelError, gain_to_score
    from router.core.probes.model import DRAFT_PROBE_KIND, PREFILL_PROBE_KIND, EdgeIdentity, ProbeModel
    from router.core.probes.states_file import HiddenStatesFile, row_key
    from router.core.routing.features import router_features

    try:
        states = HiddenStatesFile.load(probes.states)
    except TrainingError as exc:
        raise CorpusError(str(exc)) from None
    edge = EdgeIdentity(states.edge_model, states.edge_model_sha256, states.dims)
    missing = [row_key(row["dataset"], row["item_id"]) for row in rows
               if row_key(row["dataset"], row["item_id"]) not in states]
    if missing:
        raise CorpusError(f"{len(missing)} corpus item(s) have no hidden state in {probes.states} (first: "
                          f"{missing[0]}): relabel with python -m bench.hidden_states")
    positions = {key: index for index, key in enumerate(states.keys)}

    def scores_of(directory: Path, kind: str) -> dict[tuple[str, str], float]:
        try:
            probe = ProbeModel(directory, kind=kind, edge=edge)
        except LearnedModelError as exc:
            raise CorpusError(str(exc)) from None
        table = states.draft if kind == DRAFT_PROBE_KIND else states.prompt
        scores = {}
        for row in rows:
            features = row["features"] if kind == DRAFT_PROBE_KIND else router_features(row["text"])
            state = np.asarray(table[positions[row_key(row["dataset"], row["item_id"])]], dtype=np.float32)
            scores[(row["dataset"], row["item_id"])] = gain_to_score(probe.predict_gain(features, state))
        return scores

    key = lambda row: (row["dataset"], row["item_id"])  # noqa: E731
    functions = []
    draft = scores_of(probes.draft, DRAFT_PROBE_KIND) if probes.draft else None
    prefill = scores_of(probes.prefill, PREFILL_PROBE_KIND) if probes.prefill else None
    if draft is not None:
        functions.append(ScoreFunction(PROBE, lambda row: draft[key(row)]))
    if prefill is not None:
        functions.append(ScoreFunction(PRE_PROBE, lambda row: prefill[key(row)], routes_before=True))
    if draft is not None and prefill is not None and probes.auto_bands is not None:
        cloud_below, edge_above = probes.auto_bands

        def auto_score(row: Row) -> float:
            # One ranking: the cloud band first (by the prefill score), then the cascade by the draft's,
            # then the edge band; a threshold in [0, 1] escalates the cloud band and the cascade below it.
            before = prefill[key(row)]
            if before < cloud_below:
                return before - 2.0
            if before >= edge_above:
                return before + 2.0
            return draft[key(row)]

        functions.append(ScoreFunction(AUTO, auto_score, routed_before=lambda row: prefill[key(row)] < cloud_below))
    return tuple(functions)


def evaluate_corpus(corpus: Path, out: Path, *, split: str = "test", resamples: int = 1000, seed: int = 0,
                    command: str = "", learned: Optional[Path] = None, router: Optional[Path] = None,
                    probes: Optional[ProbeInputs] = None,
                    model_cache: Path = Path("~/.cache/hybrid-router/models").expanduser()) -> dict[str, Any]:
    """Evaluate every subset, write summary.json, summary.md and the two plots; returns the summary.

    `learned`: a model directory from `hybrid-router train-arbiter`, scored beside the others. Evaluate
    it on the split it was not trained on (it trains on `train`)."""
    rows, line_count = load_corpus(corpus)
    chosen = split_rows(rows, split)
    functions = tuple(SCORE_FUNCTIONS)
    learned_meta = None
    # The models score the train split too, where the thresholds are calibrated (calibrated_points).
    calibration = [row for row in rows if row["split"] == "train"] if split == "test" else []
    if learned is not None:
        function = learned_score_function(learned, chosen + calibration, model_cache=model_cache)
        functions = functions[:-1] + (function, functions[-1])  # the oracle stays last
        meta = json.loads((learned / "meta.json").read_text())
        learned_meta = {"path": str(learned), "created_at": meta.get("created_at"),
                        "embedding_dim": meta.get("embedding_dim"), "regressor": meta.get("regressor"),
                        "training_corpus": meta.get("training_corpus")}
    pre = router_score_functions(chosen + calibration, router, model_cache=model_cache)
    functions = functions[:-1] + pre + functions[-1:]
    probes_meta = None
    if probes is not None:
        functions = functions[:-1] + probe_score_functions(chosen + calibration, probes) + functions[-1:]
        probes_meta = {"states": probes.states.name, "auto_bands": probes.auto_bands,
                       **{name: _model_meta(directory) for name, directory in (("draft", probes.draft),
                                                                              ("prefill", probes.prefill)) if directory}}
    router_meta = None
    if router is not None:
        meta = json.loads((router / "meta.json").read_text())
        router_meta = {"path": str(router), "created_at": meta.get("created_at"),
                       "embedding_dim": meta.get("embedding_dim"), "regressor": meta.get("regressor"),
                       "training_corpus": meta.get("training_corpus")}
    subsets = build_subsets(chosen, seed=seed)
    calibration_subsets = build_subsets(calibration, seed=seed)
    results = {name: evaluate_subset(subsets[name], resamples=resamples, seed=seed, functions=functions,
                                     calibration_rows=calibration_subsets[name].rows)
               for name in SUBSET_ORDER}
    summary = {
        "command": command, "corpus": {"path": str(corpus), "lines": line_count}, "split": split,
        "seed": seed, "bootstrap": resamples, "learned_model": learned_meta, "router_model": router_meta,
        "probes": probes_meta,
        "subsets": results,
        "target": target_verdict(results[MIXED], split),
        "router_target": router_verdict(results[MIXED], split),
        "probe_targets": probe_verdicts(results[MIXED], split),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / SUMMARY_JSON).write_text(json.dumps(summary, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    (out / SUMMARY_MD).write_text(render_markdown(summary), encoding="utf-8")
    plot_escalation_curves(summary, out / CURVES_PNG)
    plot_quality_vs_cost(summary, out / COST_PNG)
    return summary


def _model_meta(directory: Path) -> dict[str, Any]:
    meta = json.loads((directory / "meta.json").read_text())
    return {"path": directory.as_posix(), "created_at": meta.get("created_at"), "embedding_dim": meta.get("embedding_dim"),
            "regressor": meta.get("regressor"), "training_corpus": meta.get("training_corpus"),
            "hidden_state": meta.get("hidden_state"), "code": meta.get("code")}


def evaluation_lines(summary: Mapping[str, Any]) -> list[str]:
    lines = []
    for name in SUBSET_ORDER:
        result = summary["subsets"][name]
        counts = " + ".join(f"{count} {dataset}" for dataset, count in result["counts"].items())
        head = f"{name}: n={result['n']} ({counts})"
        if result["n"] == 0 or result["reason"]:
            lines.append(f"{head}: {result['reason']}")
            continue
        lines.append(f"{head}: quality edge {result['edge_quality']:.3f}, cloud {result['cloud_quality']:.3f}, "
                     f"oracle {result['oracle_quality']:.3f}")
        for scorer in result["scorers"]:
            lines.append(f"  {scorer['scorer']:<12} " + "  ".join(
                f"{key.upper().replace('_', ' ')} {_with_interval(scorer, key)}" for key in METRIC_KEYS))
    return (lines + [summary["target"]["text"]] + ([summary["router_target"]["text"]]
                                                   if summary.get("router_target") else [])
            + [verdict["text"] for verdict in summary.get("probe_targets") or ()])


# ================================================================ command line


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.arbitration", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="the compact corpus from a labelling run's results")
    export.add_argument("--results", type=Path, default=Path("bench/results/corpus"),
                        help=f"the run's directory or its {RESULTS_FILE}")
    export.add_argument("--out", type=Path, default=Path("bench/corpus/arbitration.jsonl"))
    export.add_argument("--data", action="append", default=[], metavar="DATASET:PATH",
                        help="where a data set's file is, when not in ../shared (e.g. squad_passage:dev.json)")
    evaluate = commands.add_parser("evaluate", help="escalation curves, APGR and CPT per scorer")
    evaluate.add_argument("--corpus", type=Path, default=Path("bench/corpus/arbitration.jsonl"))
    evaluate.add_argument("--out", type=Path, default=Path("bench/results/arbitration"))
    evaluate.add_argument("--split", choices=("test", "train", "all"), default="test")
    evaluate.add_argument("--bootstrap", type=int, default=1000, help="resamples for the intervals")
    evaluate.add_argument("--seed", type=int, default=0, help="draws the mixed subset and the resamples")
    evaluate.add_argument("--learned", type=Path, default=None, metavar="MODEL_DIR",
                          help="also score with this learned deferral model (hybrid-router train-arbiter's vNNNN)")
    evaluate.add_argument("--router", type=Path, default=None, metavar="MODEL_DIR",
                          help="also score PRE_ARBITRATION's trained router (hybrid-router train-router's vNNNN)")
    evaluate.add_argument("--probe", type=Path, default=None, metavar="MODEL_DIR",
                          help="also score POST's draft probe (hybrid-router train-probe --at draft); needs --states")
    evaluate.add_argument("--prefill-probe", type=Path, default=None, metavar="MODEL_DIR",
                          help="also score PRE after the prefill (train-probe --at prefill); needs --states")
    evaluate.add_argument("--states", type=Path, default=None, metavar="NPZ",
                          help="the corpus items' hidden states (python -m bench.hidden_states)")
    evaluate.add_argument("--auto-bands", default=None, metavar="CLOUD_BELOW,EDGE_ABOVE",
                          help="with both probes: also score AUTO with these prefill-score bands")
    evaluate.add_argument("--model-cache", type=Path, default=Path("~/.cache/hybrid-router/models"),
                          help="where the text encoder is, for a model trained with the embedding")
    return parser.parse_args(argv)


def probe_inputs(args: argparse.Namespace) -> Optional[ProbeInputs]:
    if args.probe is None and args.prefill_probe is None:
        if args.states is not None or args.auto_bands is not None:
            raise CorpusError("--states and --auto-bands go with --probe and/or --prefill-probe")
        return None
    if args.states is None:
        raise CorpusError("the probes read the corpus items' hidden states: give --states (python -m bench.hidden_states)")
    bands = None
    if args.auto_bands is not None:
        if args.probe is None or args.prefill_probe is None:
            raise CorpusError("--auto-bands needs both --probe and --prefill-probe")
        try:
            cloud_below, edge_above = (float(part) for part in args.auto_bands.split(","))
        except ValueError:
            raise CorpusError(f"--auto-bands takes CLOUD_BELOW,EDGE_ABOVE, got {args.auto_bands!r}") from None
        bands = (cloud_below, edge_above)
    return ProbeInputs(states=args.states, draft=args.probe, prefill=args.prefill_probe, auto_bands=bands)


def dataset_loader(specs: Sequence[str]) -> Callable[[str], list[BenchItem]]:
    """load_dataset, with the files given by --data in place of the shared ones."""
    if any(":" not in spec for spec in specs):
        raise CorpusError(f"--data takes DATASET:PATH, got {[spec for spec in specs if ':' not in spec]}")
    paths = dict(spec.split(":", 1) for spec in specs)
    return lambda name: load_dataset(f"{name}:{paths[name]}" if name in paths else name)


def main(argv: Optional[Sequence[str]] = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(arguments)
    try:
        if args.command == "export":
            report = export_corpus(args.results, args.out, load=dataset_loader(args.data))
            print("\n".join(export_lines(report, args.out)))
        else:
            if args.bootstrap < 1:
                raise CorpusError("--bootstrap must be at least 1")
            summary = evaluate_corpus(args.corpus, args.out, split=args.split, resamples=args.bootstrap,
                                      seed=args.seed, command=shlex.join(["python", "-m", "bench.arbitration",
                                                                          *arguments]),
                                      learned=args.learned, router=args.router, probes=probe_inputs(args),
                                      model_cache=args.model_cache.expanduser())
            print("\n".join(evaluation_lines(summary)))
            print(f"wrote {args.out / SUMMARY_JSON}, {SUMMARY_MD}, {CURVES_PNG}, {COST_PNG}")
    except (CorpusError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
