"""The router's own cost: streamed tokens/s against llama-cpp-python called directly, and the
per-request overhead (client wall time minus time inside the backend) as p50/p99.

    .venv/bin/python bench/overhead.py [--model qwen2.5-coder-0.5b] [--requests 200]

Writes bench/results/overhead.json and overhead.md. Targets: >= 97% of direct tokens/s, < 2 ms p50.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from router.client import RouterClient
from router.launcher import LocalDaemon

PROMPT = ({"role": "system", "content": "You are a helpful assistant."},
          {"role": "user", "content": "Write a detailed essay about the history of bridges."})
SHORT_PROMPT = ({"role": "user", "content": "Say hello."},)
RESULTS = Path(__file__).resolve().parent / "results"


def direct_tokens_per_s(model_path: Path, n_threads: int, n_ctx: int, max_tokens: int, runs: int) -> list[float]:
    """llama-cpp-python's own streaming chat completion, greedy, as a user would call it."""
    from llama_cpp import Llama

    llm = Llama(str(model_path), n_ctx=n_ctx, n_threads=n_threads, logits_all=False, verbose=False)
    rates = []
    for _ in range(runs + 1):  # the first run warms the caches and is not counted
        started = time.perf_counter()
        finish_reason = None
        for chunk in llm.create_chat_completion(PROMPT, max_tokens=max_tokens, temperature=0.0, stream=True):
            finish_reason = chunk["choices"][0].get("finish_reason") or finish_reason
        rates.append(_generated(max_tokens, finish_reason) / (time.perf_counter() - started))
    del llm
    return rates[1:]


def _generated(max_tokens: int, finish_reason: object) -> int:
    """Both sides are timed to the same count: the essay runs into max_tokens (a text chunk is not a token:
    llama-cpp-python merges tokens that end inside a UTF-8 character)."""
    if finish_reason != "length":
        raise RuntimeError(f"the essay stopped early ({finish_reason!r}); give a smaller --max-tokens")
    return max_tokens


def routed_tokens_per_s(client: RouterClient, max_tokens: int, runs: int) -> list[float]:
    rates = []
    for _ in range(runs + 1):
        started = time.perf_counter()
        with client.stream(messages=PROMPT, mode="edge", max_tokens=max_tokens, temperature=0.0) as stream:
            for _delta in stream:
                pass
        elapsed = time.perf_counter() - started
        rates.append(_generated(max_tokens, stream.result.finish_reason) / elapsed)
    return rates[1:]


def overhead_ms(client: RouterClient, requests: int) -> list[float]:
    samples = []
    for index in range(requests + 5):
        started = time.perf_counter()
        result = client.generate(messages=SHORT_PROMPT, mode="edge", max_tokens=4, temperature=0.0)
        wall = time.perf_counter() - started
        if index >= 5:  # warm-up
            samples.append((wall - result.latency.edge_s) * 1000)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--stream-runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    n_ctx = 2048
    env = dict(os.environ, HYBRID_ROUTER_EDGE__MODEL=args.model, HYBRID_ROUTER_EDGE__N_THREADS=str(args.threads),
               HYBRID_ROUTER_EDGE__N_CTX=str(n_ctx), HYBRID_ROUTER_LEDGER__ENABLED="false",
               HYBRID_ROUTER_STANDIN__MODEL=os.environ.get("HYBRID_ROUTER_STANDIN__MODEL", "smollm2-135m"),
               HYBRID_ROUTER_STANDIN__N_THREADS="1", HYBRID_ROUTER_LOGGING__LEVEL="WARNING")
    print("daemon (the router, streaming over gRPC)...", file=sys.stderr)
    with LocalDaemon(env=env) as daemon, RouterClient(daemon.target, timeout_s=600) as client:
        routed = routed_tokens_per_s(client, args.max_tokens, args.stream_runs)
        overhead = overhead_ms(client, args.requests)
        info = client.info()
    # The same file the daemon loaded, called directly, after the daemon is gone.
    print(f"direct llama-cpp-python, {args.model}, {args.stream_runs} runs...", file=sys.stderr)
    direct = direct_tokens_per_s(Path(info.edge.endpoint), args.threads, n_ctx, args.max_tokens, args.stream_runs)

    ratio = statistics.median(routed) / statistics.median(direct)
    report = {
        "benchmark": "overhead",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": info.hardware, "python": info.packages["python"], "packages": dict(info.packages),
        "model": {"name": args.model, "sha256": info.edge.sha256, "n_threads": args.threads, "n_ctx": n_ctx},
        "stream": {"max_tokens": args.max_tokens, "runs": args.stream_runs,
                   "direct_tokens_per_s": direct, "routed_tokens_per_s": routed,
                   "direct_median": statistics.median(direct), "routed_median": statistics.median(routed),
                   "routed_over_direct": ratio, "target": ">= 0.97"},
        "overhead_ms": {"requests": len(overhead), "p50": float(np.percentile(overhead, 50)),
                        "p90": float(np.percentile(overhead, 90)), "p99": float(np.percentile(overhead, 99)),
                        "min": min(overhead), "max": max(overhead), "target_p50": "< 2 ms",
                        "definition": "client wall time of a unary Generate minus latency.edge_s (time inside the edge backend)"},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "overhead.json").write_text(json.dumps(report, indent=2) + "\n")
    md = (f"# Router overhead\n\n`{report['command']}` on {report['date_utc']}\n\n"
          f"Machine: {report['machine']}; Python {report['python']}; "
          f"llama-cpp-python {report['packages']['llama-cpp-python']}, grpcio {report['packages']['grpcio']}\n\n"
          f"Model: {args.model} ({info.edge.sha256[:12]}…), {args.threads} threads, greedy, {args.max_tokens} new tokens\n\n"
          f"| measure | value | target |\n|---|---|---|\n"
          f"| direct llama-cpp-python tokens/s (median of {args.stream_runs}) | {statistics.median(direct):.1f} | |\n"
          f"| streamed through the router over gRPC, tokens/s (median) | {statistics.median(routed):.1f} | |\n"
          f"| router / direct | {ratio:.3f} | >= 0.97 |\n"
          f"| overhead p50 over {len(overhead)} requests | {report['overhead_ms']['p50']:.3f} ms | < 2 ms |\n"
          f"| overhead p99 | {report['overhead_ms']['p99']:.3f} ms | |\n")
    (args.out / "overhead.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
