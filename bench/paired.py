"""Two bench runs over the same items, compared item by item: `python -m bench.paired`.

    python -m bench.paired --base bench/results/finetune/maths-v1/base \
        --other bench/results/finetune/maths-v1/adapter --out bench/results/finetune/maths-v1/paired.md

For each data set and mode both runs answered, it pairs the records of the same item and reports each run's
accuracy (exact match for text, the right number for maths) and mean F1 (text only), the difference with a
paired bootstrap interval (items resampled together, so what both runs share cancels), and how many items
the other run got better, worse or the same. Items either run lost to an error, or answered by one run only,
are counted as unpaired and left out: a difference is only measured where both runs answered. Two runs that
asked different questions under the same item id are refused (MismatchedRunsError), and so is a data set
that mixes text and maths scoring in one mode. Verdicts are the ones the runs stored: run
`python -m bench --report-only --rescore` on a folder first if its scorer has changed since.

This is how an adapter is judged against the base edge on its target task and on the others (forgetting).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from bench.runner import RESULTS_FILE, latest_records, load_records
from bench.summary import BOOTSTRAP_RESAMPLES, CONFIDENCE


@dataclass(frozen=True)
class PairedDifference:
    """One metric on the paired items: each run's mean, the other's minus the base's, and its interval."""
    base: float
    other: float
    difference: float
    low: float
    high: float


@dataclass(frozen=True)
class PairedRow:
    dataset: str
    mode: str
    n: int
    unpaired: int  # items one run answered and the other did not (or lost to an error)
    accuracy: PairedDifference
    f1: Optional[PairedDifference]  # text scoring only
    better: int
    worse: int
    same: int


class MismatchedRunsError(ValueError):
    """The two runs cannot be paired: the same item id asked another question, or scoring is mixed."""


def _quality(record: Mapping[str, Any]) -> float:
    """The item's graded quality: F1 where the item is scored as text, else 1/0 correctness."""
    return float(record["f1"]) if record.get("f1") is not None else float(bool(record.get("correct")))


def _by_item(records: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str, str], Mapping[str, Any]]:
    """Each item's latest record, errors included."""
    return {(r["dataset"], r["mode"], r["item_id"]): r for r in latest_records(records)}


def _same_item(key: tuple[str, str, str], base: Mapping[str, Any], other: Mapping[str, Any]) -> None:
    for field in ("question", "gold"):
        if base.get(field) != other.get(field):
            raise MismatchedRunsError(f"{key[0]} item {key[2]} has another {field} in each run: they did not ask "
                                      "the same items (a subset file without ids numbers its lines anew)")


def paired_difference(base: np.ndarray, other: np.ndarray, *, seed: int,
                      resamples: int = BOOTSTRAP_RESAMPLES) -> PairedDifference:
    """The mean of `other - base` with a percentile bootstrap interval that resamples the items."""
    if len(base) != len(other) or len(base) == 0:
        raise ValueError("paired metrics need the same, non-zero number of items on both sides")
    rng = np.random.default_rng(seed)
    delta = other - base
    draws = rng.integers(0, len(delta), size=(resamples, len(delta)))
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(delta[draws].mean(axis=1), [tail, 100 - tail])
    return PairedDifference(base=float(base.mean()), other=float(other.mean()), difference=float(delta.mean()),
                            low=float(low), high=float(high))


def compare(base_records: Sequence[Mapping[str, Any]], other_records: Sequence[Mapping[str, Any]], *,
            seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES) -> list[PairedRow]:
    base, other = _by_item(base_records), _by_item(other_records)
    rows = []
    for dataset, mode in sorted({key[:2] for key in base} | {key[:2] for key in other}):
        seen = {k for k in base.keys() | other.keys() if k[:2] == (dataset, mode)}
        keys = sorted(k for k in seen & base.keys() & other.keys()
                      if base[k].get("error") is None and other[k].get("error") is None)
        for key in keys:
            _same_item(key, base[key], other[key])
        if not keys:
            continue
        unpaired = len(seen) - len(keys)
        quality_base = np.array([_quality(base[k]) for k in keys])
        quality_other = np.array([_quality(other[k]) for k in keys])
        correct_base = np.array([float(bool(base[k].get("correct"))) for k in keys])
        correct_other = np.array([float(bool(other[k].get("correct"))) for k in keys])
        scored_as_text = {base[k].get("f1") is not None and other[k].get("f1") is not None for k in keys}
        if len(scored_as_text) > 1:
            raise MismatchedRunsError(f"{dataset} in {mode} mixes text and maths scoring: compare them apart")
        text = scored_as_text == {True}
        rows.append(PairedRow(
            dataset=dataset, mode=mode, n=len(keys), unpaired=unpaired,
            accuracy=paired_difference(correct_base, correct_other, seed=seed, resamples=resamples),
            f1=paired_difference(quality_base, quality_other, seed=seed, resamples=resamples) if text else None,
            better=int((quality_other > quality_base).sum()), worse=int((quality_other < quality_base).sum()),
            same=int((quality_other == quality_base).sum())))
    return rows


def _cell(metric: PairedDifference) -> str:
    return (f"{metric.base:.3f} | {metric.other:.3f} | {metric.difference:+.3f} "
            f"[{metric.low:+.3f}, {metric.high:+.3f}]")


def render(rows: Sequence[PairedRow], base_label: str, other_label: str) -> str:
    header = (f"| data set | mode | paired items | accuracy: {base_label} | {other_label} | difference [95% CI] "
              f"| F1: {base_label} | {other_label} | difference [95% CI] | better / worse / same | unpaired |")
    lines = [header, "|" + " --- |" * 11]
    for row in rows:
        f1 = _cell(row.f1) if row.f1 else "– | – | –"
        lines.append(f"| {row.dataset} | {row.mode} | {row.n} | {_cell(row.accuracy)} | {f1} "
                     f"| {row.better} / {row.worse} / {row.same} | {row.unpaired} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.paired", description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="a bench --out folder (or its results.jsonl)")
    parser.add_argument("--other", type=Path, required=True, help="the run compared with it")
    parser.add_argument("--base-label", default="base")
    parser.add_argument("--other-label", default="other")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resamples", type=int, default=BOOTSTRAP_RESAMPLES)
    parser.add_argument("--out", type=Path, help="write the table here too")
    args = parser.parse_args(argv)
    runs = []
    for path in (args.base, args.other):
        results = path / RESULTS_FILE if path.is_dir() else path
        if not results.exists():
            parser.error(f"no bench results at {results}")
        runs.append(load_records(results))
    try:
        rows = compare(runs[0], runs[1], seed=args.seed, resamples=args.resamples)
    except MismatchedRunsError as exc:
        parser.error(str(exc))
    if not rows:
        parser.error("the two runs share no answered item")
    compared = {(row.dataset, row.mode) for row in rows}
    for dataset, mode in sorted({(r["dataset"], r["mode"]) for run in runs for r in run} - compared):
        print(f"{dataset} in {mode}: no item both runs answered, left out", file=sys.stderr)
    table = render(rows, args.base_label, args.other_label)
    print(table, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
