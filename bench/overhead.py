"""The router's own cost: streamed tokens/s against llama-cpp-python called directly, and the
per-request overhead (client wall time minus time inside the backend) as p50/p99, with the daemon's
own share of it (timed inside the daemon) apart from gRPC's round trip.

    .venv/bin/python -m bench.overhead [--model qwen2.5-coder-0.5b] [--requests 200]

Writes bench/results/overhead.json and overhead.md. Targets: >= 97% of direct tokens/s, < 2 ms p50 seen by the
client, <= 1 ms p50 inside the daemon.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.load import commit
from edge.catalogue import ModelCache
from router.client import RouterClient
from router.domain.config import load_settings
from router.doors.launcher import LocalDaemon

PROMPT = ({"role": "system", "content": "You are a helpful assistant."},
          {"role": "user", "content": "Write a detailed essay about the history of bridges."})
SHORT_PROMPT = ({"role": "user", "content": "Say hello."},)
RESULTS = Path(__file__).resolve().parent / "results"


class DirectLlama:
    """llama-cpp-python called directly on the daemon's model file, greedy, two ways: its streaming chat
    completion, as a user would call it; and its bare `generate` loop on the same templated prompt (no chunk
    dicts, no stop scan), the engine's own ceiling and the tighter baseline, since the router drives
    `generate` too. Like the router's, both reuse the cached prompt prefix."""

    def __init__(self, model_path: Path, n_threads: int, n_ctx: int) -> None:
        from llama_cpp import Llama, llama_chat_format

        from edge.ggml_runtime import ensure_cpu_backend

        ensure_cpu_backend()  # the same CPU code the daemon runs, for a dispatch build too
        self.llm = Llama(str(model_path), n_ctx=n_ctx, n_threads=n_threads, logits_all=False, verbose=False)
        eos = self.llm._model.token_get_text(self.llm.token_eos())
        bos = self.llm._model.token_get_text(self.llm.token_bos()) if self.llm.token_bos() != -1 else ""
        rendered = llama_chat_format.Jinja2ChatFormatter(
            template=self.llm.metadata["tokenizer.chat_template"], eos_token=eos, bos_token=bos)(messages=list(PROMPT))
        self.prompt = self.llm.tokenize(rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special,
                                        special=True)

    def chat_tokens_per_s(self, max_tokens: int, ttfts: list[float]) -> float:
        started = time.perf_counter()
        finish_reason, first = None, None
        for chunk in self.llm.create_chat_completion(PROMPT, max_tokens=max_tokens, temperature=0.0, stream=True):
            if first is None and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter()
            finish_reason = chunk["choices"][0].get("finish_reason") or finish_reason
        ttfts.append((first or time.perf_counter()) - started)
        return _generated(max_tokens, finish_reason) / (time.perf_counter() - started)

    def generate_tokens_per_s(self, max_tokens: int) -> float:
        import llama_cpp

        started = time.perf_counter()
        generated = 0
        for token in self.llm.generate(self.prompt, temp=0.0):
            self.llm.detokenize([token])
            generated += 1
            if llama_cpp.llama_vocab_is_eog(self.llm._model.vocab, token) or generated == max_tokens:
                break
        return _generated(max_tokens, "length" if generated == max_tokens else "stop") / (time.perf_counter() - started)


def _generated(max_tokens: int, finish_reason: object) -> int:
    """Both sides are timed to the same count: the essay runs into max_tokens (a text chunk is not a token:
    llama-cpp-python merges tokens that end inside a UTF-8 character)."""
    if finish_reason != "length":
        raise RuntimeError(f"the essay stopped early ({finish_reason!r}); give a smaller --max-tokens")
    return max_tokens


def routed_tokens_per_s(client: RouterClient, max_tokens: int, ttfts: list[float]) -> float:
    started = time.perf_counter()
    first = None
    with client.stream(messages=PROMPT, mode="edge", max_tokens=max_tokens, temperature=0.0) as stream:
        for delta in stream:
            if first is None and delta.text:
                first = time.perf_counter()
    ttfts.append((first or time.perf_counter()) - started)
    return _generated(max_tokens, stream.result.finish_reason) / (time.perf_counter() - started)


