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
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from bench.arbitration import items_by_key, latest_records, results_file, skip_reason
from bench.datasets import build_messages, load_dataset
from bench.runner import load_records

DEFAULT_OUT = Path("bench/out/hidden_states.npz")
DEFAULT_MODEL = "qwen2.5-coder-0.5b"


class StatesFileError(RuntimeError):
    pass


def item_key(dataset: str, item_id: str) -> str:
    return f"{dataset}/{item_id}"


def load_states(path: Path) -> dict[str, Any]:
    """{"keys", "prompt", "draft", "model", "model_sha256", "layer"}; an absent file is empty."""
    if not path.exists():
        return {"keys": [], "prompt": [], "draft": [], "model": None, "model_sha256": None, "layer": None}
    with np.load(path, allow_pickle=False) as data:
        return {"keys": [str(key) for key in data["keys"]], "prompt": list(data["prompt"]),
                "draft": list(data["draft"]), "model": str(data["model"]),
                "model_sha256": str(data["model_sha256"]), "layer": str(data["layer"])}


def save_states(path: Path, states: dict[str, Any]) -> None:
    """Written beside the target and renamed: a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial.npz")
    np.savez(partial, keys=np.array(states["keys"]), prompt=np.array(states["prompt"], dtype=np.float16),
             draft=np.array(states["draft"], dtype=np.float16), model=np.array(states["model"]),
             model_sha256=np.array(states["model_sha256"]), layer=np.array(states["layer"]))
    partial.replace(path)


def file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def draft_tokens(edge: Any, text: str, finished: bool) -> list[int]:
    """The draft as the edge generated it: its text's tokens; one fewer when the budget cut it, because
    the live capture reads the state before the last sampled token (that token is never evaluated)."""
    tokens = edge._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    return tokens if finished else tokens[:-1]


def states_of(edge: Any, messages: Sequence[dict[str, str]], draft: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    from edge._hidden_states import prefill_with_state, read_last_state

    prompt = list(edge.prompt_token_ids(messages))
    if len(prompt) + len(draft) > edge.n_ctx:
        raise StatesFileError(f"prompt and draft ({len(prompt)} + {len(draft)} tokens) exceed n_ctx {edge.n_ctx}")
    prompt_state, _ = prefill_with_state(edge._llm, prompt, edge.n_embd)
    if not draft:  # the edge answered nothing: its last state is the prompt's
        return prompt_state, prompt_state
    edge._llm.eval(list(draft))
    return prompt_state, read_last_state(edge._llm, edge.n_embd)


def relabel(results: Path, out: Path, model_path: Path, model_name: str, *, every: int = 25,
            limit: Optional[int] = None, n_threads: int = 2) -> dict[str, Any]:
    from edge.llama_backend import LlamaBackend

    records = [record for record in latest_records(load_records(results_file(results)))
               if skip_reason(record) is None]
    states = load_states(out)
    sha256 = file_sha256(model_path)
    if states["model_sha256"] not in (None, sha256):
        raise StatesFileError(f"{out} holds states of {states['model']} ({states['model_sha256']}); "
                              f"this edge is {model_name} ({sha256}): write to another file")
    states.update(model=model_name, model_sha256=sha256, layer="final_norm")
    done = set(states["keys"])
    todo = [record for record in records if item_key(record["dataset"], record["item_id"]) not in done]
    if limit is not None:
        todo = todo[:limit]
    items = items_by_key({record["dataset"] for record in todo}, load_dataset)
    edge = LlamaBackend(model_path, model_name=model_name, n_ctx=4096, n_threads=n_threads)
    started = time.monotonic()
    try:
        for index, record in enumerate(todo, 1):
            item = items[(record["dataset"], record["item_id"])]
            finished = bool(record["decision"]["features"].get("finished", 1.0))
            draft = draft_tokens(edge, record["edge_text"], finished)
            prompt_state, draft_state = states_of(edge, build_messages(item), draft)
            states["keys"].append(item_key(item.dataset, item.item_id))
            states["prompt"].append(prompt_state.astype(np.float16))
            states["draft"].append(draft_state.astype(np.float16))
            if index % every == 0 or index == len(todo):
                save_states(out, states)
                rate = (time.monotonic() - started) / index
                print(f"hidden_states: {len(states['keys'])} items in {out} ({rate:.2f} s an item)",
                      file=sys.stderr, flush=True)
    finally:
        edge.close()
    return {"items": len(states["keys"]), "added": len(todo), "seconds": time.monotonic() - started}


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
    import os

    from edge.catalogue import ModelCache
    from router.domain.config import load_settings

    model_path = ModelCache(load_settings(None, os.environ).models.cache_dir.expanduser()).require(args.model)
    try:
        report = relabel(args.results, args.out, model_path, args.model, every=args.every, limit=args.limit,
                         n_threads=args.threads)
    except StatesFileError as exc:
        print(f"hidden_states: {exc}", file=sys.stderr)
        return 2
    print(f"hidden_states: {report['items']} items ({report['added']} added in {report['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
