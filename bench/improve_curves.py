"""POST_ARBITRATION's escalation curves before and after the edge learns from the cloud.

The labelled corpus (`bench/corpus/arbitration.jsonl`) holds, for each item, the base edge's answer, the
cloud's, both graded, and the features the scorers read. After `improve` installs an adapter only the edge
side changes: the same prompts reach the same cloud. So the edge side of the mixed test split (the items
`bench.arbitration evaluate` draws: as many GSM8K problems as SQuAD questions with their passage) is asked
again of the edge with the adapter, and the cloud side is the corpus's.

    # 1. the items, as data files the bench reads (their ids are the corpus's)
    python -m bench.improve_curves items --out-dir bench/out/improve-items
    # 2. the edge with the adapter answers them; a cascade that keeps every answer records the scorers'
    #    features and never asks the cloud (bench/results/finetune/routers/adapter.toml)
    python -m bench --config bench/results/finetune/routers/adapter.toml \
        --dataset gsm8k:bench/out/improve-items/gsm8k.jsonl \
        --dataset squad_passage:bench/out/improve-items/squad_passage.json \
        --modes POST_ARBITRATION --out bench/out/improve-after
    # 3. both curves, one plot
    python -m bench.improve_curves compare --after bench/out/improve-after --out bench/results/finetune/routers

Compared per scorer that reads the draft alone (`logprob`, `task`): the cloud share at which the cascade's mean
quality reaches the cloud's own (CPT(100%): every request answered as well, on average, as if the cloud
answered it), with a paired bootstrap interval of the difference (the items resampled together for both
curves). Scorers that need more edge calls (self-consistency samples, verification) or the edge's hidden
states (the probes: stale on the new edge until retrained) are not asked again; the base edge's best, the
shipped draft probe, is drawn for reference when `--probe` and `--states` are given.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench.arbitration import (CONFIDENCE, MIXED, CorpusError, Row, ScoreFunction, build_subsets, costs_by_part,
                               cost_to_reach, escalation_curve, graded_quality, load_corpus, percentile_interval,
                               split_rows, text_features)
from bench.datasets import DEFAULT_PATHS, GSM8K, SQUAD_PASSAGE, load_dataset
from bench.portable import shown_command, shown_path
from bench.runner import RESULTS_FILE, latest_records, load_records
from bench.summary import BOOTSTRAP_RESAMPLES
from router.core.arbiters.scorers import logprob_score, task_score_from_features

# PGR 1: the cascade's mean quality equals the cloud's (less a rounding error: F1s summed in another order)
MATCH_CLOUD = 1.0 - 1e-9
REPORTED_SHARES = (0.1, 0.3, 0.5)  # cloud shares at which both curves' qualities are tabled
DRAFT_SCORERS = (
    ScoreFunction("logprob", lambda row: logprob_score(row["features"])),
    ScoreFunction("task", lambda row: task_score_from_features(row["features"])),
)
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
CURVES_PNG = "curves.png"


class ImproveCurvesError(ValueError):
    """The after run cannot be paired with the corpus (an item missing, unscored, or asked differently)."""


# ================================================================ the items


def mixed_test_rows(corpus: Sequence[Row], *, seed: int) -> list[Row]:
    """The mixed test subset exactly as `bench.arbitration evaluate --seed SEED` draws it."""
    return build_subsets(split_rows(corpus, "test"), seed=seed)[MIXED].rows


def write_items(rows: Sequence[Row], out_dir: Path, *, gsm8k_path: Path, squad_path: Path) -> dict[str, Path]:
    """The rows' items as the data files the bench reads, cut from the shared data with their ids kept:
    GSM8K JSONL with `id`, and SQuAD JSON holding only the chosen questions under their articles."""
    wanted = {(row["dataset"], row["item_id"]) for row in rows}
    out_dir.mkdir(parents=True, exist_ok=True)
    gsm8k_out = out_dir / "gsm8k.jsonl"
    found = 0
    with open(gsm8k_path, encoding="utf-8") as source, open(gsm8k_out, "w", encoding="utf-8") as out:
        for line_number, line in enumerate(source, start=1):
            if not line.strip():
                continue
            record = json.loads(line)
            item_id = record.get("id", f"gsm8k-{line_number}")  # as load_gsm8k names it
            if (GSM8K, item_id) in wanted:
                out.write(json.dumps({"id": item_id, "question": record["question"], "answer": record["answer"]},
                                     ensure_ascii=False) + "\n")
                found += 1
    squad = json.loads(squad_path.read_text(encoding="utf-8"))
    articles = []
    for article in squad["data"]:
        paragraphs = []
        for paragraph in article["paragraphs"]:
            qas = [qa for qa in paragraph["qas"] if (SQUAD_PASSAGE, qa["id"]) in wanted]
            if qas:
                paragraphs.append({"context": paragraph["context"], "qas": qas})
                found += len(qas)
        if paragraphs:
            articles.append({"title": article.get("title"), "paragraphs": paragraphs})
    squad_out = out_dir / "squad_passage.json"
    squad_out.write_text(json.dumps({"version": squad.get("version", "1.1"), "data": articles}, ensure_ascii=False),
                         encoding="utf-8")
    if found != len(wanted):
        raise ImproveCurvesError(f"found {found} of the {len(wanted)} items in {gsm8k_path} and {squad_path}: "
                                 "is the corpus from other data files?")
    return {GSM8K: gsm8k_out, SQUAD_PASSAGE: squad_out}


# ================================================================ the after rows


def after_rows(before: Sequence[Row], results: Path,
               load: Callable[[str], list[Any]] = load_dataset, specs: Sequence[str] = ()) -> list[Row]:
    """`before` with the edge side replaced by the after run's: its graded answer, the features its
    decision recorded (with those read from the text computed afresh, as the corpus export does) and its
    cost. The cloud side stays the corpus's."""
    records = {(r["dataset"], r["item_id"]): r for r in latest_records(load_records(results / RESULTS_FILE))}
    items = {(item.dataset, item.item_id): item for spec in specs for item in load(spec)}
    rows = []
    for row in before:
        key = (row["dataset"], row["item_id"])
        record = records.get(key)
        if record is None or record.get("error"):
            raise ImproveCurvesError(f"{results}: no answer for {key[0]}/{key[1]}"
                                     + (f" ({record['error']})" if record else ""))
        decision = record.get("decision") or {}
        if not decision.get("features"):
            raise ImproveCurvesError(f"{results}: {key[0]}/{key[1]} recorded no scorer features (run it with "
                                     "POST_ARBITRATION and a scorer that reads the draft)")
        item = items.get(key)
        if item is None:
            raise ImproveCurvesError(f"{key[0]}/{key[1]} is not in the data the after run was asked from")
        scoring = "numeric" if key[0] == GSM8K else "text"
        quality = graded_quality(record, "edge", scoring)
        if quality is None:
            raise ImproveCurvesError(f"{results}: {key[0]}/{key[1]}: the edge's answer has no score")
        costs = costs_by_part(record.get("runs") or ())
        rows.append({**row, "edge_quality": quality, "features": text_features(record, item),
                     "edge_answer_usd": costs["edge_answer_usd"], "edge_answer_s": costs["edge_answer_s"],
                     "edge_tokens": int(record.get("edge_tokens") or 0)})
    return rows