def interleaved_rates(client: RouterClient, direct: DirectLlama, max_tokens: int, runs: int,
                      ttfts: dict[str, list[float]]) -> tuple[list[float], list[float], list[float]]:
    """Routed, chat and bare in turn, round after round, so a drift in the machine's speed falls on all
    three alike, and in a rotating order, so no side always runs first; the first round warms the caches and
    is not counted. `ttfts` gets the time to first text of the routed and the chat side, warm-up included."""
    sides = [lambda: routed_tokens_per_s(client, max_tokens, ttfts["routed"]),
             lambda: direct.chat_tokens_per_s(max_tokens, ttfts["direct"]),
             lambda: direct.generate_tokens_per_s(max_tokens)]
    rates: list[list[float]] = [[], [], []]
    for round_number in range(runs + 1):
        for offset in range(len(sides)):
            side = (round_number + offset) % len(sides)
            rates[side].append(sides[side]())
    routed, chat, bare = (side_rates[1:] for side_rates in rates)
    return routed, chat, bare


@dataclass
class OverheadSamples:
    """Per request, in ms: what the client sees beyond the edge's own time, and the daemon's share of it."""

    client: list[float] = field(default_factory=list)  # client wall time - latency.edge_s
    daemon: list[float] = field(default_factory=list)  # latency.total_s - latency.edge_s, timed inside the daemon
    round_trip: list[float] = field(default_factory=list)  # a unary Info call: gRPC's own floor on this machine


def overhead_ms(client: RouterClient, requests: int) -> OverheadSamples:
    samples = OverheadSamples()
    for index in range(requests + 5):
        started = time.perf_counter()
        result = client.generate(messages=SHORT_PROMPT, mode="edge", max_tokens=4, temperature=0.0)
        wall = time.perf_counter() - started
        started = time.perf_counter()
        client.info()
        info_wall = time.perf_counter() - started
        if index >= 5:  # warm-up
            samples.client.append((wall - result.latency.edge_s) * 1000)
            samples.daemon.append((result.latency.total_s - result.latency.edge_s) * 1000)
            samples.round_trip.append(info_wall * 1000)
    return samples


