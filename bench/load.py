"""The router under load: many concurrent clients for a bounded time against a daemon whose backends take
a fixed time, so that what is measured is the router (admission, queues, auth, the ledger), not a model.

    .venv/bin/python -m bench.load [--clients 16 64 200] [--seconds 20] [--queue 32]

The edge is the fixed-latency fault-injection backend (its calls overlap, where llama.cpp serves one at a
time; the edge's bounded queue still lets at most 1 + limits.max_queued_per_backend calls be in flight),
the cloud the fault-injection OpenAI server answering every call after a fixed latency. Every client is a
principal of its own with a token (so the per-principal limits do not hide the daemon's own), half of them
asking EDGE_ONLY and half CLOUD_ONLY. Reports, per number of clients: throughput, p50/p99 latency of the
answered requests, errors by status code, calls that hung (no answer and no error within the timeout),
the daemon's peak RSS, and the ledger's rows against the answered requests (counted after the daemon
has drained and stopped). Writes bench/results/load.json and load.md.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cloud.fault_injection_server import FaultInjectionOpenAIServer
from router.client import AsyncRouterClient
from router.core.auth import PrincipalsFile
from router.domain.access import Role
from router.domain.errors import RouterError
from router.doors.launcher import LocalDaemon

RESULTS = Path(__file__).resolve().parent / "results"
HANG_AFTER_S = 60.0


def daemon_env(home: Path, cloud_url: str, args: argparse.Namespace) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYBRID_ROUTER_", "OPENAI_"))}
    env.update(HOME=str(home), HYBRID_ROUTER_EDGE__KIND="fault-injection",
               HYBRID_ROUTER_EDGE__FAULT_INJECTION_LATENCY_S=str(args.edge_ms / 1000),
               HYBRID_ROUTER_CLOUD__BASE_URL=cloud_url, HYBRID_ROUTER_CLOUD__API_KEY="not-used",
               HYBRID_ROUTER_CLOUD__MAX_RETRIES="0",
               HYBRID_ROUTER_INFO__SERVICE="off", HYBRID_ROUTER_LEDGER__PATH=str(home / "ledger.db"),
               HYBRID_ROUTER_AUTH__PRINCIPALS_FILE=str(home / "principals.toml"),
               HYBRID_ROUTER_AUTH__LOCAL_TOKEN_FILE=str(home / "admin.token"),
               HYBRID_ROUTER_LIMITS__MAX_QUEUED_PER_BACKEND=str(args.queue),
               HYBRID_ROUTER_LIMITS__MAX_CONCURRENT_REQUESTS=str(args.max_concurrent),
               HYBRID_ROUTER_LOGGING__LEVEL="WARNING")
    return env


def peak_rss_mb(pid: int) -> tuple[float, float]:
    """(peak, current) resident set of a process, from /proc (VmHWM, VmRSS)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmHWM"].split()[0]) / 1024, int(fields["VmRSS"].split()[0]) / 1024


