"""Beside a peer, in one run: our HTTP door and LiteLLM's proxy in front of the same OpenAI-compatible backend
(the fault-injection server answering a canned text after a fixed latency), in CLOUD_ONLY so that both only
forward. Reports the latency each adds over calling the backend directly (p50, p99) and its throughput, at 1
and at 16 concurrent clients. Every client is the official `openai` async client, streaming (the backend
answers in SSE, as our cloud backend always asks), and reads the answer to its end.

LiteLLM runs from its own virtualenv (it brings about 130 packages and 800 MB, which the daemon's install
should not carry):

    python3 -m venv .venv-litellm && .venv-litellm/bin/pip install 'litellm[proxy]==1.108.7'
    .venv/bin/python -m bench.vs_litellm [--litellm .venv-litellm/bin/litellm] [--requests 300]

(`make bench-vs-litellm` does both.) Writes bench/results/vs_litellm.json and vs_litellm.md. Goal: we add at
most a tenth of what LiteLLM adds.

Both proxies are set up as an operator would run them: ours with tokens on (the default) and its ledger on;
LiteLLM with a master key, no database, no retries (ours has none on a CLOUD_ONLY stream either).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Optional

import numpy as np
import openai

from bench.arbitration_latency import free_loopback_port
from bench.load import commit
from cloud.fault_injection_server import FaultInjectionOpenAIServer
from router.doors.launcher import LocalDaemon
from bench.portable import shown_command

RESULTS = Path(__file__).resolve().parent / "results"
MESSAGES = [{"role": "user", "content": "What is 2 + 2?"}]
LITELLM_KEY = "sk-bench-vs-litellm"
LITELLM_CONFIG = """model_list:
  - model_name: bench-model
    litellm_params:
      model: openai/fault-injection
      api_base: os.environ/UPSTREAM_BASE_URL
      api_key: bench-upstream-key
litellm_settings:
  drop_params: true
  num_retries: 0
  request_timeout: 60
