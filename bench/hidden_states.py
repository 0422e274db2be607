"""Relabel the arbitration corpus with the edge's hidden states, without generating anything.

For every labelled item the edge's prompt (the messages the bench sent) and its draft (`edge_text`) are
evaluated once: the prompt with the edge's own split prefill, which gives the state at the prompt's last
token (what PRE reads after the prefill), then the draft's tokens in one batch, which gives the state at
the draft's last evaluated token (what POST reads when the draft ends). A draft cut by the token budget
ends one token earlier, as the live capture does (edge/_hidden_states.py).

    python -m bench.hidden_states --results bench/results/corpus --out bench/out/hidden_states.npz

The states are stored as float16 beside nothing else: the file is rebuilt from the committed results by
this script (seconds per item), not committed. It checkpoints every --every items and resumes: items
already in --out are skipped. The file records the edge model's name and SHA-256, and refuses to be
extended with another model's states.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from bench.arbitration import items_by_key, latest_records, results_file, skip_reason
from bench.datasets import build_messages, load_dataset
from bench.runner import load_records
from router.core.arbiters.corpus import TrainingError
from router.core.probes.states_file import HiddenStatesFile, row_key

DEFAULT_OUT = Path("bench/out/hidden_states.npz")
DEFAULT_MODEL = "qwen2.5-coder-0.5b"
LAYER = "final_norm"


def file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def relabel(results: Path, out: Path, model_path: Path, model_name: str, *, every: int = 25,
            limit: Optional[int] = None, n_threads: int = 2) -> dict[str, Any]:
    from edge.llama_backend import LlamaBackend

    records = [record for record in latest_records(load_records(results_file(results)))
               if skip_reason(record) is None]
    states = HiddenStatesFile.open_for(out, edge_model=model_name, edge_model_sha256=file_sha256(model_path),
                                       layer=LAYER)
    todo = [record for record in records if row_key(record["dataset"], record["item_id"]) not in states]
    if limit is not None:
        todo = todo[:limit]
    items = items_by_key({record["dataset"] for record in todo}, load_dataset)
    edge = LlamaBackend(model_path, model_name=model_name, n_ctx=4096, n_threads=n_threads)
    started = time.monotonic()
    try:
        for index, record in enumerate(todo, 1):
            item = items[(record["dataset"], record["item_id"])]
            finished = bool(record["decision"]["features"].get("finished", 1.0))
            found = edge.hidden_states_of(build_messages(item), record["edge_text"], finished=finished)
            states.add(row_key(item.dataset, item.item_id), found.prompt, found.draft)
            if index % every == 0 or index == len(todo):
                states.save(out)
                rate = (time.monotonic() - started) / index
                print(f"hidden_states: {len(states)} items in {out} ({rate:.2f} s an item)", file=sys.stderr, flush=True)
    finally:
        edge.close()
    return {"items": len(states), "added": len(todo), "seconds": time.monotonic() - started}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hidden_states", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("bench/results/corpus"))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="the edge model in the model cache")
    parser.add_argument("--every", type=int, default=25, help="checkpoint every this many items")
    parser.add_argument("--limit", type=int, help="at most this many new items (a smoke run)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    from edge.catalogue import ModelCache
    from router.domain.config import load_settings

    model_path = ModelCache(load_settings(None, os.environ).models.cache_dir.expanduser()).require(args.model)
    try:
        report = relabel(args.results, args.out, model_path, args.model, every=args.every, limit=args.limit,
                         n_threads=args.threads)
    except TrainingError as exc:
        print(f"hidden_states: {exc}", file=sys.stderr)
        return 2
    print(f"hidden_states: {report['items']} items ({report['added']} added in {report['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