async def one_level(target: str, tokens: list[str], clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    codes: collections.Counter[str] = collections.Counter()
    hung = 0
    answered = 0
    stop_at = time.monotonic() + seconds

    async def client_loop(index: int) -> None:
        nonlocal hung, answered
        mode = "edge" if index % 2 == 0 else "cloud"
        async with AsyncRouterClient(target, token=tokens[index], timeout_s=HANG_AFTER_S) as client:
            while time.monotonic() < stop_at:
                began = time.perf_counter()
                try:
                    await client.generate(prompt=f"Load test {index}: what is 2 + 2?", mode=mode, max_tokens=8)
                except RouterError as exc:
                    name = type(exc).__name__
                    if name == "BackendTimeoutError":
                        hung += 1
                    codes[name] += 1
                    if name in ("RateLimitedError",):
                        await asyncio.sleep(0.005)  # a refused client retries soon, as a real one would
                    continue
                latencies.append(time.perf_counter() - began)
                answered += 1
                codes["OK"] += 1

    began = time.monotonic()
    await asyncio.gather(*(client_loop(i) for i in range(clients)))
    elapsed = time.monotonic() - began
    ms = np.array(latencies) * 1000 if latencies else np.array([float("nan")])
    return {"clients": clients, "seconds": round(elapsed, 2), "answered": answered,
            "throughput_per_s": round(answered / elapsed, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "by_code": dict(codes), "hung": hung}


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[16, 64, 200])
    parser.add_argument("--seconds", type=float, default=20.0, help="how long each level runs")
    parser.add_argument("--queue", type=int, default=32, help="limits.max_queued_per_backend")
    parser.add_argument("--max-concurrent", type=int, default=256, help="limits.max_concurrent_requests")
    parser.add_argument("--edge-ms", type=float, default=20.0, help="the fault-injection edge's fixed latency")
    parser.add_argument("--cloud-ms", type=float, default=50.0, help="the fault-injection cloud's fixed latency")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    levels = []
    with tempfile.TemporaryDirectory(prefix="hybrid-router-load-") as tmp, \
            FaultInjectionOpenAIServer(canned_answer="4", answer_latency_s=args.cloud_ms / 1000) as cloud:
        home = Path(tmp)
        principals = PrincipalsFile(home / "principals.toml")
        tokens = [principals.issue(f"load-{i:03d}", Role.USER, ()) for i in range(max(args.clients))]
        daemon = LocalDaemon(env=daemon_env(home, cloud.base_url, args), ready_timeout_s=300)
        with daemon:
            with daemon.client(timeout_s=60) as admin:
                info = admin.info()
            for clients in args.clients:
                level = asyncio.run(one_level(daemon.target, tokens, clients, args.seconds))
                level["peak_rss_mb"], level["rss_mb"] = peak_rss_mb(daemon.process.pid)
                levels.append(level)
                print(json.dumps(level), file=sys.stderr)
            with daemon.client(timeout_s=60) as admin:
                ledger_status = admin.stats().ledger
            status = daemon.stop()  # SIGTERM: the drain flushes the ledger before the count below
        with sqlite3.connect(home / "ledger.db") as db:
            rows = db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
            answered_rows = db.execute("SELECT COUNT(*) FROM requests WHERE finish_reason NOT IN "
                                       "('cancelled', 'error')").fetchone()[0]
    answered = sum(level["answered"] for level in levels)
    report = {
        "benchmark": "load", "command": " ".join(["python", *sys.argv]), "commit": commit(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": info.hardware,
        "packages": {k: info.packages[k] for k in ("hybrid-router", "grpcio", "protobuf") if k in info.packages},
        "setup": {"edge": f"fault-injection, fixed {args.edge_ms:g} ms a call; its calls overlap, unlike llama.cpp's, but its queue still lets at most 1 + the queue limit be in flight",
                  "cloud": f"fault-injection OpenAI server, fixed {args.cloud_ms:g} ms",
                  "limits.max_queued_per_backend": args.queue, "limits.max_concurrent_requests": args.max_concurrent,
                  "auth": "token, one principal per client", "seconds_per_level": args.seconds},
        "levels": levels, "answered": answered, "ledger_rows": rows, "ledger_answered_rows": answered_rows,
        "ledger_dropped_writes": ledger_status.dropped_writes, "daemon_exit_status": status,
        "rows_equal_answered": answered_rows == answered,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "load.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# Load: the router under many concurrent clients\n",
             f"`{report['command']}` at commit {report['commit']}, {report['date_utc']}\n",
             f"Machine: {report['machine']}; versions: "
             + ", ".join(f"{k} {v}" for k, v in report["packages"].items()) + "\n",
             f"Edge: {report['setup']['edge']}. Cloud: {report['setup']['cloud']}. Queue limit per backend: "
             f"{args.queue}; at most {args.max_concurrent} requests at once; {args.seconds:g} s per level; "
             "half the clients ask EDGE_ONLY, half CLOUD_ONLY; every client is its own principal with a token.\n",
             "| clients | answered/s | p50 ms | p99 ms | answered | refused (RESOURCE_EXHAUSTED) | other errors | hung | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for level in levels:
        codes = dict(level["by_code"])
        ok = codes.pop("OK", 0)
        refused = codes.pop("RateLimitedError", 0)
        other = ", ".join(f"{k} {v}" for k, v in codes.items()) or "0"
        lines.append(f"| {level['clients']} | {level['throughput_per_s']} | {level['p50_ms']} | {level['p99_ms']} | "
                     f"{ok} | {refused} | {other} | {level['hung']} | {level['peak_rss_mb']:.0f} |")
    lines += ["", f"Ledger rows after the drain: {rows} ({answered_rows} answered) for {answered} answered requests: "
              f"**{'equal' if report['rows_equal_answered'] else 'NOT equal'}**; dropped writes "
              f"{ledger_status.dropped_writes}; daemon exit status {status}.", ""]
    (args.out / "load.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0 if report["rows_equal_answered"] and not any(level["hung"] for level in levels) else 1


if __name__ == "__main__":
    sys.exit(main())
