"""Choosing early escalation's threshold from the labelled corpus, offline (no model runs).

    python -m bench.arbitration_early --out bench/results/arbitration_early.md

Early escalation stops the edge when the geometric-mean probability of its last 16 tokens falls below
`arbitration.early_threshold`. The corpus's drafts record, beside the model's features, the lowest such
value and the token at which it first fell below 0.4, 0.5, ... 0.8 (router/core/arbiters/features.py,
`early_features`). For each level this reports, over the items that carry them: how often the stop
fires, how often the edge was wrong when it fired (the stop's precision), how many of those the cloud
then got right, the edge-wrong answers it missed, and where it fires against the answer's length (the
share of the edge's generation that a stop saves).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from router.core.arbiters.features import EARLY_LEVELS, early_feature_name
from router.domain.jsonl import split_lines

Record = Mapping[str, Any]


def early_records(path: Path) -> list[Record]:
    records = [json.loads(line) for line in split_lines(path.read_text(encoding="utf-8")) if line.strip()]
    return [r for r in records if "early_window_min" in ((r.get("decision") or {}).get("features") or {})]


def _quality(record: Record, side: str) -> float:
    """1/0 for numeric answers, F1 for text."""
    correct = record.get(f"{side}_correct")
    f1 = record.get(f"{side}_f1")
    return float(f1) if f1 is not None and record.get("dataset") != "gsm8k" else float(bool(correct))


def level_row(records: Sequence[Record], level: float) -> dict[str, Any]:
    name = early_feature_name(level)
    fired = [r for r in records if r["decision"]["features"][name] > 0]
    missed = [r for r in records if r["decision"]["features"][name] == 0 and _quality(r, "edge") < 0.5]
    wrong = [r for r in fired if _quality(r, "edge") < 0.5]
    fixed = [r for r in wrong if _quality(r, "cloud") >= 0.5]
    saved = [1 - r["decision"]["features"][name] / max(r["decision"]["features"]["completion_tokens"], 1)
             for r in fired]
    return {"level": level, "n": len(records), "fired": len(fired),
            "precision": len(wrong) / len(fired) if fired else None, "cloud_fixes": len(fixed),
            "missed_edge_wrong": len(missed), "stop_token_mean": (
                sum(r["decision"]["features"][name] for r in fired) / len(fired) if fired else None),
            "generation_saved_mean": sum(saved) / len(saved) if saved else None}


def _fmt(value: Optional[float], spec: str) -> str:
    return "–" if value is None else format(value, spec)


def render(rows_by_dataset: Mapping[str, Sequence[Mapping[str, Any]]], source: Path) -> str:
    lines = ["# Early escalation's threshold, from the corpus", "",
             f"`python -m bench.arbitration_early` over `{source}`: the items whose drafts recorded the running "
             "confidence (16-token window). Precision: the share of fired stops where the edge's answer was "
             "wrong. Saved: the mean share of the edge's answer not generated when the stop fired.", ""]
    for dataset, rows in rows_by_dataset.items():
        lines += [f"## {dataset} (n = {rows[0]['n'] if rows else 0})", "",
                  "| early_threshold | fired | precision | cloud then right | edge-wrong missed | stop at token | saved |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['level']:.1f} | {r['fired']} | {_fmt(r['precision'], '.2f')} | {r['cloud_fixes']} | "
                  f"{r['missed_edge_wrong']} | {_fmt(r['stop_token_mean'], '.0f')} | "
                  f"{_fmt(r['generation_saved_mean'], '.0%')} |" for r in rows]
        lines.append("")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.arbitration_early", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path("bench/results/corpus/results.jsonl"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/arbitration_early.md"))
    args = parser.parse_args(argv)
    records = early_records(args.corpus)
    by_dataset: dict[str, list[Record]] = {}
    for record in records:
        by_dataset.setdefault(record["dataset"], []).append(record)
    rows = {dataset: [level_row(items, level) for level in EARLY_LEVELS] for dataset, items in sorted(by_dataset.items())}
    text = render(rows, args.corpus)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
