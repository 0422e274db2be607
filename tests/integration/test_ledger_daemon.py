"""The ledger through the real daemon: records, signals, feedback, stats, export, secrets, failures."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cloud.info.pg_embedded import DATA_FOLDER, EmbeddedServer
from cloud.standin import StandinServer
from router.assembly.parts import STANDIN_SERVER_MODULE
from router.client import RouterClient
from router.domain.errors import BackendUnavailableError, InvalidRequestError, NotFoundError
from router.doors.launcher import LocalDaemon
from router.domain.types import Mode
from tests.conftest import WAIT_S, ServerThread, isolated_env, make_settings, wait_until

SECRET_KEY = "sk-live-DO-NOT-LEAK-7f3a9c2e5b1d4a6f8e0c"
MATHS = "What is 12 + 30? Reply with the number only."


def daemon_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = isolated_env(tmp_path / "home")
    env.update({
        "HYBRID_ROUTER_EDGE__MODEL": "smollm2-135m",
        "HYBRID_ROUTER_STANDIN__MODEL": "smollm2-135m", "HYBRID_ROUTER_EDGE__N_CTX": "2048",
        "HYBRID_ROUTER_STANDIN__N_CTX": "2048", "HYBRID_ROUTER_EDGE__N_THREADS": "1",
        "HYBRID_ROUTER_LEDGER__PATH": str(tmp_path / "ledger.db"), "HYBRID_ROUTER_LOGGING__LEVEL": "DEBUG",
    })
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def provider(smollm_path: Path):
    """A real OpenAI-compatible server standing in for a keyed provider (it ignores the key)."""
    server = StandinServer(smollm_path, model_alias="provider-model", n_ctx=2048, n_threads=1,
                           server_module=STANDIN_SERVER_MODULE)
    asyncio.run(server.start())
    yield server
    asyncio.run(server.stop())


def _stats_once_judged(client: RouterClient):
    """Stats after the judge's grade landed: it grades after the answer went out."""
    reports = []

    def judged() -> bool:
        reports.append(client.stats())
        return "judge" in {a.kind for m in reports[-1].modes if m.mode == Mode.EDGE_ONLY for a in m.accuracy}

    wait_until(judged, "the judge's grade of the edge answer in Stats")
    return reports[-1]


