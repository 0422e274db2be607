"""PRE_ARBITRATION's router retrained from the device's own ledger, before and after (issue 17).

    .venv/bin/python -m bench.routing_ledger [--ledger bench/results/corpus/ledger.db.gz] [--first 0.5]

The labelling daemon (bench/corpus/labelling.toml) kept a ledger of the requests the bench sent it,
each with the bench's reference signals on the edge's and the cloud's answers: the traffic a device
would have logged. This script retrains the router from those ledger rows, as `hybrid-router
train-router --ledger` reads them (router/core/learning/deferral.py), at two moments of that traffic:
after its first `--first` share of rows, in the order they were written, and after all of them. The
ledger was switched on while GSM8K was being labelled, and the SQuAD items labelled after that went
through it too: so the first stage has seen mostly maths, the second reading as well. It scores the default rule (a fresh install) and both
retrained routers on the labelled corpus's mixed test split, and writes bench/results/routing_ledger.json
and .md.

The labelling run's ledger is committed compressed (bench/results/corpus/ledger.db.gz, a SQLite backup taken
when the corpus was complete), so this runs on a fresh clone; a `.gz` ledger is unpacked into the work
directory, a plain one is read where it is.

The ledger and the corpus hold the same requests, so a ledger row whose request is a corpus test item
would be trained on and then scored: such rows are dropped before training, and counted.
"""
from __future__ import annotations

import argparse
import datetime
import gzip
import json
import shutil
import sys
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from bench.arbitration import (MIXED, ORACLE, PRE_ROUTER, PRE_RULE, RANDOM, SCORE_FUNCTIONS, SUBSET_ORDER,
                               build_subsets, evaluate_subset, load_corpus, router_score_functions, split_rows)
from bench.retrieval_tuning import machine

RESULTS = Path(__file__).resolve().parent / "results"
METRICS = ("apgr", "cpt_50", "cpt_80")


def ledger_training_rows(ledger: Path, held_out_texts: set[str]) -> tuple[list[Any], dict[str, int]]:
    """The ledger's router training rows in the order they were written, less those whose request is
    a held-out corpus item; and the counts."""
    from router.core.learning.deferral import deferral_rows

    rows, skipped = deferral_rows(ledger, need_features=())
    kept = [row for row in rows if row.text not in held_out_texts]
    return kept, {"ledger_rows": len(rows), "dropped_held_out": len(rows) - len(kept),
                  **{f"skipped_{reason}": count for reason, count in sorted(skipped.items())}}


def readable_ledger(ledger: Path, work_dir: Path) -> Path:
    """The ledger as a SQLite file: a `.gz` one unpacked into `work_dir`."""
    if not ledger.is_file():
        raise SystemExit(f"{ledger}: no such ledger (the labelling run's is bench/results/corpus/ledger.db.gz)")
    if ledger.suffix != ".gz":
        return ledger
    unpacked = work_dir / ledger.stem
    work_dir.mkdir(parents=True, exist_ok=True)
    with gzip.open(ledger, "rb") as packed, open(unpacked, "wb") as out:
        shutil.copyfileobj(packed, out)
    return unpacked


def train_stage(rows: Sequence[Any], out: Path, *, model_cache: Path, provenance: Mapping[str, Any]) -> Path:
    """A router trained as `hybrid-router train-router` trains one: features and the embedding,
    components and alpha by cross-validation."""
    from edge.catalogue import ModelCache
    from edge.encoder import ENCODER_MODEL, TextEncoder
    from router.core.routing.training import train_router

    encoder = TextEncoder.from_cache(ModelCache(model_cache))
    return train_router(rows, out, provenance=provenance, encode=lambda text: encoder.encode([text])[0],
                        embedding_model=ENCODER_MODEL)


def stage_scores(subsets: Mapping[str, Any], model_dir: Optional[Path], *, model_cache: Path, resamples: int,
                 seed: int) -> dict[str, dict[str, Any]]:
    """Per subset, the pre-router's metrics (the default rule's when `model_dir` is None)."""
    oracle = next(f for f in SCORE_FUNCTIONS if f.name == ORACLE)
    wanted = PRE_ROUTER if model_dir is not None else PRE_RULE
    result = {}
    for name in SUBSET_ORDER:
        subset = subsets[name]
        functions = tuple(f for f in router_score_functions(subset.rows, model_dir, model_cache=model_cache)
                          if f.name == wanted) + (oracle,)
        evaluated = evaluate_subset(subset, resamples=resamples, seed=seed, functions=functions)
        by_name = {s["scorer"]: s for s in evaluated["scorers"]}
        result[name] = {"n": evaluated["n"], **{key: by_name[wanted][key] for key in METRICS},
                        **{f"{key}_ci": by_name[wanted][f"{key}_ci"] for key in METRICS},
                        "oracle_cpt_50": by_name[ORACLE]["cpt_50"], "random_cpt_50": by_name[RANDOM]["cpt_50"]}
    return result


def _cell(result: Mapping[str, Any], key: str) -> str:
    value, interval = result[key], result[f"{key}_ci"]
    if value is None:
        return "—"
    return f"{value:.3f}" + (f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else "")


