"""A long run with random cloud faults: memory stays flat, no answered request is missing from the ledger,
and the cloud's circuit breaker opens and closes as configured.

    .venv/bin/python -m bench.soak [--minutes 10] [--clients 8]

The backends take a fixed time (the fault-injection edge, and the fault-injection OpenAI server answering
after a fixed latency), so the run exercises the router for its whole length. While clients send a mix of
EDGE_ONLY, CLOUD_ONLY and POST_ARBITRATION requests, a fault thread injects, at random, single 5xx answers
and bursts long enough to open the breaker (breaker.failures_to_open in a row). Every 5 s the daemon's RSS
and its breaker (Info) are sampled. Writes bench/results/soak.json and soak.md.

Pass: RSS after the first minute stays within 10% of its value at the first minute; every request id the
clients got an answer for is in the ledger after the drain; the breaker opened and closed at least once.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.load import commit, peak_rss_mb
from cloud.fault_injection_server import Fault, FaultInjectionOpenAIServer
from router.client import AsyncRouterClient
from router.core.auth import PrincipalsFile
from router.domain.access import Role
from router.domain.errors import RouterError
from router.doors.launcher import LocalDaemon
from bench.portable import shown_command

RESULTS = Path(__file__).resolve().parent / "results"
SAMPLE_EVERY_S = 5.0
WARM_UP_S = 60.0
FAILURES_TO_OPEN = 5
COOLDOWN_S = 5.0


def daemon_env(home: Path, cloud_url: str, edge_ms: float) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYBRID_ROUTER_", "OPENAI_"))}
    env.update(HOME=str(home), HYBRID_ROUTER_EDGE__KIND="fault-injection",
               HYBRID_ROUTER_EDGE__FAULT_INJECTION_LATENCY_S=str(edge_ms / 1000),
               HYBRID_ROUTER_CLOUD__BASE_URL=cloud_url, HYBRID_ROUTER_CLOUD__API_KEY="not-used",
               HYBRID_ROUTER_CLOUD__MAX_RETRIES="0", HYBRID_ROUTER_INFO__SERVICE="off",
               HYBRID_ROUTER_LEDGER__PATH=str(home / "ledger.db"),
               HYBRID_ROUTER_AUTH__PRINCIPALS_FILE=str(home / "principals.toml"),
               HYBRID_ROUTER_AUTH__LOCAL_TOKEN_FILE=str(home / "admin.token"),
               HYBRID_ROUTER_BREAKER__FAILURES_TO_OPEN=str(FAILURES_TO_OPEN),
               HYBRID_ROUTER_BREAKER__COOLDOWN_S=str(COOLDOWN_S), HYBRID_ROUTER_BREAKER__WHEN_OPEN="degrade",
               HYBRID_ROUTER_ARBITRATION__SCORER="logprob", HYBRID_ROUTER_LOGGING__LEVEL="WARNING")
    return env


def inject_faults(cloud: FaultInjectionOpenAIServer, stop: threading.Event, seed: int) -> collections.Counter:
    """Random faults until `stop`: mostly single 5xx answers, sometimes a burst that opens the breaker. A
    fault is only added when none is pending: while the breaker is open no call takes them, and faults
    piled up then would fail every trial call, which is a cloud that never recovers, not random faults."""
    rng = random.Random(seed)
    injected: collections.Counter[str] = collections.Counter()
    while not stop.wait(rng.uniform(2.0, 8.0)):
        if cloud.pending_faults:
            injected["skipped_pending"] += 1
            continue
        if rng.random() < 0.3:
            cloud.inject(Fault.STATUS_503, times=FAILURES_TO_OPEN)
            injected["burst"] += 1
        else:
            cloud.inject(rng.choice([Fault.STATUS_500, Fault.STATUS_503, Fault.STATUS_429]))
            injected["single"] += 1
    return injected


async def clients_loop(target: str, tokens: list[str], until: float) -> tuple[set[str], collections.Counter]:
    answered: set[str] = set()
    outcomes: collections.Counter[str] = collections.Counter()
    modes = ("edge", "cloud", "post")

    async def one(index: int) -> None:
        async with AsyncRouterClient(target, token=tokens[index], timeout_s=60) as client:
            turn = 0
            while time.monotonic() < until:
                turn += 1
                mode = modes[(index + turn) % len(modes)]
                try:
                    result = await client.generate(prompt=f"Soak {index}.{turn}: what is 2 + 2?", mode=mode,
                                                   max_tokens=8)
                except RouterError as exc:
                    outcomes[type(exc).__name__] += 1
                    continue
                answered.add(result.request_id)
                outcomes["degraded" if result.decision.degraded else "OK"] += 1

    await asyncio.gather(*(one(i) for i in range(len(tokens))))
    return answered, outcomes


async def sample_loop(daemon: LocalDaemon, until: float, samples: list[dict]) -> None:
    async with AsyncRouterClient(daemon.target, token=daemon.token, timeout_s=30) as admin:
        began = time.monotonic()
        while time.monotonic() < until:
            info = await admin.info()
            peak, rss = peak_rss_mb(daemon.process.pid)
            breaker = info.cloud_breaker
            samples.append({"t_s": round(time.monotonic() - began, 1), "rss_mb": round(rss, 1),
                            "peak_rss_mb": round(peak, 1), "breaker": breaker.state if breaker else None,
                            "times_opened": breaker.times_opened if breaker else 0,
                            "times_closed": breaker.times_closed if breaker else 0})
            await asyncio.sleep(SAMPLE_EVERY_S)  # a sampling period, not an ordering of events


async def run(daemon: LocalDaemon, tokens: list[str], seconds: float, samples: list[dict]):
    until = time.monotonic() + seconds
    sampler = asyncio.create_task(sample_loop(daemon, until, samples))
    answered, outcomes = await clients_loop(daemon.target, tokens, until)
    await sampler
    return answered, outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--edge-ms", type=float, default=20.0)
    parser.add_argument("--cloud-ms", type=float, default=50.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    samples: list[dict] = []
    stop = threading.Event()
    with tempfile.TemporaryDirectory(prefix="hybrid-router-soak-") as tmp, \
            FaultInjectionOpenAIServer(canned_answer="4", answer_latency_s=args.cloud_ms / 1000) as cloud:
        home = Path(tmp)
        principals = PrincipalsFile(home / "principals.toml")
        tokens = [principals.issue(f"soak-{i:02d}", Role.USER, ()) for i in range(args.clients)]
        with LocalDaemon(env=daemon_env(home, cloud.base_url, args.edge_ms), ready_timeout_s=300) as daemon:
            injected: collections.Counter = collections.Counter()
            faults = threading.Thread(target=lambda: injected.update(inject_faults(cloud, stop, args.seed)))
            faults.start()
            try:
                answered, outcomes = asyncio.run(run(daemon, tokens, args.minutes * 60, samples))
            finally:
                stop.set()
                faults.join()
            with daemon.client(timeout_s=30) as admin:
                final = admin.info().cloud_breaker
                ledger_status = admin.stats().ledger
            status = daemon.stop()
        with sqlite3.connect(home / "ledger.db") as db:
            recorded = {row[0] for row in db.execute("SELECT id FROM requests")}
    missing = answered - recorded
    warm = [s for s in samples if s["t_s"] >= WARM_UP_S]
    base = warm[0]["rss_mb"] if warm else None
    drift = (max(s["rss_mb"] for s in warm) - base) / base if warm and base else None
    opened = final.times_opened if final else 0
    closed = final.times_closed if final else 0
    passed = (drift is not None and drift <= 0.10 and not missing and opened > 0 and closed > 0)
    report = {
        "benchmark": "soak", "command": " ".join(["python", "-m", "bench.soak", *shown_command(sys.argv[1:])]), "commit": commit(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "minutes": args.minutes,
        "clients": args.clients, "breaker": {"failures_to_open": FAILURES_TO_OPEN, "cooldown_s": COOLDOWN_S,
                                             "times_opened": opened, "times_closed": closed},
        "faults_injected": dict(injected), "outcomes": dict(outcomes), "answered": len(answered),
        "answered_missing_from_ledger": len(missing), "ledger_rows": len(recorded),
        "ledger_dropped_writes": ledger_status.dropped_writes, "rss_mb_at_warm_up": base,
        "rss_drift_after_warm_up": drift, "daemon_exit_status": status, "passed": passed, "samples": samples,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(json.dumps(report, indent=2) + "\n")
    md = [f"# Soak: {args.minutes:g} minutes with random cloud faults\n",
          f"`{report['command']}` at commit {report['commit']}, {report['date_utc']}\n",
          f"{args.clients} clients (EDGE_ONLY, CLOUD_ONLY, POST_ARBITRATION in turn), fixed-latency fault-injection "
          f"backends (edge {args.edge_ms:g} ms, cloud {args.cloud_ms:g} ms); breaker: open after "
          f"{FAILURES_TO_OPEN} failures, {COOLDOWN_S:g} s cool-down, degrade while open.\n",
          f"- Faults injected: {dict(injected)}",
          f"- Outcomes: {dict(outcomes)}",
          f"- RSS at {WARM_UP_S:g} s: {base} MB; largest rise after it: "
          f"{'n/a' if drift is None else f'{drift:+.1%}'} (limit +10%)",
          f"- Answered: {len(answered)}; missing from the ledger after the drain: **{len(missing)}**; "
          f"ledger rows {len(recorded)}, dropped writes {ledger_status.dropped_writes}",
          f"- Breaker: opened {opened} times, closed {closed} times",
          f"- Daemon exit status {status}; **{'PASS' if passed else 'FAIL'}**", ""]
    (args.out / "soak.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