# ================================================================ the comparison


@dataclass(frozen=True)
class CurvePair:
    scorer: str
    before: Any  # bench.arbitration.Curve
    after: Any
    share_before: float
    share_after: float
    difference_interval: Optional[list[float]]


def share_to_match_cloud(scores: np.ndarray, edge: np.ndarray, cloud: np.ndarray) -> float:
    """The smallest cloud share at which the cascade's mean quality reaches the cloud's (1.0: only all of it)."""
    curve = escalation_curve(scores, edge, cloud)
    if curve.pgrs is None:  # the edge is as good as the cloud already: nothing to escalate
        return 0.0
    return cost_to_reach(curve.shares, curve.pgrs, MATCH_CLOUD)


def quality_at(curve: Any, share: float) -> float:
    """The cascade's mean quality at `share` along the piecewise-linear curve (a router mixing two
    neighbouring thresholds at random traces the straight line between them)."""
    return float(np.interp(share, curve.shares, curve.qualities))


def paired_share_interval(before: tuple[np.ndarray, np.ndarray], after: tuple[np.ndarray, np.ndarray],
                          cloud: np.ndarray, *, resamples: int, seed: int) -> list[float]:
    """The percentile interval of share_after - share_before over resamples of the items, drawn together."""
    rng = np.random.default_rng(seed)
    n = len(cloud)
    differences = []
    for _ in range(resamples):
        picked = rng.integers(0, n, size=n)
        differences.append(share_to_match_cloud(after[0][picked], after[1][picked], cloud[picked])
                           - share_to_match_cloud(before[0][picked], before[1][picked], cloud[picked]))
    return percentile_interval(differences)


