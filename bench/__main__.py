"""python -m bench: run data sets through the daemon's modes and write results, summary and plots.

    python -m bench --dataset gsm8k --dataset squad --limit 200 --out bench/results/run
    python -m bench --demo                      # the built-in sample, on the embedded default
    python -m bench --target 127.0.0.1:50051 …  # against a daemon that is already running
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional, Sequence

from bench.ingest import ingest
from bench.datasets import PROMPTS, BenchItem, DatasetError, demo_items, load_dataset, sample
from bench.plots import write_plots
from bench.run_meta import RunMetaError, merge_run_meta
from bench.runner import (DEFAULT_MAX_TOKENS, RESULTS_FILE, RunPlan, latest_records, load_records, record_key,
                          refuse_other_questions_under_the_same_ids, rescore, run, write_records)
from bench.summary import write_summary
from router.assembly.grpc_channels import ChannelTrust
from router.client import RouterClient, client_trust
from router.core.provenance import code_provenance
from router.doors.launcher import LocalDaemon
from router.domain.types import Mode


DEMO_SPEC = "demo"  # how run.json names the built-in demo sample among the data sets
QUICK_SPEC = "demo-quick"  # and its first few items of each data set:
# one GSM8K problem (a long numeric answer in every mode is most of the run's time) and three SQuAD questions.
QUICK_ITEMS = {"gsm8k": 1, "squad": 3}
META_FILE = "run.json"  # what the run was, written before the first request, so a partial run can be reported


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", action="append", default=[],
                        help="gsm8k, squad, gsm8k:PATH, squad:PATH or jsonl:PATH (repeatable)")
    parser.add_argument("--demo", action="store_true", help="the built-in sample (8 GSM8K + 24 SQuAD items)")
    parser.add_argument("--quick", action="store_true", help=f"a smoke run: the built-in sample's first "
                        f"{QUICK_ITEMS['gsm8k']} GSM8K and {QUICK_ITEMS['squad']} SQuAD items (what `make run` runs)")
    parser.add_argument("--modes", help="comma-separated (default: every mode the daemon implements)")
    parser.add_argument("--limit", type=int, help="items per data set, drawn with --seed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--max-tokens", type=int,
                        help=f"new-token budget (default: {DEFAULT_MAX_TOKENS['numeric']} for numeric answers, "
                             f"{DEFAULT_MAX_TOKENS['text']} for text)")
    parser.add_argument("--out", type=Path, default=Path("bench/out/latest"))
    parser.add_argument("--target", help="a running daemon (host:port or unix:PATH); default: start one")
    parser.add_argument("--token-file", type=Path, help="with --target: the file holding a token (default: this "
                        "machine's local admin token); an admin's, when --ingest is given")
    parser.add_argument("--ca-file", type=Path, help="with --target: PEM of the CA that signed its certificate (TLS)")
    parser.add_argument("--config", type=Path, help="config file for the daemon the bench starts")
    parser.add_argument("--ingest", action="append", default=[],
                        help="before the run, ingest documents into the daemon's Info service (repeatable): squad "
                             "(SQuAD part A's 913 passages), demo (the demo sample's passages), or PATH[:FORMAT] "
                             "(text, markdown, jsonl, squad). Ids replace, so re-ingesting is safe")
    parser.add_argument("--report-only", action="store_true",
                        help="send nothing: summarise and plot what --out already holds (a partial run too)")
    parser.add_argument("--rescore", action="store_true",
                        help="send nothing: score the stored answers again with the current scorer, rewrite "
                             "results.jsonl, then report")
    args = parser.parse_args(argv)
    if not args.dataset and not args.demo and not args.quick:
        parser.error("give --dataset (repeatable), --demo or --quick")
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    return args


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through `finally`, so the daemon we started is stopped


def _read_meta(meta_path: Path) -> Optional[dict]:
    if not meta_path.exists():
        return None
    try:
        return json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunMetaError(f"{meta_path} is not valid JSON ({exc}); restore it or give a new --out") from exc


def _write_meta(meta_path: Path, meta: dict) -> None:
    partial = meta_path.with_name(meta_path.name + ".tmp")
    partial.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, meta_path)  # a kill leaves the old run.json or the new one, never half of one


def _unique(items: Sequence[BenchItem]) -> list[BenchItem]:
    """--demo with --dataset may draw the same item twice; send each once."""
    return list({(item.dataset, item.item_id): item for item in items}.values())


def _run_against_daemon(args: argparse.Namespace, items: list[BenchItem], chosen_modes: Optional[list[Mode]],
                        previous_meta: Optional[dict], command: str, meta_path: Path) -> dict:
    """Runs what is not done yet against the daemon; returns the run.json it wrote (merged with the earlier one)."""
    refuse_other_questions_under_the_same_ids(items, args.out)  # before a daemon starts or run.json changes
    daemon = None if args.target else LocalDaemon(config=args.config).start()
    try:
        trust = (client_trust(None, args.token_file, args.ca_file, None, None, args.target) if daemon is None
                 else ChannelTrust(token=daemon.token))
        with RouterClient(args.target or daemon.target, token=trust.token, ca_file=trust.ca_file) as client:
            client.wait_ready(timeout_s=600)
            info = client.info()
        ingested = ingest(args.ingest, args.target or daemon.target, trust) if args.ingest else None
        implemented = list(info.implemented_modes)
        missing = [mode.name for mode in chosen_modes or [] if mode not in implemented]
        if missing:
            raise RunMetaError(f"the daemon does not implement {', '.join(missing)} yet; "
                               f"it implements {', '.join(mode.name for mode in implemented)}")
        modes = chosen_modes or implemented
        meta = {
            "command": command, "seed": args.seed, "datasets": _specs(args),
            "modes": [m.name for m in modes], "concurrency": args.concurrency,
            "max_tokens": args.max_tokens or dict(DEFAULT_MAX_TOKENS), "temperature": 0.0,
            "models": {"edge": asdict(info.edge), "cloud": asdict(info.cloud)},
            "hardware": info.hardware, "packages": dict(sorted(info.packages.items())), "prompts": dict(PROMPTS),
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "code": code_provenance(),  # the commit that ran it, and whether the tree had uncommitted changes
        }
        if ingested is not None:
            meta["ingested"] = ingested.report
        if args.dataset:  # the demo sample is fixed: a demo-only run says nothing about the data sets' limit
            meta["limit"] = args.limit
        if previous_meta is not None:
            meta = merge_run_meta(previous_meta, meta)
        args.out.mkdir(parents=True, exist_ok=True)
        _write_meta(meta_path, meta)
        asyncio.run(run(RunPlan(items=items, modes=modes, out_dir=args.out, concurrency=args.concurrency,
                                max_tokens=args.max_tokens, ids_by_text=ingested.ids_by_text if ingested else {}),
                        args.target or daemon.target, trust))
        return meta
    finally:
        if daemon is not None:
            daemon.close()


def _specs(args: argparse.Namespace) -> list[str]:
    return ([DEMO_SPEC] if args.demo else []) + ([QUICK_SPEC] if args.quick else []) + list(args.dataset)


def quick_items() -> list[BenchItem]:
    """The demo sample's first QUICK_ITEMS of each data set, in the sample's order."""
    taken: dict[str, int] = {}
    chosen = []
    for item in demo_items():
        if taken.get(item.dataset, 0) < QUICK_ITEMS.get(item.dataset, 0):
            taken[item.dataset] = taken.get(item.dataset, 0) + 1
            chosen.append(item)
    return chosen


def _items(specs: Sequence[str], *, limit: Optional[int], seed: int) -> list[BenchItem]:
    """The items of data set specs as run.json names them ("demo" is the built-in sample, "demo-quick" its
    first few items of each data set)."""
    items: list[BenchItem] = []
    for spec in specs:
        if spec == DEMO_SPEC:
            items += demo_items()
        elif spec == QUICK_SPEC:
            items += quick_items()
        else:
            items += sample(load_dataset(spec), limit=limit, seed=seed)
    return _unique(items)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    command = shlex.join(["python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)])
    try:
        items = _items(_specs(args), limit=args.limit, seed=args.seed)
        chosen_modes = [Mode.parse(name) for name in args.modes.split(",")] if args.modes else None
    except (DatasetError, OSError, ValueError) as exc:  # a bad file, path, data set kind or mode name
        print(f"bench: {exc}", file=sys.stderr)
        return 2

    meta_path = args.out / META_FILE
    results_path = args.out / RESULTS_FILE
    try:
        previous_meta = _read_meta(meta_path)
        if args.report_only or args.rescore:
            if previous_meta is None:
                raise RunMetaError(f"{args.out} holds no {META_FILE}: nothing was run there to report on")
            meta = previous_meta
            modes = chosen_modes or [Mode.parse(name) for name in meta.get("modes", [])] or [Mode.EDGE_ONLY,
                                                                                            Mode.CLOUD_ONLY]
        else:
            meta = _run_against_daemon(args, items, chosen_modes, previous_meta, command, meta_path)
            # A run that extends a results directory (a new mode, a new data set) reports on all of it, at
            # the largest limit it was run with: the arbitration sweeps need the EDGE_ONLY and CLOUD_ONLY
            # records an earlier run made.
            modes = [Mode.parse(name) for name in meta["modes"]]
            asked = (_specs(args), args.limit if args.dataset else None)
            if (meta["datasets"], meta.get("limit")) != asked:  # the usual case reuses the items loaded above
                items = _items(meta["datasets"], limit=meta.get("limit"), seed=meta.get("seed", 0))
    except RunMetaError as exc:
        print(f"bench: {args.out}: {exc}", file=sys.stderr)
        return 2
    except (DatasetError, OSError, ValueError) as exc:  # a data set of an earlier run is gone or broken
        print(f"bench: {exc}", file=sys.stderr)
        return 2

    if args.rescore:
        everything, changed = rescore(load_records(results_path), items)
        write_records(results_path, everything)
        print(f"bench: rescored {results_path}: {changed} of {len(everything)} records changed", file=sys.stderr)
    wanted = {(item.dataset, item.item_id, mode.name) for item in items for mode in modes}
    stored = [r for r in latest_records(load_records(results_path)) if record_key(r) in wanted]
    records, rescored = rescore(stored, items)
    meta = {**meta, "command": meta.get("command", command), "report_command": command,
            "planned_requests": len(wanted), "recorded_requests": len(records),
            "scores_changed_by_current_scorer": rescored,
            "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    summary = write_summary(records, args.out, meta)
    plots = write_plots(records, summary, args.out)
    print((args.out / "summary.md").read_text(), end="")
    print(f"\nwrote {args.out}/results.jsonl, summary.json, summary.md and {len(plots)} plots", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