def percentiles(values: list[float]) -> dict[str, float]:
    return {"p50": float(np.percentile(values, 50)), "p90": float(np.percentile(values, 90)),
            "p99": float(np.percentile(values, 99)), "min": min(values), "max": max(values)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--stream-runs", type=int, default=15)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stream-flush-interval", type=float, default=None,
                        help="edge.stream_flush_interval_s for the daemon (default: the configured default)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    n_ctx = 2048
    env = dict(os.environ, HYBRID_ROUTER_EDGE__MODEL=args.model, HYBRID_ROUTER_EDGE__N_THREADS=str(args.threads),
               HYBRID_ROUTER_EDGE__N_CTX=str(n_ctx), HYBRID_ROUTER_LEDGER__ENABLED="false",
               HYBRID_ROUTER_STANDIN__MODEL=os.environ.get("HYBRID_ROUTER_STANDIN__MODEL", "smollm2-135m"),
               HYBRID_ROUTER_STANDIN__N_THREADS="1", HYBRID_ROUTER_LOGGING__LEVEL="WARNING")
    if args.stream_flush_interval is not None:
        env["HYBRID_ROUTER_EDGE__STREAM_FLUSH_INTERVAL_S"] = str(args.stream_flush_interval)
    print("daemon (the router, streaming over gRPC), with llama-cpp-python loaded beside it...", file=sys.stderr)
    with LocalDaemon(env=env) as daemon, daemon.client(timeout_s=600) as client:
        info = client.info()
        # The same file the daemon loaded. Both stay loaded (about 0.5 GB each) so the runs can alternate;
        # one generates while the other's threads sleep.
        # Info names no paths (README "Security"): the file comes from the same model cache the daemon reads.
        direct_llama = DirectLlama(ModelCache(load_settings(None, env).models.cache_dir.expanduser()).require(args.model),
                                   args.threads, n_ctx)
        ttfts: dict[str, list[float]] = {"routed": [], "direct": []}
        routed, direct, bare = interleaved_rates(client, direct_llama, args.max_tokens, args.stream_runs, ttfts)
        ttft_ms = {side: statistics.median(values[1:]) * 1000 for side, values in ttfts.items()}
        del direct_llama
        overhead = overhead_ms(client, args.requests)

    ratio = statistics.median(routed) / statistics.median(direct)
    bare_ratio = statistics.median(routed) / statistics.median(bare)
    # Each round ran the three back to back, so a round's ratio is free of the drift between rounds.
    paired_ratio = statistics.median(r / d for r, d in zip(routed, direct))
    report = {
        "benchmark": "overhead",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": info.hardware, "python": info.packages["python"], "packages": dict(info.packages),
        "edge_stream_flush_interval_s": env.get("HYBRID_ROUTER_EDGE__STREAM_FLUSH_INTERVAL_S", "default (0.1)"),
        "model": {"name": args.model, "sha256": info.edge.sha256, "n_threads": args.threads, "n_ctx": n_ctx},
        "stream": {"max_tokens": args.max_tokens, "runs": args.stream_runs,
                   "direct_tokens_per_s": direct, "routed_tokens_per_s": routed,
                   "direct_median": statistics.median(direct), "routed_median": statistics.median(routed),
                   "routed_over_direct": ratio, "routed_over_direct_paired_median": paired_ratio,
                   "target": ">= 0.97", "order": "interleaved: routed, chat, bare generate in each round",
                   "bare_generate_tokens_per_s": bare, "bare_generate_median": statistics.median(bare),
                   "routed_over_bare_generate": bare_ratio,
                   "ttft_ms_median": ttft_ms,
                   "ttft_definition": "time from sending the request to the first text: routed over gRPC "
                                      "(SDK stream), direct by llama-cpp-python's streaming chat completion"},
        "overhead_ms": {"requests": len(overhead.client),
                        "client": {**percentiles(overhead.client), "target_p50": "< 2 ms",
                                   "definition": "client wall time of a unary Generate minus latency.edge_s "
                                                 "(time inside the edge backend)"},
                        "daemon": {**percentiles(overhead.daemon), "target_p50": "<= 1 ms",
                                   "definition": "latency.total_s - latency.edge_s: from the router core "
                                                 "receiving the request to its result, less the edge's time"},
                        "info_round_trip": {**percentiles(overhead.round_trip),
                                            "definition": "a unary Info call from the same client: the "
                                                          "gRPC round trip that is not the daemon's"}},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "overhead.json").write_text(json.dumps(report, indent=2) + "\n")
    md = (f"# Router overhead\n\n`{report['command']}` at commit {commit()}, {report['date_utc']}\n\n"
          f"Machine: {report['machine']}; Python {report['python']}; "
          f"llama-cpp-python {report['packages']['llama-cpp-python']}, grpcio {report['packages']['grpcio']}\n\n"
          f"Model: {args.model} ({info.edge.sha256[:12]}…), {args.threads} threads, greedy, {args.max_tokens} new tokens; "
          f"edge.stream_flush_interval_s = {report['edge_stream_flush_interval_s']}; auth.mode = "
          f"{load_settings(None, env).auth.mode} (every call carries a bearer token the daemon checks)\n\n"
          f"| measure | value | target |\n|---|---|---|\n"
          f"| direct llama-cpp-python tokens/s (median of {args.stream_runs}) | {statistics.median(direct):.1f} | |\n"
          f"| streamed through the router over gRPC, tokens/s (median) | {statistics.median(routed):.1f} | |\n"
          f"| router / direct (ratio of medians) | {ratio:.3f} | >= 0.97 |\n"
          f"| router / direct (median of the {args.stream_runs} per-round ratios) | {paired_ratio:.3f} | >= 0.97 |\n"
          f"| bare `Llama.generate` loop, same templated prompt, tokens/s (median) | {statistics.median(bare):.1f} | |\n"
          f"| router / bare generate | {bare_ratio:.3f} | |\n"
          f"| time to first text, router over gRPC (median) | {ttft_ms['routed']:.1f} ms | |\n"
          f"| time to first text, direct chat completion (median) | {ttft_ms['direct']:.1f} ms | |\n"
          f"| per-request overhead seen by the client, p50 over {len(overhead.client)} requests "
          f"| {report['overhead_ms']['client']['p50']:.3f} ms | < 2 ms |\n"
          f"| the same, p99 | {report['overhead_ms']['client']['p99']:.3f} ms | |\n"
          f"| the daemon's own share (router core, less the edge), p50 "
          f"| {report['overhead_ms']['daemon']['p50']:.3f} ms | <= 1 ms |\n"
          f"| the daemon's own share, p99 | {report['overhead_ms']['daemon']['p99']:.3f} ms | |\n"
          f"| a unary Info round trip (gRPC's floor here), p50 "
          f"| {report['overhead_ms']['info_round_trip']['p50']:.3f} ms | |\n")
    (args.out / "overhead.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
