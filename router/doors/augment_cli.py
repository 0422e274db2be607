"""`hybrid-router augment`: the cloud rewrites a training set into new examples (router/core/learning/augment.py).

Every question goes to a running daemon as a CLOUD_ONLY request from the caller's principal, so it is
authorised, priced, budgeted and recorded in the ledger like any other request (metadata
`purpose=augment`). The run is resumable: each (example, variant) pair's outcome is appended to
OUT.progress.jsonl as soon as it is known, with what the cloud wrote and the new example when one was kept
(a refused rewrite stays there, to be read), and OUT is rewritten from that file after each example and at
the end of every run. Rerun the same command after a stop and the pairs already done are
skipped; a pair the daemon refused is asked again. A refusal that concerns one request (too long for the
cloud) is recorded and the run goes on; one that concerns every request (the budget spent, no permission, the
daemon gone, the same refusal five times in a row, an answer the edge wrote in the cloud's place) stops it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Optional

from router.core.learning.augment import DEFAULT_MIN_F1, AugmentInputError, Example, augment, row_key, source_rows
from router.domain.errors import ErrorKind, InvalidRequestError, RouterError
from router.domain.jsonl import cut_torn_tail, read_records, split_lines
from router.domain.types import BackendKind

EXIT_OK, EXIT_ERROR = 0, 1
PROGRESS_SUFFIX = ".progress.jsonl"
REFUSED = "refused: "
MAX_REPEATED_REFUSALS = 5  # the same refusal this many times in a row is the daemon's settings, not a request


def add_parser(commands: "argparse._SubParsersAction[argparse.ArgumentParser]",
               common: argparse.ArgumentParser) -> None:
    from router.doors.client_options import add_client_options

    parser = commands.add_parser(
        "augment", parents=[common], help="have the cloud write new training examples from a training set",
        description="Ask the cloud, through a running daemon, to rewrite each example of an OpenAI chat training "
                    "set (a maths problem retold, a reading question asked another way) and keep the rewrites the "
                    "cloud itself answers right. Train on both files: `finetune --data SET --data OUT`. Resumable.")
    parser.add_argument("--data", type=Path, required=True, help="the training set (OpenAI chat JSONL)")
    parser.add_argument("--out", type=Path, required=True, help="the new examples (OpenAI chat JSONL)")
    parser.add_argument("--variants", type=int, default=1, help="rewrites asked per example (default 1)")
    parser.add_argument("--limit", type=int, help="only the first N examples")
    parser.add_argument("--min-f1", type=float, default=DEFAULT_MIN_F1,
                        help=f"reading: how close the cloud's answer to the new question must be to the old "
                             f"answer (token F1, default {DEFAULT_MIN_F1})")
    parser.add_argument("--target", help="daemon address (default: server.listen)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per request (default 600)")
    add_client_options(parser)
    parser.set_defaults(func=cmd_augment)


def progress_path(out: Path) -> Path:
    return out.with_name(out.name + PROGRESS_SUFFIX)


def latest_outcomes(records: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """The last record of each (example, variant): a refusal retried later is replaced by its retry."""
    return {(record["key"], record["variant"]): record for record in records}


def write_kept(records: list[dict[str, Any]], out: Path) -> int:
    """OUT from the progress records (each example and variant once), written beside and renamed so a reader
    never sees half of it."""
    kept = [record["row"] for record in latest_outcomes(records).values() if record.get("row")]
    partial = out.with_name(out.name + ".tmp")
    with open(partial, "w", encoding="utf-8") as handle:
        for row in kept:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(partial, out)
    return len(kept)


class NotTheCloudError(RouterError):
    """The daemon answered a CLOUD_ONLY request with the edge (the budget's degrade policy, an open breaker,
    the privacy gate): an answer the cloud did not write cannot check a rewrite. The run stops."""

    kind = ErrorKind.PRECONDITION_FAILED


class RepeatedRefusalError(RouterError):
    """The daemon refused several requests in a row for the same reason: its settings refuse them all."""

    kind = ErrorKind.PRECONDITION_FAILED


class CloudAsker:
    """`ask` for the augmenter: one CLOUD_ONLY request per question, its cost and id kept for the record."""

    def __init__(self, generate: Callable[..., Any]) -> None:
        self._generate = generate
        self.usd = 0.0
        self.request_ids: list[str] = []

    def __call__(self, messages: list[dict[str, str]], max_tokens: int, seed: Optional[int]) -> str:
        result = self._generate(messages=messages, mode="CLOUD_ONLY", max_tokens=max_tokens,
                                temperature=0.7 if seed is not None else 0.0, seed=seed,
                                metadata={"purpose": "augment"})
        self.usd += result.cost_usd
        self.request_ids.append(result.request_id)
        if result.served_by != BackendKind.CLOUD or result.decision.degraded:
            raise NotTheCloudError(f"request {result.request_id} was answered by {result.served_by.name.lower()}, "
                                   f"not the cloud ({result.decision.reason or 'degraded'}); an answer the cloud did "
                                   "not write cannot check a rewrite")
        return result.text

    def take(self) -> tuple[float, list[str]]:
        spent, ids = self.usd, self.request_ids
        self.usd, self.request_ids = 0.0, []
        return spent, ids


def run_augment(rows: list[dict[str, Any]], asker: CloudAsker, *, out: Path, variants: int, min_f1: float,
                log: Callable[[str], None], max_repeated_refusals: int = MAX_REPEATED_REFUSALS) -> Counter:
    """Augments every (row, variant) pair without an outcome in OUT's progress yet (a pair the daemon refused
    is asked again); returns the outcomes of this run."""
    progress = progress_path(out)
    latest = latest_outcomes(read_records(progress))  # kept current below, so the file is read once
    done = {pair for pair, record in latest.items() if not str(record["reason"]).startswith(REFUSED)}
    outcomes: Counter = Counter()
    refusals: list[str] = []
    out.parent.mkdir(parents=True, exist_ok=True)
    cut_torn_tail(progress)
    try:
        with open(progress, "a", encoding="utf-8") as handle:
            for index, row in enumerate(rows):
                key = row_key(row)
                kept_any = False
                for variant in range(variants):
                    if (key, variant) in done:
                        continue
                    try:
                        outcome = augment(Example.from_row(row), asker, variant=variant, min_f1=min_f1)
                        reason, kept, rewrite = outcome.reason, outcome.kept, outcome.rewrite
                        refusals.clear()
                    except InvalidRequestError as exc:  # this request only (too long for the cloud): go on
                        reason, kept, rewrite = f"{REFUSED}{exc}", None, ""
                        refusals.append(str(exc))
                    spent, request_ids = asker.take()
                    record = {"key": key, "variant": variant, "source_line": index + 1, "reason": reason,
                              "usd": spent, "request_ids": request_ids, "min_f1": min_f1, "rewrite": rewrite,
                              "row": kept}
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                    handle.flush()
                    latest[(key, variant)] = record
                    done.add((key, variant))
                    outcomes[reason] += 1
                    kept_any = kept_any or kept is not None
                    if len(refusals) >= max_repeated_refusals and len(set(refusals)) == 1:
                        raise RepeatedRefusalError(f"the daemon refused {len(refusals)} requests in a row: "
                                                   f"{refusals[-1]}")
                if kept_any:  # OUT follows the progress example by example: a killed run leaves it current
                    write_kept(list(latest.values()), out)
                log(f"{index + 1}/{len(rows)}: " + ", ".join(f"{r} {n}" for r, n in sorted(outcomes.items())))
    finally:
        write_kept(list(latest.values()), out)
    return outcomes


def cmd_augment(args: argparse.Namespace) -> int:
    from router.client import RouterClient
    from router.doors.cli import _settings
    from router.doors.client_options import client_trust_args

    if args.variants < 1 or (args.limit is not None and args.limit < 1) or not 0.0 <= args.min_f1 <= 1.0:
        print("hybrid-router augment: --variants and --limit must be at least 1, --min-f1 in [0, 1]", file=sys.stderr)
        return EXIT_ERROR
    settings = _settings(args)
    target = args.target or settings.server.listen
    try:
        rows = source_rows(split_lines(args.data.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, AugmentInputError) as exc:
        print(f"hybrid-router augment: {args.data}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    rows = rows[:args.limit] if args.limit else rows
    try:
        with RouterClient(target, timeout_s=args.timeout, **client_trust_args(args, settings, target)) as client:
            outcomes = run_augment(rows, CloudAsker(client.generate), out=args.out, variants=args.variants,
                                   min_f1=args.min_f1, log=lambda line: print(line, file=sys.stderr))
    except (RouterError, OSError) as exc:
        print(f"hybrid-router augment: stopped ({type(exc).__name__}: {exc}); what was done is kept in "
              f"{progress_path(args.out)}: run the same command again to go on", file=sys.stderr)
        return EXIT_ERROR
    records = read_records(progress_path(args.out))
    latest = latest_outcomes(records).values()
    summary = {"examples": len(rows), "variants": args.variants, "this_run": dict(outcomes),
               "all_runs": dict(Counter(record["reason"] for record in latest)),
               "kept": sum(1 for record in latest if record.get("row")),
               "cloud_usd": sum(float(record.get("usd") or 0.0) for record in records), "out": str(args.out)}
    print(json.dumps(summary, indent=2))
    return EXIT_OK