def test_requests_signals_feedback_stats_export_and_no_key_leaks(tmp_path: Path, provider: StandinServer) -> None:
    env = daemon_env(tmp_path, HYBRID_ROUTER_CLOUD__BASE_URL=provider.base_url,
                     HYBRID_ROUTER_CLOUD__API_KEY=SECRET_KEY, HYBRID_ROUTER_CLOUD__MODEL="provider-model",
                     HYBRID_ROUTER_LEDGER__JUDGE_SAMPLE_RATE="1.0")
    daemon = LocalDaemon(env=env, ready_timeout_s=WAIT_S).start()
    try:
        with daemon.client(timeout_s=120) as client:
            edge = client.generate(prompt=MATHS, mode="edge", max_tokens=8, reference_answer="42")
            cloud = client.generate(prompt=MATHS, mode="cloud", max_tokens=8, reference_answer="42")
            # llama-cpp-python's server streams no usage: the cloud's counts are the router's, and say so.
            assert [run.usage_estimated for run in edge.runs + cloud.runs] == [False, True]
            client.feedback(cloud.request_id, score=0.0, corrected_answer="42")
            client.feedback(edge.request_id, thumbs_up=True)
            with pytest.raises(NotFoundError, match="no-such-id"):
                client.feedback("no-such-id", score=1.0)
            with pytest.raises(InvalidRequestError, match="between 0 and 1"):
                client.feedback(edge.request_id, score=3.0)
            report = _stats_once_judged(client)
            by_mode = {m.mode: m for m in report.modes}
            edge_kinds = {a.kind for a in by_mode[Mode.EDGE_ONLY].accuracy}
            assert report.ledger.enabled and report.ledger.ok and report.ledger.written >= 2
            assert by_mode[Mode.EDGE_ONLY].requests == 1 and by_mode[Mode.CLOUD_ONLY].requests == 1
            assert {"reference", "feedback"} <= edge_kinds
            assert "feedback" in {a.kind for a in by_mode[Mode.CLOUD_ONLY].accuracy}
            assert by_mode[Mode.CLOUD_ONLY].cloud_share == 1.0 and by_mode[Mode.EDGE_ONLY].cloud_share == 0.0
            assert by_mode[Mode.EDGE_ONLY].edge_usd_per_1k > 0
            assert by_mode[Mode.CLOUD_ONLY].cloud_usd_per_1k > 0
            # The judge graded the edge answer with a priced cloud call: EDGE_ONLY's cloud spend is the judge's.
            edge_stats = by_mode[Mode.EDGE_ONLY]
            assert edge_stats.judge_usd_per_1k > 0 and edge_stats.cloud_usd_per_1k == edge_stats.judge_usd_per_1k
            assert edge_stats.usd_per_1k == pytest.approx(edge_stats.edge_usd_per_1k + edge_stats.judge_usd_per_1k)
    finally:
        assert daemon.stop() == 0
    db = tmp_path / "ledger.db"
    with sqlite3.connect(db) as conn:
        runs = conn.execute("SELECT backend, cost_usd, completion_tokens FROM backend_runs").fetchall()
        estimated = conn.execute("SELECT backend, usage_estimated FROM backend_runs ORDER BY backend").fetchall()
        sizes = conn.execute("SELECT edge_parameters FROM requests").fetchall()
        judged = conn.execute("SELECT s.request_id, s.source, s.detail_json FROM signals AS s "
                              "WHERE s.kind = 'judge'").fetchall()
    assert len(runs) == 2 and all(cost > 0 and tokens > 0 for _, cost, tokens in runs)
    assert estimated == [("CLOUD", 1), ("EDGE", 0)]
    # The ledger opened before the model loaded; rows still carry the edge model's size (SmolLM2-135M).
    assert len(sizes) == 2 and all(1e8 < size < 2e8 for (size,) in sizes)
    # SIGTERM let the judge finish: the edge answer was graded (greedy, the 135M judge's one-token reply is
    # a digit for this prompt), and the judge's own tokens are priced.
    assert [row[0] for row in judged] == [edge.request_id]
    assert judged[0][1] == "cloud-judge:provider-model" and json.loads(judged[0][2])["cost_usd"] > 0
    for path in tmp_path.glob("ledger.db*"):
        assert SECRET_KEY.encode() not in path.read_bytes(), f"the API key leaked into {path.name}"
    log = daemon.log_path.read_text()
    assert "request" in log and SECRET_KEY not in log
    daemon.close()

    config_env = {k: v for k, v in env.items() if k != "HYBRID_ROUTER_CLOUD__API_KEY"}
    for fmt in ("openai", "sharegpt", "dpo"):
        out = tmp_path / f"{fmt}.jsonl"
        proc = subprocess.run([sys.executable, "-m", "router", "export", "--format", fmt, "--out", str(out)],
                              env=config_env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert rows, f"{fmt}: the corrected cloud answer should make a row"
        for row in rows:
            if fmt == "openai":
                assert row["messages"][-1] == {"role": "assistant", "content": "42"}
            elif fmt == "sharegpt":
                assert [turn["from"] for turn in row["conversations"]][-1] == "gpt"
            else:
                assert set(row) >= {"prompt", "chosen", "rejected"} and row["chosen"] == "42"


def test_an_unusable_ledger_degrades_health_logs_once_and_serving_goes_on(tmp_path: Path, smollm_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the ledger's directory should be")
    caplog.set_level(logging.ERROR, logger="hybrid_router.ledger")
    server = ServerThread(make_settings({"HYBRID_ROUTER_LEDGER__ENABLED": "true",
                                         "HYBRID_ROUTER_LEDGER__PATH": str(blocker / "ledger.db")}))
    try:
        with RouterClient(server.address, timeout_s=60) as client:
            for _ in range(3):
                assert client.generate(prompt=MATHS, mode="edge", max_tokens=2).text
            report = client.stats()
            assert report.ledger.enabled and not report.ledger.ok
            assert str(blocker) in report.ledger.reason
            with pytest.raises(BackendUnavailableError, match="ledger"):
                client.feedback("anything", score=1.0)
            with grpc.insecure_channel(server.address) as channel:
                health = health_pb2_grpc.HealthStub(channel)
                # The ledger's health is published by a watch loop: follow it until it says NOT_SERVING
                # (the stream ends at the deadline if it never does, and the assertion names what it saw).
                watched = []
                for update in health.Watch(health_pb2.HealthCheckRequest(service="router.v1.Ledger"),
                                           timeout=WAIT_S):
                    watched.append(update.status)
                    if update.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                        break
                overall = health.Check(health_pb2.HealthCheckRequest(service=""))
            assert watched[-1] == health_pb2.HealthCheckResponse.NOT_SERVING, watched
            assert overall.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.stop()
    errors = [r for r in caplog.records if r.name.startswith("hybrid_router.ledger") and r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]


def test_sigkill_loses_at_most_the_queued_writes(tmp_path: Path, smollm_path: Path) -> None:
    """A SIGKILL mid-load leaves a sound database, holding every answered request except those whose
    writes were still queued or in the open batch, and those the ledger had already dropped (a full
    queue drops a write and counts it in dropped_writes: not a loss to the kill)."""
    queue_size, batch_size, wanted = 8, 4, 40
    index_dir = tmp_path / "info"
    env = daemon_env(tmp_path, HYBRID_ROUTER_LEDGER__QUEUE_SIZE=str(queue_size),
                     HYBRID_ROUTER_LEDGER__BATCH_SIZE=str(batch_size), HYBRID_ROUTER_LOGGING__LEVEL="WARNING",
                     HYBRID_ROUTER_INFO__INDEX_DIR=str(index_dir), HYBRID_ROUTER_INFO__ENGINE="postgres")
    daemon = LocalDaemon(env=env, ready_timeout_s=WAIT_S).start()
    answered: list[str] = []  # request ids, in the order their answers came
    errors: list[BaseException] = []
    progress = threading.Condition()
    stop = threading.Event()

    def load() -> None:
        with daemon.client(timeout_s=WAIT_S) as client:
            while not stop.is_set():
                try:
                    request_id = client.generate(prompt="Hi", mode="edge", max_tokens=1).request_id
                except Exception as exc:  # after the kill: the daemon is gone
                    with progress:
                        errors.append(exc)
                        progress.notify_all()
                    return
                with progress:
                    answered.append(request_id)
                    progress.notify_all()

    workers = [threading.Thread(target=load) for _ in range(3)]
    try:
        for worker in workers:
            worker.start()
        with progress:  # as many answers as it takes the daemon, not as many as fit in a time
            progress.wait_for(lambda: len(answered) >= wanted or len(errors) == len(workers))
        assert len(answered) >= wanted, f"the load stopped after {len(answered)} answers: {errors[:1]}"
        with progress:
            before = set(answered)  # answered, so their writes were queued (or dropped) already
        with daemon.client(timeout_s=WAIT_S) as client:
            ledger = client.stats().ledger
        os.kill(daemon.process.pid, signal.SIGKILL)  # mid-load: the workers are still asking
        stop.set()
        for worker in workers:
            worker.join(WAIT_S)
    finally:
        stop.set()
        daemon.close()
        # The kill left the daemon's embedded PostgreSQL running. The next handle on that index directory
        # drops the dead daemon from the server's users, and letting go of it stops the server.
        postmaster = index_dir / DATA_FOLDER / "postmaster.pid"
        left_running = postmaster.exists()
        if left_running:
            with contextlib.suppress(Exception):  # a failure here must not hide the test's own
                EmbeddedServer(index_dir).release()
    assert left_running, "the daemon ran no embedded PostgreSQL (info.engine = postgres): nothing was left to stop"
    assert not postmaster.exists(), "the killed daemon's embedded PostgreSQL outlived the next handle on it"
    with sqlite3.connect(tmp_path / "ledger.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {row[0] for row in conn.execute("SELECT id FROM requests")}
    # Stored but never answered: only the requests in flight when the kill came, one per worker.
    assert len(stored - set(answered)) <= len(workers)
    # Of the requests answered before the Stats call, those neither stored nor counted as dropped were
    # lost to the kill: at most a full queue and an open batch.
    lost = len(before - stored) - ledger.dropped_writes
    assert lost <= queue_size + batch_size, (
        f"{len(before)} answered before the kill, {len(before & stored)} stored, {ledger.dropped_writes} dropped")
