"""SIGTERM through the real daemon process: shutdown within its documented bound, and a clean stop
at any point of start-up."""
from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

import pytest

from cloud.fault_injection_server import Fault, FaultInjectionOpenAIServer
from router.domain.errors import BackendUnavailableError
from router.doors.launcher import LocalDaemon
from tests.conftest import WAIT_S, isolated_env, wait_until

GRACE_S = 1.0
FLUSH_S = 3.0
# The daemon's bound (docs/usage.md: SIGTERM to exit within grace_period_s + shutdown_flush_s) starts when its
# handler runs and ends when its drain returns; signal delivery and the interpreter's own exit come on top.
# docs/development.md, "Test bounds", gives this slack and what it was measured against.
SLACK_S = 2.0
BOUND_S = GRACE_S + FLUSH_S + SLACK_S
# The 135M model counts on for well over a thousand tokens: still talking when the grace period ends.
LONG_PROMPT = "Write the numbers from 1 to 1000, separated by commas."
LONG_MAX_TOKENS = 1900  # with the prompt, within the test edge's n_ctx of 2048
SIGTERM_BIT = 1 << (signal.SIGTERM - 1)


def serve_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """The environment of a daemon with the test model as edge and stand-in, a short grace period and
    flush budget, a ledger in tmp_path, and a marker its children inherit (to find any left behind)."""
    env = isolated_env(tmp_path / "home")
    env.update({
        "HYBRID_ROUTER_EDGE__MODEL": "smollm2-135m",
        "HYBRID_ROUTER_STANDIN__MODEL": "smollm2-135m", "HYBRID_ROUTER_EDGE__N_CTX": "2048",
        "HYBRID_ROUTER_STANDIN__N_CTX": "2048", "HYBRID_ROUTER_EDGE__N_THREADS": "1",
        "HYBRID_ROUTER_STANDIN__N_THREADS": "1", "HYBRID_ROUTER_LEDGER__PATH": str(tmp_path / "ledger.db"),
        "HYBRID_ROUTER_SERVER__GRACE_PERIOD_S": str(GRACE_S), "HYBRID_ROUTER_SERVER__SHUTDOWN_FLUSH_S": str(FLUSH_S),
        "HYBRID_ROUTER_LOGGING__LEVEL": "INFO", "SHUTDOWN_TEST_MARKER": uuid.uuid4().hex,
    })
    env.update({f"HYBRID_ROUTER_{key}": value for key, value in settings.items()})
    return env


def processes_with(env: dict[str, str]) -> list[int]:
    """Live processes (the daemon's children included) started with this test's marker."""
    marker = f"SHUTDOWN_TEST_MARKER={env['SHUTDOWN_TEST_MARKER']}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            alive = (entry / "stat").read_text().split(")")[-1].split()[0] != "Z"
            if alive and marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours
            continue
    return found


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found |= {int(child) for child in (task / "children").read_text().split()}
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
    return found


def recorded_ids(ledger: Path) -> set[str]:
    with sqlite3.connect(ledger) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM requests")}


def signal_and_time_the_exit(process: subprocess.Popen) -> tuple[int, float]:
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        status = process.wait(BOUND_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the daemon was still running {BOUND_S:g} s after SIGTERM "
                    f"(grace {GRACE_S:g} s + flush budget {FLUSH_S:g} s + {SLACK_S:g} s slack)")
    exited_after = time.monotonic() - signalled
    print(f"SIGTERM to exit: {exited_after:.2f} s (bound {GRACE_S + FLUSH_S:g} s)")
    return status, exited_after


def test_sigterm_with_a_long_generation_in_flight_exits_within_grace_plus_flush(
        tmp_path: Path, smollm_path: Path) -> None:
    env = serve_env(tmp_path)
    with LocalDaemon(env=env, ready_timeout_s=WAIT_S) as daemon:
        standin = children(daemon.process.pid)
        assert standin, "the daemon should have started the stand-in as a child"
        with daemon.client(timeout_s=WAIT_S) as client:
            answered = {client.generate(prompt="Say hi.", mode=mode, max_tokens=4).request_id
                        for mode in ("edge", "cloud")}
            flowing = threading.Event()
            outcome: dict = {"deltas": 0}

            def consume() -> None:
                try:
                    with client.stream(prompt=LONG_PROMPT, mode="edge", max_tokens=LONG_MAX_TOKENS) as stream:
                        for _ in stream:
                            outcome["deltas"] += 1
                            flowing.set()
                    outcome["result"] = stream.result
                except Exception as exc:  # recorded for the assertions below
                    outcome["error"] = exc
                finally:
                    flowing.set()

            worker = threading.Thread(target=consume)
            worker.start()
            assert flowing.wait(WAIT_S)
            status, exited_after = signal_and_time_the_exit(daemon.process)
            worker.join(WAIT_S)
        log = daemon.log_path.read_text()
    assert status == 0, log[-3000:]
    assert exited_after <= BOUND_S
    assert "result" not in outcome, "the long generation should still have been running at the end of the grace"
    error = outcome.get("error")
    assert isinstance(error, BackendUnavailableError), repr(error)
    assert "shutting down" in error.message and "server.grace_period_s" in error.message
    assert outcome["deltas"] >= 1
    assert "Traceback" not in log
    assert '"status": "cancelled"' in log
    # The stopped request is in the ledger too, for the edge time it spent: cancelled, served by no one.
    ledger = tmp_path / "ledger.db"
    stopped = recorded_ids(ledger) - answered
    assert answered <= recorded_ids(ledger) and len(stopped) == 1
    with sqlite3.connect(ledger) as conn:
        row = conn.execute("SELECT finish_reason, served_by, edge_cost_usd FROM requests WHERE id = ?",
                           tuple(stopped)).fetchone()
    assert row[:2] == ("cancelled", "UNSPECIFIED") and row[2] > 0
    assert not processes_with(env), "a child of the daemon outlived it"
    assert all(not Path(f"/proc/{pid}").exists() for pid in standin)


