"""The ledger's cost: what it adds to a request, and how many writes per second it sustains.

    .venv/bin/python -m bench.ledger [--requests 1000]

Two daemons run side by side, identical but for `ledger.enabled`, both with the fixed-latency
fault-injection edge (so model time does not hide the ledger) and a fault-injection cloud that is
never called. Requests alternate between them in blocks, so machine drift hits both alike.
Then the ledger library alone is fed as fast as it will take records, to find its sustained write
rate. Writes bench/results/ledger.json and ledger.md. Target: < 0.2 ms p50 added to a request.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cloud.fault_injection_server import FaultInjectionOpenAIServer
from router.client import RouterClient
from router.doors.launcher import LocalDaemon
from router.core.ledger import Ledger
from router.domain.types import (BackendKind, BackendRun, ChatMessage, Decision, GenerateRequest, GenerateResult,
                          Latency, Mode)

RESULTS = Path(__file__).resolve().parent / "results"
BLOCK = 50


def daemon_env(cloud_url: str, ledger_path: Path, enabled: bool, latency_s: float) -> dict[str, str]:
    return dict(os.environ, HYBRID_ROUTER_EDGE__KIND="fault-injection",
                HYBRID_ROUTER_EDGE__FAULT_INJECTION_LATENCY_S=str(latency_s),
                HYBRID_ROUTER_CLOUD__BASE_URL=cloud_url, HYBRID_ROUTER_CLOUD__API_KEY="not-used",
                HYBRID_ROUTER_LEDGER__ENABLED=str(enabled).lower(), HYBRID_ROUTER_LEDGER__PATH=str(ledger_path),
                HYBRID_ROUTER_LOGGING__LEVEL="WARNING")


def request_latencies(clients: dict[str, RouterClient], requests: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in clients}
    for name, client in clients.items():  # warm-up
        for _ in range(20):
            client.generate(prompt="What is 2 + 2?", mode="edge", max_tokens=4, reference_answer="4")
    while min(len(v) for v in samples.values()) < requests:
        for name, client in clients.items():
            for _ in range(BLOCK):
                started = time.perf_counter()
                client.generate(prompt="What is 2 + 2?", mode="edge", max_tokens=4, reference_answer="4")
                samples[name].append((time.perf_counter() - started) * 1000)
    return samples


def sustained_writes(path: Path, records: int) -> dict[str, float]:
    request = GenerateRequest(messages=(ChatMessage("user", "What is 2 + 2?"),), reference_answer="4")
    run = BackendRun(BackendKind.EDGE, "edge", "4", 12, 1, 0.0, 0.01, 0.01, 1e-7, "stop", -0.1)
    ledger = Ledger(path, queue_size=records + 1)
    ledger.open()
    started = time.perf_counter()
    for index in range(records):
        ledger.record(request, GenerateResult(f"r{index}", "4", BackendKind.EDGE, "edge", "", (run,), 1e-7, 1e-7,
                                              0.0, Latency(0.01, 0.01, 0.01, 0.0), Decision(Mode.EDGE_ONLY), "stop"))
    enqueued = time.perf_counter() - started
    ledger.flush(timeout_s=600)
    elapsed = time.perf_counter() - started
    written = ledger.metrics.written
    ledger.close()
    return {"records": records, "written": written, "seconds": elapsed, "writes_per_s": written / elapsed,
            "record_call_us": enqueued / records * 1e6}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=2.0, help="the fault-injection edge's fixed latency")
    parser.add_argument("--writes", type=int, default=20000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, FaultInjectionOpenAIServer() as cloud:
        on = LocalDaemon(env=daemon_env(cloud.base_url, Path(tmp) / "on.db", True, args.latency_ms / 1000))
        off = LocalDaemon(env=daemon_env(cloud.base_url, Path(tmp) / "off.db", False, args.latency_ms / 1000))
        with on, off, on.client() as on_client, off.client() as off_client:
            samples = request_latencies({"ledger_on": on_client, "ledger_off": off_client}, args.requests)
            ledger_status = on_client.stats().ledger
            info = on_client.info()
        writes = sustained_writes(Path(tmp) / "writes.db", args.writes)

    def summary(values: list[float]) -> dict[str, float]:
        return {"n": len(values), "p50": float(np.percentile(values, 50)), "p99": float(np.percentile(values, 99)),
                "mean": float(np.mean(values))}

    on_stats, off_stats = summary(samples["ledger_on"]), summary(samples["ledger_off"])
    added_p50 = on_stats["p50"] - off_stats["p50"]
    report = {
        "benchmark": "ledger", "command": " ".join(["python", *sys.argv]),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": info.hardware, "packages": dict(info.packages),
        "edge": f"fault-injection backend, fixed {args.latency_ms} ms", "generate_ms": {
            "ledger_on": on_stats, "ledger_off": off_stats, "added_p50_ms": added_p50,
            "added_p99_ms": on_stats["p99"] - off_stats["p99"], "target_added_p50_ms": "< 0.2"},
        "ledger_on_status": {"written": ledger_status.written, "dropped_writes": ledger_status.dropped_writes,
                             "ok": ledger_status.ok},
        "sustained_writes": writes,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ledger.json").write_text(json.dumps(report, indent=2) + "\n")
    md = (f"# Ledger overhead\n\n`{report['command']}` on {report['date_utc']}\n\n"
          f"Machine: {report['machine']}; grpcio {report['packages']['grpcio']}\n\n"
          f"Unary Generate through the SDK, edge = {report['edge']}, {args.requests} requests per side, "
          f"alternating blocks of {BLOCK}.\n\n"
          f"| | p50 ms | p99 ms | mean ms |\n|---|---|---|---|\n"
          f"| ledger off | {off_stats['p50']:.3f} | {off_stats['p99']:.3f} | {off_stats['mean']:.3f} |\n"
          f"| ledger on | {on_stats['p50']:.3f} | {on_stats['p99']:.3f} | {on_stats['mean']:.3f} |\n"
          f"| **added** | **{added_p50:.3f}** (target < 0.2) | {on_stats['p99'] - off_stats['p99']:.3f} | |\n\n"
          f"Rows written by the ledger-on daemon: {ledger_status.written}, dropped: {ledger_status.dropped_writes}.\n\n"
          f"Sustained writes (library, one writer thread, batches of 256): "
          f"{writes['writes_per_s']:.0f} records/s over {writes['records']} records; "
          f"`record()` costs {writes['record_call_us']:.1f} µs on the caller's thread.\n")
    (args.out / "ledger.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
