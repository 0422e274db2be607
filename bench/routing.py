"""PRE_ARBITRATION in the daemon: how long the router takes to decide, and what cloud share the
target_share threshold gives, on the labelled corpus's test-split requests.

    .venv/bin/python -m bench.routing [--router models/router/v0001] [--share 0.3] [--limit 200]

Starts a daemon on the embedded default (with the router given, else the default rule), sends each
test-split request of bench/corpus/arbitration.jsonl as PRE_ARBITRATION with max_tokens = 1 (the
decision is what is measured, not the answer), and reads `decide_ms` from every decision: the time the
router took inside the daemon, request features and embedding included. Writes
bench/results/routing.json and routing.md. Target: p50 <= 5 ms.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from router.client import RouterClient
from router.doors.launcher import LocalDaemon
from router.domain.jsonl import split_lines
from router.domain.types import Mode
from bench.portable import shown_command, shown_path

RESULTS = Path(__file__).resolve().parent / "results"
CORPUS = Path(__file__).resolve().parent / "corpus" / "arbitration.jsonl"
DECIDE_TARGET_MS = 5.0


def held_out_requests(corpus: Path, limit: int, seed: int) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in split_lines(corpus.read_text(encoding="utf-8")) if line.strip()]
    rows = [row for row in rows if row["split"] == "test" and row.get("text")]
    order = np.random.default_rng(seed).permutation(len(rows))  # both tasks mixed, as traffic comes
    return [rows[i] for i in order[:limit]]


def summarize(decisions: Sequence[dict[str, Any]], *, share: float, min_samples: int) -> dict[str, Any]:
    """decide_ms percentiles, and the cloud share once the threshold is calibrated (the first
    min_samples decisions use the fixed threshold)."""
    decide = np.asarray([d["decide_ms"] for d in decisions], dtype=float)
    calibrated = [d["escalated"] for d in decisions[min_samples:]]
    return {
        "requests": len(decisions),
        "decide_ms": {"p50": float(np.percentile(decide, 50)), "p90": float(np.percentile(decide, 90)),
                      "p99": float(np.percentile(decide, 99)), "max": float(decide.max())},
        "decide_target_ms": DECIDE_TARGET_MS,
        "decide_target_met": bool(np.percentile(decide, 50) <= DECIDE_TARGET_MS),
        "requested_cloud_share": share,
        "calibrated_requests": len(calibrated),
        "cloud_share_after_calibration": float(np.mean(calibrated)) if calibrated else None,
        "cloud_share_all": float(np.mean([d["escalated"] for d in decisions])),
        "by_dataset": {name: float(np.mean([d["escalated"] for d in decisions if d["dataset"] == name]))
                       for name in sorted({d["dataset"] for d in decisions})},
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    requests = held_out_requests(args.corpus, args.limit, args.seed)
    if not requests:
        raise SystemExit(f"{args.corpus} has no test-split lines with text: export the corpus again")
    env = dict(os.environ, HYBRID_ROUTER_LEDGER__ENABLED="false", HYBRID_ROUTER_ROUTING__THRESHOLD="target_share",
               HYBRID_ROUTER_ROUTING__TARGET_CLOUD_SHARE=str(args.share),
               HYBRID_ROUTER_ROUTING__MIN_SAMPLES=str(args.min_samples))
    if args.router is not None:
        env["HYBRID_ROUTER_ROUTING__MODEL_DIR"] = str(args.router.resolve())
    decisions = []
    with LocalDaemon(env=env) as daemon, daemon.client(timeout_s=600) as client:
        info = client.info()
        for row in requests:
            result = client.generate(prompt=row["text"], mode=Mode.PRE_ARBITRATION, max_tokens=1)
            decisions.append({"dataset": row["dataset"], "item_id": row["item_id"],
                              "decide_ms": result.decision.features["decide_ms"],
                              "escalated": result.decision.escalated, "score": result.decision.score,
                              "scorer": result.decision.scorer})
    summary = summarize(decisions, share=args.share, min_samples=args.min_samples)
    summary.update(router=decisions[0]["scorer"], corpus=shown_path(args.corpus), seed=args.seed,
                   command=" ".join(["python", "-m", "bench.routing", *shown_command(sys.argv[1:])]),
                   hardware=info.hardware, packages=dict(info.packages))
    return summary


def markdown(summary: dict[str, Any]) -> str:
    d = summary["decide_ms"]
    return "\n".join([
        "# PRE_ARBITRATION in the daemon: decision time and calibrated cloud share", "",
        f"- command: `{summary['command']}`",
        f"- machine: {summary['hardware']}; llama-cpp-python {summary['packages'].get('llama-cpp-python')}, "
        f"onnxruntime via the router's learned model",
        f"- router: {summary['router']}; {summary['requests']} test-split requests of `{summary['corpus']}`, "
        f"shuffled with seed {summary['seed']}, max_tokens 1", "",
        f"| decide p50 | p90 | p99 | max | target p50 <= {summary['decide_target_ms']:g} ms |",
        "| --- | --- | --- | --- | --- |",
        f"| {d['p50']:.2f} ms | {d['p90']:.2f} ms | {d['p99']:.2f} ms | {d['max']:.2f} ms | "
        f"{'met' if summary['decide_target_met'] else 'NOT met'} |", "",
        f"Cloud share asked: {summary['requested_cloud_share']:.2f}; after calibration "
        f"({summary['calibrated_requests']} requests): "
        + ("none calibrated (raise --limit above --min-samples)" if summary["cloud_share_after_calibration"] is None
           else f"{summary['cloud_share_after_calibration']:.3f}") + "; "
        f"by data set: " + ", ".join(f"{k} {v:.3f}" for k, v in summary["by_dataset"].items()), "",
    ])


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--router", type=Path, default=None, help="a train-router version directory")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--share", type=float, default=0.3, help="routing.target_cloud_share")
    parser.add_argument("--min-samples", type=int, default=20)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    summary = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=args.out, delete=False, suffix=".tmp") as tmp:
        json.dump(summary, tmp, indent=1)
    os.replace(tmp.name, args.out / "routing.json")
    (args.out / "routing.md").write_text(markdown(summary))
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