def test_a_grading_call_that_hangs_cannot_hold_the_exit_past_the_bound(tmp_path: Path, smollm_path: Path) -> None:
    with FaultInjectionOpenAIServer(hang_s=120) as cloud:
        cloud.inject(Fault.HANG, times=2)
        env = serve_env(tmp_path, CLOUD__BASE_URL=cloud.base_url, CLOUD__API_KEY="sk-test-hang",
                        CLOUD__MODEL="fault-model", CLOUD__MAX_RETRIES="0", CLOUD__TIMEOUT_S="120",
                        LEDGER__JUDGE_SAMPLE_RATE="1")
        with LocalDaemon(env=env, ready_timeout_s=WAIT_S) as daemon:
            with daemon.client(timeout_s=WAIT_S) as client:
                answered = {client.generate(prompt="Say hi.", mode="edge", max_tokens=4).request_id
                            for _ in range(2)}
            wait_until(lambda: cloud.requests_seen == 2, "both answers waiting for their grade")
            status, exited_after = signal_and_time_the_exit(daemon.process)
            log = daemon.log_path.read_text()
    assert status == 0, log[-3000:]
    assert exited_after <= BOUND_S
    assert "Traceback" not in log
    assert recorded_ids(tmp_path / "ledger.db") == answered  # the request rows went first


# -- SIGTERM during start-up -----------------------------------------------------------------

def catches_sigterm(pid: int, log: Path) -> bool:
    """The daemon has its own SIGTERM handler: from this moment on a SIGTERM must stop it cleanly."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & SIGTERM_BIT)
    return False


def imports_the_server(pid: int, log: Path) -> bool:
    """SQLite's library is mapped: the daemon is importing the server's modules (the ledger's among
    them), after the CLI has parsed its arguments and before the server runs its event loop."""
    return "_sqlite3" in Path(f"/proc/{pid}/maps").read_text()


def listening(pid: int, log: Path) -> bool:
    return '"msg": "listening"' in log.read_text()


def loading_models(pid: int, log: Path) -> bool:
    """The stand-in child is running and the models are loading."""
    return "starting the local cloud stand-in" in log.read_text() and bool(children(pid))


def wait_for(moment: Callable[[int, Path], bool], process: subprocess.Popen, log: Path) -> None:
    """Polls for the moment, finely: some moments last only milliseconds. The pause orders nothing."""
    deadline = time.monotonic() + WAIT_S
    while not moment(process.pid, log):
        assert process.poll() is None, f"the daemon exited before the moment to signal it:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"the moment to signal never came:\n{log.read_text()}"
        time.sleep(0.002)  # a poll: the moment decides, the pause orders nothing


def sigterm_at(moment: Callable[[int, Path], bool], command: list[str], env: dict[str, str], tmp_path: Path,
               before_signal: Callable[[int], object] = lambda pid: None) -> tuple[int, str]:
    """Runs `hybrid-router COMMAND...`, sends SIGTERM at `moment`, and returns its exit status and stderr."""
    log = tmp_path / "stderr.log"
    with open(log, "wb") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "router", *command], stdout=subprocess.DEVNULL,
                                   stderr=stderr, env=env)
    try:
        wait_for(moment, process, log)
        before_signal(process.pid)
        process.send_signal(signal.SIGTERM)
        status = process.wait(WAIT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return status, log.read_text()


@pytest.mark.parametrize("moment", [catches_sigterm, imports_the_server, listening, loading_models],
                         ids=lambda moment: moment.__name__)
def test_sigterm_during_startup_stops_cleanly(tmp_path: Path, smollm_path: Path,
                                              moment: Callable[[int, Path], bool]) -> None:
    env = serve_env(tmp_path)
    standin: set[int] = set()
    status, output = sigterm_at(moment, ["serve", "--listen", f"unix:{tmp_path}/router.sock"], env, tmp_path,
                                before_signal=lambda pid: standin.update(children(pid)))
    assert status == 0, output
    assert "Traceback" not in output
    assert "stopped during start-up" in output
    assert not processes_with(env), "a child of the daemon outlived it"
    assert all(not Path(f"/proc/{pid}").exists() for pid in standin)


def info_listening(pid: int, log: Path) -> bool:
    return '"msg": "info service listening"' in log.read_text()


@pytest.mark.parametrize("moment", [catches_sigterm, info_listening], ids=lambda moment: moment.__name__)
def test_info_serve_stops_cleanly_on_sigterm_from_its_first_moment(tmp_path: Path,
                                                                    moment: Callable[[int, Path], bool],
                                                                    new_info_index_dir: Callable[[str], Path]) -> None:
    """`hybrid-router info serve` takes SIGTERM before its slow imports (router/doors/entry.py), as
    `serve` does, and drains to exit status 0 whenever the signal comes."""
    env = serve_env(tmp_path, INFO__INDEX_DIR=str(new_info_index_dir("info-serve")))
    status, output = sigterm_at(moment, ["info", "serve", "--listen", f"unix:{tmp_path}/info.sock"], env, tmp_path)
    assert status == 0, output
    assert "Traceback" not in output
    assert "info service stopped" in output or "stopped during start-up" in output, output
    if moment is catches_sigterm:  # before the server existed: it never opened the index
        assert "stopped during start-up: a stop was requested before the index was open" in output
