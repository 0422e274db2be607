"""The HTTP door's cost, measured as bench/overhead.py measures the gRPC door's: streamed tokens/s through the
OpenAI-compatible door (the official `openai` client) against llama-cpp-python called directly and against the
same daemon over gRPC, and the per-request latency each door adds (client wall time less the edge's own time,
which the daemon reports) as p50/p99. One daemon serves both doors, with tokens on.

    .venv/bin/python -m bench.http_overhead [--model qwen2.5-coder-0.5b] [--requests 200]

Writes bench/results/http_overhead.json and http_overhead.md. Target: streamed tokens/s through HTTP >= 0.97 of
direct.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import openai

from bench.arbitration_latency import free_loopback_port
from bench.load import commit
from bench.overhead import PROMPT, SHORT_PROMPT, DirectLlama, _generated, percentiles, routed_tokens_per_s
from edge.catalogue import ModelCache
from router.client import RouterClient
from router.domain.config import load_settings
from router.doors.launcher import LocalDaemon

RESULTS = Path(__file__).resolve().parent / "results"


def http_tokens_per_s(client: openai.OpenAI, max_tokens: int, ttfts: list[float]) -> float:
    started = time.perf_counter()
    first, finish_reason = None, None
    stream = client.chat.completions.create(model="hybrid/edge", messages=list(PROMPT), max_tokens=max_tokens,
                                            temperature=0.0, stream=True)
    for chunk in stream:
        if not chunk.choices:
            continue
        if first is None and chunk.choices[0].delta.content:
            first = time.perf_counter()
        finish_reason = chunk.choices[0].finish_reason or finish_reason
    ttfts.append((first or time.perf_counter()) - started)
    return _generated(max_tokens, finish_reason) / (time.perf_counter() - started)


def interleaved(sides: list, runs: int) -> list[list[float]]:
    """Each side in turn, round after round, in a rotating order; the first round warms caches and is dropped."""
    rates: list[list[float]] = [[] for _ in sides]
    for round_number in range(runs + 1):
        for offset in range(len(sides)):
            side = (round_number + offset) % len(sides)
            rates[side].append(sides[side]())
    return [side_rates[1:] for side_rates in rates]


def added_ms(http: openai.OpenAI, grpc_client: RouterClient, requests: int) -> dict[str, list[float]]:
    """Per request, in turn: wall time less the edge's own time, through each door."""
    samples: dict[str, list[float]] = {"http": [], "grpc": []}
    for index in range(requests + 5):
        started = time.perf_counter()
        answer = http.chat.completions.create(model="hybrid/edge", messages=list(SHORT_PROMPT), max_tokens=4,
                                              temperature=0.0)
        http_wall = time.perf_counter() - started
        started = time.perf_counter()
        result = grpc_client.generate(messages=SHORT_PROMPT, mode="edge", max_tokens=4, temperature=0.0)
        grpc_wall = time.perf_counter() - started
        if index >= 5:  # warm-up
            samples["http"].append((http_wall - answer.model_extra["hybrid"]["latency_s"]["edge"]) * 1000)
            samples["grpc"].append((grpc_wall - result.latency.edge_s) * 1000)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--stream-runs", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    n_ctx = 2048
    http_address = f"127.0.0.1:{free_loopback_port()}"
    env = dict(os.environ, HYBRID_ROUTER_EDGE__MODEL=args.model, HYBRID_ROUTER_EDGE__N_THREADS=str(args.threads),
               HYBRID_ROUTER_EDGE__N_CTX=str(n_ctx), HYBRID_ROUTER_LEDGER__ENABLED="false",
               HYBRID_ROUTER_STANDIN__MODEL=os.environ.get("HYBRID_ROUTER_STANDIN__MODEL", "smollm2-135m"),
               HYBRID_ROUTER_STANDIN__N_THREADS="1", HYBRID_ROUTER_LOGGING__LEVEL="WARNING",
               HYBRID_ROUTER_HTTP__ADDRESS=http_address)
    print(f"daemon with its HTTP door on {http_address}, llama-cpp-python loaded beside it...", file=sys.stderr)
    with LocalDaemon(env=env) as daemon, daemon.client(timeout_s=600) as grpc_client:
        info = grpc_client.info()
        http = openai.OpenAI(base_url=f"http://{http_address}/v1", api_key=daemon.token or "none", max_retries=0,
                             timeout=600)
        direct = DirectLlama(ModelCache(load_settings(None, env).models.cache_dir.expanduser()).require(args.model),
                             args.threads, n_ctx)
        ttfts: dict[str, list[float]] = {"http": [], "grpc": [], "direct": []}
        http_rates, grpc_rates, direct_rates = interleaved(
            [lambda: http_tokens_per_s(http, args.max_tokens, ttfts["http"]),
             lambda: routed_tokens_per_s(grpc_client, args.max_tokens, ttfts["grpc"]),
             lambda: direct.chat_tokens_per_s(args.max_tokens, ttfts["direct"])], args.stream_runs)
        del direct
        added = added_ms(http, grpc_client, args.requests)

    median = statistics.median
    ratio = median(http_rates) / median(direct_rates)
    paired = median(h / d for h, d in zip(http_rates, direct_rates))
    over_grpc = median(h / g for h, g in zip(http_rates, grpc_rates))
    ttft_ms = {side: median(values[1:]) * 1000 for side, values in ttfts.items()}
    door_ms = [h - g for h, g in zip(added["http"], added["grpc"])]
    report = {
        "benchmark": "http_overhead", "command": " ".join(["python", "-m", "bench.http_overhead", *sys.argv[1:]]),
        "commit": commit(), "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": info.hardware, "packages": dict(info.packages),
        "model": {"name": args.model, "sha256": info.edge.sha256, "n_threads": args.threads, "n_ctx": n_ctx},
        "stream": {"max_tokens": args.max_tokens, "runs": args.stream_runs, "http_tokens_per_s": http_rates,
                   "grpc_tokens_per_s": grpc_rates, "direct_tokens_per_s": direct_rates,
                   "http_over_direct": ratio, "http_over_direct_paired_median": paired,
                   "http_over_grpc_paired_median": over_grpc, "target": ">= 0.97 of direct", "ttft_ms_median": ttft_ms},
        "added_ms": {"requests": len(added["http"]), "http": percentiles(added["http"]),
                     "grpc": percentiles(added["grpc"]), "http_minus_grpc_paired": percentiles(door_ms),
                     "definition": "client wall time of a unary 4-token edge request less the edge's own time "
                                   "(latency edge_s, which the daemon reports); the two doors alternate"},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "http_overhead.json").write_text(json.dumps(report, indent=2) + "\n")
    a = report["added_ms"]
    md = (f"# The HTTP door's overhead\n\n`{report['command']}` at commit {report['commit']}, {report['date_utc']}\n\n"
          f"Machine: {info.hardware}; Python {info.packages.get('python')}; llama-cpp-python "
          f"{info.packages.get('llama-cpp-python')}, uvicorn {info.packages.get('uvicorn', '?')}, starlette "
          f"{info.packages.get('starlette', '?')}, openai {info.packages.get('openai', '?')}\n\n"
          f"Model: {args.model}, {args.threads} threads, greedy, {args.max_tokens} new tokens; tokens on (every call "
          f"carries a bearer token the daemon checks); the official `openai` client for HTTP, the SDK for gRPC.\n\n"
          f"| measure | value | target |\n|---|---|---|\n"
          f"| direct llama-cpp-python streaming chat, tokens/s (median of {args.stream_runs}) | {median(direct_rates):.1f} | |\n"
          f"| through the HTTP door (SSE), tokens/s (median) | {median(http_rates):.1f} | |\n"
          f"| through gRPC, tokens/s (median) | {median(grpc_rates):.1f} | |\n"
          f"| HTTP / direct (ratio of medians) | {ratio:.3f} | >= 0.97 |\n"
          f"| HTTP / direct (median of per-round ratios) | {paired:.3f} | >= 0.97 |\n"
          f"| HTTP / gRPC (median of per-round ratios) | {over_grpc:.3f} | |\n"
          f"| time to first text: HTTP / gRPC / direct (medians) | {ttft_ms['http']:.1f} / {ttft_ms['grpc']:.1f} / "
          f"{ttft_ms['direct']:.1f} ms | |\n"
          f"| added per request through HTTP, p50 / p99 over {a['requests']} | {a['http']['p50']:.3f} / "
          f"{a['http']['p99']:.3f} ms | |\n"
          f"| added per request through gRPC, p50 / p99 | {a['grpc']['p50']:.3f} / {a['grpc']['p99']:.3f} ms | |\n"
          f"| HTTP minus gRPC, paired, p50 / p99 | {a['http_minus_grpc_paired']['p50']:.3f} / "
          f"{a['http_minus_grpc_paired']['p99']:.3f} ms | |\n")
    (args.out / "http_overhead.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
