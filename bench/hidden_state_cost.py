"""What reading the edge's hidden states costs a request, on the edge model itself (no daemon in between).

Three measures, each against the same request without states, in alternating rounds so that drift on a
shared machine falls on both sides:
- streaming: decode tokens/s of a long answer with `capture_states` on and off (the target: >= 0.97);
- time to first token with `capture_states` (its split prefill adds one single-token decode);
- the prefill probe's read (`read_prompt_state`) and the time to first token of the stream that follows it
  on the same messages (it reuses the prefill), against a stream that starts cold.

    .venv/bin/python -m bench.hidden_state_cost [--model qwen2.5-coder-0.5b] [--rounds 9]

Writes bench/results/hidden_state_cost.json and .md.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from bench.load import commit
from edge.catalogue import ModelCache
from router.domain.config import load_settings

RESULTS = Path(__file__).resolve().parent / "results"
LONG = ({"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Write a detailed essay about the history of bridges."})
# A SQuAD-sized prompt: the prefill the probes read at is a passage and a question.
PASSAGE = ("The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, a region in "
           "France. They were descended from Norse raiders and pirates from Denmark, Iceland and Norway who, under "
           "their leader Rollo, agreed to swear fealty to King Charles III of West Francia. ") * 3
QUESTION = ({"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": f"Passage: {PASSAGE}\nQuestion: Who was the Normans' leader?\n"
                                        "Answer with the shortest span copied from the passage."})


async def stream_once(edge: Any, messages, *, max_tokens: int, capture: bool, other) -> dict[str, float]:
    await drain(edge.stream(other, max_tokens=1, temperature=0.0))  # another prompt in the cache: a cold start
    started = time.perf_counter()
    stream = edge.stream(messages, max_tokens=max_tokens, temperature=0.0, capture_states=capture)
    first = None
    async for delta in stream:
        if first is None:
            first = time.perf_counter()
    ended = time.perf_counter()
    completion = stream.completion
    decode_s = ended - first
    return {"ttft_s": first - started, "tokens_per_s": (completion.completion_tokens - 1) / decode_s,
            "tokens": completion.completion_tokens}


async def drain(stream) -> None:
    async for _ in stream:
        pass


async def prefill_then_stream(edge: Any, messages, other) -> dict[str, float]:
    await drain(edge.stream(other, max_tokens=1, temperature=0.0))
    started = time.perf_counter()
    read = await edge.read_prompt_state(messages)
    read_s = time.perf_counter() - started
    began = time.perf_counter()
    stream = edge.stream(messages, max_tokens=2, temperature=0.0)
    first = None
    async for _ in stream:
        if first is None:
            first = time.perf_counter()
    return {"read_s": read_s, "ttft_after_read_s": first - began, "prompt_tokens": read.prompt_tokens}


async def measure(edge: Any, rounds: int, max_tokens: int) -> dict[str, Any]:
    other = ({"role": "user", "content": "Name a colour."},)
    rows: dict[str, list[dict[str, float]]] = {"plain": [], "capture": [], "ttft_plain": [], "ttft_capture": [],
                                               "prefill": []}
    for index in range(rounds):
        order = (False, True) if index % 2 == 0 else (True, False)
        for capture in order:
            rows["capture" if capture else "plain"].append(
                await stream_once(edge, LONG, max_tokens=max_tokens, capture=capture, other=other))
        for capture in order:
            rows["ttft_capture" if capture else "ttft_plain"].append(
                await stream_once(edge, QUESTION, max_tokens=2, capture=capture, other=other))
        rows["prefill"].append(await prefill_then_stream(edge, QUESTION, other))
    median = lambda key, field: statistics.median(row[field] for row in rows[key])  # noqa: E731
    ratios = [c["tokens_per_s"] / p["tokens_per_s"] for c, p in zip(rows["capture"], rows["plain"])]
    return {
        "rounds": rounds,
        "plain_tokens_per_s": median("plain", "tokens_per_s"),
        "capture_tokens_per_s": median("capture", "tokens_per_s"),
        "capture_over_plain": median("capture", "tokens_per_s") / median("plain", "tokens_per_s"),
        "capture_over_plain_median_of_rounds": statistics.median(ratios),
        "question_prompt_tokens": rows["prefill"][0]["prompt_tokens"],
        "ttft_plain_ms": 1000 * median("ttft_plain", "ttft_s"),
        "ttft_capture_ms": 1000 * median("ttft_capture", "ttft_s"),
        "prefill_read_ms": 1000 * median("prefill", "read_s"),
        "ttft_after_read_ms": 1000 * median("prefill", "ttft_after_read_s"),
        "raw": rows,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    from edge.llama_backend import LlamaBackend
    from router.assembly.parts import hardware_summary, package_versions

    path = ModelCache(load_settings(None, os.environ).models.cache_dir.expanduser()).require(args.model)
    edge = LlamaBackend(path, model_name=args.model, n_ctx=4096, n_threads=args.threads)
    try:
        result = asyncio.run(measure(edge, args.rounds, args.max_tokens))
    finally:
        edge.close()
    versions = package_versions()
    report = {"command": f"python -m bench.hidden_state_cost --model {args.model} --rounds {args.rounds}",
              "commit": commit(), "machine": hardware_summary(),
              "versions": {k: versions.get(k) for k in ("python", "llama-cpp-python")},
              "model": args.model, "threads": args.threads, "max_tokens": args.max_tokens, **result}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "hidden_state_cost.json").write_text(json.dumps(report, indent=2) + "\n")
    md = (f"# What reading the edge's hidden states costs\n\n`{report['command']}` at commit {report['commit']}\n\n"
          f"Machine: {report['machine']}; Python {report['versions']['python']}; llama-cpp-python "
          f"{report['versions']['llama-cpp-python']}. Model {args.model}, {args.threads} threads, greedy; "
          f"{args.rounds} alternating rounds, medians.\n\n| measure | without states | with states | target |\n"
          f"|---|---|---|---|\n"
          f"| decode tokens/s, {args.max_tokens}-token answer | {result['plain_tokens_per_s']:.1f} | "
          f"{result['capture_tokens_per_s']:.1f} (ratio {result['capture_over_plain']:.3f}; median of per-round "
          f"ratios {result['capture_over_plain_median_of_rounds']:.3f}) | >= 0.97 |\n"
          f"| time to first token, {result['question_prompt_tokens']}-token passage prompt, cold | "
          f"{result['ttft_plain_ms']:.0f} ms | {result['ttft_capture_ms']:.0f} ms | |\n"
          f"| the prefill probe's read of the same prompt (`read_prompt_state`) | | {result['prefill_read_ms']:.0f} ms "
          f"| |\n| time to first token of the stream that follows the read | | {result['ttft_after_read_ms']:.0f} ms | |\n")
    (args.out / "hidden_state_cost.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