def compare(before: Sequence[Row], after: Sequence[Row], *, resamples: int, seed: int,
            functions: Sequence[ScoreFunction] = DRAFT_SCORERS) -> list[CurvePair]:
    if [(r["dataset"], r["item_id"]) for r in before] != [(r["dataset"], r["item_id"]) for r in after]:
        raise ImproveCurvesError("before and after must hold the same items in the same order")
    cloud = np.array([float(r["cloud_quality"]) for r in before])
    edge_before = np.array([float(r["edge_quality"]) for r in before])
    edge_after = np.array([float(r["edge_quality"]) for r in after])
    pairs = []
    for function in functions:
        scores_before = np.array([float(function.score(r)) for r in before])
        scores_after = np.array([float(function.score(r)) for r in after])
        pairs.append(CurvePair(
            scorer=function.name,
            before=escalation_curve(scores_before, edge_before, cloud),
            after=escalation_curve(scores_after, edge_after, cloud),
            share_before=share_to_match_cloud(scores_before, edge_before, cloud),
            share_after=share_to_match_cloud(scores_after, edge_after, cloud),
            difference_interval=paired_share_interval((scores_before, edge_before), (scores_after, edge_after),
                                                      cloud, resamples=resamples, seed=seed)))
    return pairs


def quality_interval(values: np.ndarray, *, resamples: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    means = [float(values[rng.integers(0, len(values), size=len(values))].mean()) for _ in range(resamples)]
    return percentile_interval(means)


# ================================================================ the report


def plot(pairs: Sequence[CurvePair], cloud_quality: float, path: Path,
         reference: Optional[tuple[str, Any]] = None) -> Path:
    figure = Figure(figsize=(7.5, 5.0))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot(1, 1, 1)
    colours = ("tab:blue", "tab:orange", "tab:green")
    for colour, pair in zip(colours, pairs):
        ax.plot(pair.before.shares, pair.before.qualities, linestyle="--", color=colour,
                label=f"{pair.scorer}, base edge (matches the cloud at {pair.share_before:.2f})")
        ax.plot(pair.after.shares, pair.after.qualities, linestyle="-", color=colour,
                label=f"{pair.scorer}, edge + adapter (matches the cloud at {pair.share_after:.2f})")
    if reference is not None:
        name, curve = reference
        ax.plot(curve.shares, curve.qualities, linestyle=":", color="tab:gray", label=name)
    ax.axhline(cloud_quality, color="black", linewidth=0.8, label=f"the cloud alone ({cloud_quality:.3f})")
    ax.set_xlabel("cloud share (requests the cloud answers)")
    ax.set_ylabel("mean quality (GSM8K right/wrong, SQuAD token F1)")
    ax.set_title("POST_ARBITRATION on the mixed test split, before and after the adapter")
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path


def render_markdown(summary: Mapping[str, Any]) -> str:
    lines = ["# POST_ARBITRATION before and after the edge learns from the cloud", "",
             f"- command: `{' '.join(summary['command'])}`",
             f"- corpus: `{summary['corpus']}`; after run: `{summary['after']}`",
             f"- items: the mixed test split, n={summary['n']} ({summary['counts']}), seed {summary['seed']}",
             f"- bootstrap: {summary['resamples']} paired resamples of the items, "
             f"{CONFIDENCE:.0%} percentile intervals",
             "- share to match the cloud: the smallest cloud share at which the cascade's mean quality reaches the "
             "cloud's alone (PGR 100%), escalating the lowest scores first", "",
             "| | base edge | edge + adapter |", "|---|---|---|"]
    q = summary["quality"]
    lines.append(f"| edge alone | {q['edge_before']:.3f} {_interval(q['edge_before_ci'])} | "
                 f"{q['edge_after']:.3f} {_interval(q['edge_after_ci'])} |")
    lines.append(f"| cloud alone | {q['cloud']:.3f} | {q['cloud']:.3f} |")
    for dataset, (before, after) in summary["edge_by_dataset"].items():
        lines.append(f"| edge alone, {dataset} only | {before:.3f} | {after:.3f} |")
    for scorer in summary["scorers"]:
        lines.append(f"| {scorer['scorer']}: share to match the cloud | {scorer['share_before']:.3f} | "
                     f"{scorer['share_after']:.3f} (difference {scorer['share_after'] - scorer['share_before']:+.3f} "
                     f"{_interval(scorer['difference_ci'], signed=True)}) |")
        for share, (before, after) in scorer["quality_at"].items():
            lines.append(f"| {scorer['scorer']}: quality at a cloud share of {share} | {before:.3f} | {after:.3f} |")
    if summary.get("reference"):
        ref = summary["reference"]
        lines.append(f"| {ref['name']}: share to match the cloud | {ref['share']:.3f} | stale on the new edge |")
    lines += ["", f"![curves]({CURVES_PNG})", ""]
    return "\n".join(lines)


def _interval(values: Optional[Sequence[float]], *, signed: bool = False) -> str:
    if not values:
        return ""
    form = "{:+.3f}" if signed else "{:.3f}"
    return f"[{form.format(values[0])}, {form.format(values[1])}]"


def reference_curve(before: Sequence[Row], probe: Path, states: Path) -> tuple[str, Any, float]:
    """The shipped draft probe on the base edge (the default scorer before the adapter), from its states."""
    from bench.arbitration import ProbeInputs, probe_score_functions

    function = probe_score_functions(before, ProbeInputs(states=states, draft=probe))[0]
    scores = np.array([float(function.score(r)) for r in before])
    edge = np.array([float(r["edge_quality"]) for r in before])
    cloud = np.array([float(r["cloud_quality"]) for r in before])
    return (f"draft probe {shown_path(probe)}, base edge (the default scorer before)",
            escalation_curve(scores, edge, cloud), share_to_match_cloud(scores, edge, cloud))


def run_compare(args: argparse.Namespace) -> int:
    corpus, _ = load_corpus(args.corpus)
    before = mixed_test_rows(corpus, seed=args.seed)
    specs = [f"{GSM8K}:{args.items / 'gsm8k.jsonl'}", f"{SQUAD_PASSAGE}:{args.items / 'squad_passage.json'}"]
    after = after_rows(before, args.after, specs=specs)
    pairs = compare(before, after, resamples=args.bootstrap, seed=args.seed)
    cloud = np.array([float(r["cloud_quality"]) for r in before])
    edge_before = np.array([float(r["edge_quality"]) for r in before])
    edge_after = np.array([float(r["edge_quality"]) for r in after])
    args.out.mkdir(parents=True, exist_ok=True)
    reference = None
    if args.probe is not None and args.states is not None:
        name, curve, share = reference_curve(before, args.probe, args.states)
        reference = {"name": name, "share": share, "curve": curve}
    counts: dict[str, int] = {}
    for row in before:
        counts[row["dataset"]] = counts.get(row["dataset"], 0) + 1
    summary = {
        "command": shown_command(["python", "-m", "bench.improve_curves", *sys.argv[1:]]),
        "corpus": shown_path(args.corpus), "after": shown_path(args.after), "seed": args.seed,
        "resamples": args.bootstrap, "n": len(before), "counts": counts,
        "quality": {"cloud": float(cloud.mean()),
                    "edge_before": float(edge_before.mean()),
                    "edge_before_ci": quality_interval(edge_before, resamples=args.bootstrap, seed=args.seed),
                    "edge_after": float(edge_after.mean()),
                    "edge_after_ci": quality_interval(edge_after, resamples=args.bootstrap, seed=args.seed)},
        "edge_by_dataset": {dataset: [float(np.mean([r["edge_quality"] for r in rows if r["dataset"] == dataset]))
                                      for rows in (before, after)] for dataset in sorted(counts)},
        "scorers": [{"scorer": p.scorer, "share_before": p.share_before, "share_after": p.share_after,
                     "difference_ci": p.difference_interval,
                     "quality_at": {f"{share:.1f}": [quality_at(p.before, share), quality_at(p.after, share)]
                                    for share in REPORTED_SHARES},
                     "before": {"shares": p.before.shares.tolist(), "qualities": p.before.qualities.tolist()},
                     "after": {"shares": p.after.shares.tolist(), "qualities": p.after.qualities.tolist()}}
                    for p in pairs],
        "reference": None if reference is None else {"name": reference["name"], "share": reference["share"]},
    }
    plot(pairs, float(cloud.mean()), args.out / CURVES_PNG,
         None if reference is None else (reference["name"], reference["curve"]))
    (args.out / SUMMARY_JSON).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (args.out / SUMMARY_MD).write_text(render_markdown(summary), encoding="utf-8")
    print(render_markdown(summary))
    return 0


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.improve_curves", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    items = commands.add_parser("items", help="the mixed test split's items as data files the bench reads")
    items.add_argument("--corpus", type=Path, default=Path("bench/corpus/arbitration.jsonl"))
    items.add_argument("--out-dir", type=Path, default=Path("bench/out/improve-items"))
    items.add_argument("--gsm8k", type=Path, default=None, help="GSM8K JSONL (default: the shared data's)")
    items.add_argument("--squad", type=Path, default=None, help="SQuAD JSON (default: the shared data's)")
    items.add_argument("--seed", type=int, default=0, help="as bench.arbitration evaluate's --seed")
    compare_parser = commands.add_parser("compare", help="both curves from the corpus and the after run")
    compare_parser.add_argument("--corpus", type=Path, default=Path("bench/corpus/arbitration.jsonl"))
    compare_parser.add_argument("--items", type=Path, default=Path("bench/out/improve-items"))
    compare_parser.add_argument("--after", type=Path, required=True, help="the after run's bench folder")
    compare_parser.add_argument("--out", type=Path, default=Path("bench/results/finetune/routers"))
    compare_parser.add_argument("--seed", type=int, default=0)
    compare_parser.add_argument("--bootstrap", type=int, default=BOOTSTRAP_RESAMPLES)
    compare_parser.add_argument("--probe", type=Path, default=None, help="a draft probe drawn for reference")
    compare_parser.add_argument("--states", type=Path, default=None, help="its hidden states (bench.hidden_states)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        if args.command == "items":
            corpus, _ = load_corpus(args.corpus)
            rows = mixed_test_rows(corpus, seed=args.seed)
            written = write_items(rows, args.out_dir, gsm8k_path=args.gsm8k or DEFAULT_PATHS[GSM8K],
                                  squad_path=args.squad or DEFAULT_PATHS[SQUAD_PASSAGE])
            for name, path in written.items():
                print(f"{name}: {shown_path(path)}")
            return 0
        return run_compare(args)
    except (ImproveCurvesError, CorpusError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