def render(report: Mapping[str, Any]) -> str:
    counts = report["counts"]
    lines = [
        "# PRE_ARBITRATION's router retrained from the ledger: before and after", "",
        f"- command: `{report['command']}` on {report['started_at']}",
        f"- machine: {report['machine']}",
        f"- ledger: `{report['ledger']}`: {counts['ledger_rows']} training rows (answered POST_ARBITRATION "
        f"requests with both answers labelled by the bench's reference signals); {counts['dropped_held_out']} "
        "dropped because their request is a corpus test item (they are what is scored)",
        f"- scored on: `{report['corpus']}`, {report['split']} split, the seeded mixed subset and each task; "
        f"{report['bootstrap']} bootstrap resamples, 95% intervals",
        "- stages: the default rule (a fresh install, no router trained); a router retrained from the "
        f"first {report['first']:.0%} of the ledger's rows in the order they were written; one retrained from "
        "all of them. Each retrain is `train-router`'s: features plus the request's embedding, components "
        "and alpha by cross-validation, fitted on the rows' own train side (about 3/4, by a hash of the "
        "request id)", "",
    ]
    for name in SUBSET_ORDER:
        first = report["stages"][0]["scores"][name]
        lines += [f"### {name} (n={first['n']}; random CPT(50%) {first['random_cpt_50']}, oracle "
                  f"{first['oracle_cpt_50']:.3f})" if first["oracle_cpt_50"] is not None else f"### {name}", "",
                  "| stage | ledger rows given to train-router (GSM8K / SQuAD) | router | APGR | CPT(50%) | CPT(80%) |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for stage in report["stages"]:
            scores = stage["scores"][name]
            trained = stage.get("trained_rows")
            shown = "—" if trained is None else f"{trained['total']} ({trained['gsm8k']} / {trained['squad']})"
            lines.append(f"| {stage['name']} | {shown} | {stage['router']} | {_cell(scores, 'apgr')} | "
                         f"{_cell(scores, 'cpt_50')} | {_cell(scores, 'cpt_80')} |")
        lines.append("")
    lines += [f"Reproduce: `{report['command']}`", ""]
    return "\n".join(lines)


def _task_counts(rows: Sequence[Any]) -> dict[str, int]:
    has_passage = sum(1 for row in rows if "Passage:" in row.text)  # bench/datasets.py's reading prompts
    return {"total": len(rows), "squad": has_passage, "gsm8k": len(rows) - has_passage}


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    corpus_rows, _ = load_corpus(args.corpus)
    held_out = {row["text"] for row in corpus_rows if row["split"] != "train" and row.get("text")}
    if not 0 < args.first < 1:
        raise SystemExit("--first must be a share between 0 and 1")
    if args.work_dir.exists():
        shutil.rmtree(args.work_dir)  # each run's versions start at v0001
    rows, counts = ledger_training_rows(readable_ledger(args.ledger, args.work_dir), held_out)
    scored = split_rows(corpus_rows, args.split)
    subsets = build_subsets(scored, seed=args.seed)
    model_cache = args.model_cache.expanduser()
    stages = [{"name": "before: fresh install", "router": "default rule", "trained_rows": None,
               "scores": stage_scores(subsets, None, model_cache=model_cache, resamples=args.bootstrap,
                                      seed=args.seed)}]
    cut = int(round(args.first * len(rows)))
    for name, folder, part in ((f"after the first {args.first:.0%} of the traffic", "first", rows[:cut]),
                               ("after all of it", "all", rows)):
        directory = train_stage(part, args.work_dir / folder, model_cache=model_cache,
                                provenance={"path": str(args.ledger), "rows": len(part)})
        meta = json.loads((directory / "meta.json").read_text())
        stages.append({"name": name, "router": f"{folder}/{directory.name}: {meta['regressor'].split(';')[0]}",
                       "trained_rows": _task_counts(part), "model_dir": str(directory),
                       "training_metrics": meta["metrics"],
                       "scores": stage_scores(subsets, directory, model_cache=model_cache,
                                              resamples=args.bootstrap, seed=args.seed)})
    return {"command": command, "started_at": args.started_at, "machine": ", ".join(f"{k} {v}" for k, v in machine().items()),
            "ledger": str(args.ledger), "corpus": str(args.corpus), "split": args.split, "seed": args.seed,
            "bootstrap": args.bootstrap, "first": args.first, "counts": counts, "stages": stages}


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.routing_ledger", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ledger", type=Path, default=Path("bench/results/corpus/ledger.db.gz"),
                        help="the labelling run's ledger: a SQLite file, or one compressed with gzip")
    parser.add_argument("--corpus", type=Path, default=Path("bench/corpus/arbitration.jsonl"))
    parser.add_argument("--split", choices=("test",), default="test")
    parser.add_argument("--first", type=float, default=0.5, help="the share of ledger rows of the middle stage")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, default=Path("bench/out/routing-ledger"),
                        help="where the retrained routers are written (emptied first)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--model-cache", type=Path, default=Path("~/.cache/hybrid-router/models"))
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(arguments)
    args.started_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    report = run(args, " ".join(["python -m bench.routing_ledger", *arguments]))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "routing_ledger.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    (args.out / "routing_ledger.md").write_text(render(report), encoding="utf-8")
    print(render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