general_settings: {}
"""


class LiteLLMProxy:
    """LiteLLM's proxy as a child process, offline: the model-cost map from its package, not GitHub."""

    def __init__(self, executable: Path, upstream_base_url: str, workdir: Path) -> None:
        self.executable, self.upstream, self.workdir = executable, upstream_base_url, workdir
        self.process: Optional[subprocess.Popen] = None
        self.base_url = ""
        self.startup_s = 0.0

    def __enter__(self) -> "LiteLLMProxy":
        config = self.workdir / "litellm.yaml"
        config.write_text(LITELLM_CONFIG)
        port = free_loopback_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LITELLM_", "OPENAI_", "DATABASE_URL"))}
        env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_MASTER_KEY=LITELLM_KEY, UPSTREAM_BASE_URL=self.upstream,
                   NO_PROXY="127.0.0.1,localhost")
        log = (self.workdir / "litellm.log").open("wb")
        began = time.monotonic()
        self.process = subprocess.Popen([str(self.executable), "--config", str(config), "--host", "127.0.0.1",
                                         "--port", str(port), "--num_workers", "1"], env=env, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        ready = f"http://127.0.0.1:{port}/health/readiness"
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"litellm exited with {self.process.returncode}; see {self.workdir}/litellm.log")
            if time.monotonic() - began > 300:
                raise TimeoutError(f"litellm not ready at {ready} after 300 s")
            try:
                with urllib.request.urlopen(ready, timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                time.sleep(0.25)
        self.startup_s = time.monotonic() - began
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


async def one(client: openai.AsyncOpenAI, model: str) -> float:
    started = time.perf_counter()
    try:
        stream = await client.chat.completions.create(model=model, messages=MESSAGES, stream=True, max_tokens=8)
        text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
    except openai.APIError as exc:
        raise RuntimeError(f"{model} at {client.base_url}: {type(exc).__name__}: {exc}") from exc
    if text != "4":
        raise RuntimeError(f"{model}: unexpected answer {text!r}")
    return time.perf_counter() - started


async def batch(client: openai.AsyncOpenAI, model: str, requests: int, concurrency: int) -> tuple[list[float], float]:
    """`requests` requests by `concurrency` clients; their latencies and the wall time of the whole batch."""
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(requests):
        queue.put_nowait(index)

    async def worker() -> None:
        while not queue.empty():
            queue.get_nowait()
            latencies.append(await one(client, model))

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - began


async def measure(targets: dict[str, tuple[openai.AsyncOpenAI, str]], requests: int, concurrency: int,
                  rounds: int) -> dict[str, dict[str, list[float]]]:
    """Each target in turn, round after round in a rotating order (a drift in the machine's speed falls on all
    alike); one warm-up batch per target first."""
    names = list(targets)
    for name in names:
        await batch(*targets[name], requests=max(concurrency * 2, 10), concurrency=concurrency)
    out: dict[str, dict[str, list[float]]] = {name: {"latency_s": [], "throughput_rps": []} for name in names}
    per_round = max(requests // rounds, concurrency)
    for round_number in range(rounds):
        for offset in range(len(names)):
            name = names[(round_number + offset) % len(names)]
            latencies, wall = await batch(*targets[name], requests=per_round, concurrency=concurrency)
            out[name]["latency_s"] += latencies
            out[name]["throughput_rps"].append(len(latencies) / wall)
    return out


def summary(samples: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    direct = samples["direct"]["latency_s"]
    base50, base99 = np.percentile(direct, 50) * 1000, np.percentile(direct, 99) * 1000
    result = {}
    for name, sample in samples.items():
        p50, p99 = np.percentile(sample["latency_s"], 50) * 1000, np.percentile(sample["latency_s"], 99) * 1000
        result[name] = {"requests": len(sample["latency_s"]), "p50_ms": float(p50), "p99_ms": float(p99),
                        "added_p50_ms": float(p50 - base50), "added_p99_ms": float(p99 - base99),
                        "throughput_rps": statistics.median(sample["throughput_rps"])}
    return result


async def run_levels(args: argparse.Namespace, upstream: str, ours: str, ours_key: str, litellm: str) -> dict:
    results = {}
    for concurrency in args.concurrency:
        limits = {"timeout": 120, "max_retries": 0}
        targets = {"direct": (openai.AsyncOpenAI(base_url=upstream, api_key="bench-upstream-key", **limits), "fault-injection"),
                   "hybrid-router": (openai.AsyncOpenAI(base_url=ours, api_key=ours_key, **limits), "hybrid/cloud"),
                   "litellm": (openai.AsyncOpenAI(base_url=litellm, api_key=LITELLM_KEY, **limits), "bench-model")}
        samples = await measure(targets, args.requests, concurrency, args.rounds)
        results[str(concurrency)] = {"summary": summary(samples), "samples": samples}
        for client, _ in targets.values():
            await client.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--litellm", type=Path, default=Path(".venv-litellm/bin/litellm"))
    parser.add_argument("--requests", type=int, default=300, help="per target and concurrency level")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--upstream-ms", type=float, default=20.0, help="the backend's fixed answer latency")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not args.litellm.exists():
        print(f"no LiteLLM at {args.litellm}: python3 -m venv .venv-litellm && "
              ".venv-litellm/bin/pip install 'litellm[proxy]==1.108.7'", file=sys.stderr)
        return 2
    litellm_version = subprocess.run([str(args.litellm.parent / "python"), "-c",
                                      "import importlib.metadata as m; print(m.version('litellm'))"],
                                     capture_output=True, text=True).stdout.strip()
    http_address = f"127.0.0.1:{free_loopback_port()}"
    with tempfile.TemporaryDirectory(prefix="vs-litellm-") as workdir, \
            FaultInjectionOpenAIServer(canned_answer="4", answer_latency_s=args.upstream_ms / 1000) as upstream:
        env = dict(os.environ, HYBRID_ROUTER_HTTP__ADDRESS=http_address, HYBRID_ROUTER_CLOUD__BASE_URL=upstream.base_url,
                   HYBRID_ROUTER_CLOUD__API_KEY="bench-upstream-key", HYBRID_ROUTER_CLOUD__MODEL="fault-injection",
                   HYBRID_ROUTER_CLOUD__MAX_RETRIES="0", HYBRID_ROUTER_EDGE__MODEL="smollm2-135m",
                   HYBRID_ROUTER_LEDGER__PATH=str(Path(workdir) / "ledger.db"),
                   HYBRID_ROUTER_LIMITS__PER_PRINCIPAL_RATE_PER_S="100000", HYBRID_ROUTER_LIMITS__PER_PRINCIPAL_BURST="100000",
                   HYBRID_ROUTER_LOGGING__LEVEL="WARNING")
        print("starting hybrid-router (HTTP door) and LiteLLM's proxy...", file=sys.stderr)
        with LocalDaemon(env=env) as daemon, LiteLLMProxy(args.litellm, upstream.base_url, Path(workdir)) as litellm:
            with daemon.client(timeout_s=600) as grpc_client:
                info = grpc_client.info()
            results = asyncio.run(run_levels(args, upstream.base_url, f"http://{http_address}/v1", daemon.token or "none",
                                             litellm.base_url))
            litellm_startup_s = litellm.startup_s

    report = {"benchmark": "vs_litellm", "command": " ".join(["python", "-m", "bench.vs_litellm", *shown_command(sys.argv[1:])]),
              "commit": commit(), "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": info.hardware, "packages": {**info.packages, "litellm": litellm_version},
              "upstream_latency_ms": args.upstream_ms, "litellm_startup_s": litellm_startup_s, "levels": results}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vs_litellm.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# Beside a peer: our HTTP door and LiteLLM's proxy, forwarding only\n",
             f"`{report['command']}` at commit {report['commit']}, {report['date_utc']}\n",
             f"Machine: {info.hardware} (client, both proxies and the backend share it); Python "
             f"{info.packages.get('python')}; hybrid-router {info.packages.get('hybrid-router')} (uvicorn "
             f"{info.packages.get('uvicorn')}, starlette {info.packages.get('starlette')}); LiteLLM {litellm_version}.\n",
             f"Backend: the fault-injection server answering \"4\" in SSE after {args.upstream_ms:g} ms. Clients: the "
             f"`openai` async client, streaming, reading each answer to its end. Ours: CLOUD_ONLY (`hybrid/cloud`), tokens "
             f"on, ledger on. LiteLLM: master key, no database, no retries, one worker.\n",
             "| clients | target | requests | p50 ms | p99 ms | added p50 ms | added p99 ms | throughput req/s |",
             "|---|---|---|---|---|---|---|---|"]
    for level, data in results.items():
        for name, row in data["summary"].items():
            lines.append(f"| {level} | {name} | {row['requests']} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
                         f"{row['added_p50_ms']:.2f} | {row['added_p99_ms']:.2f} | {row['throughput_rps']:.1f} |")
    lines.append("\n| clients | ours added / LiteLLM added, p50 | the same, p99 | goal |\n|---|---|---|---|")
    for level, data in results.items():
        ours, theirs = data["summary"]["hybrid-router"], data["summary"]["litellm"]
        lines.append(f"| {level} | {ours['added_p50_ms'] / theirs['added_p50_ms']:.3f} | "
                     f"{ours['added_p99_ms'] / theirs['added_p99_ms']:.3f} | <= 0.1 |")
    md = "\n".join(lines) + "\n"
    (args.out / "vs_litellm.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
