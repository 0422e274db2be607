"""Client-supplied request ids through the real daemon: a reused id is refused with ALREADY_EXISTS
(so no answer, and no cloud spend, is dropped from the ledger as a duplicate), an id outside the
rules with INVALID_ARGUMENT. Without the ledger only ids in flight are refused."""
from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Iterator

import pytest

from cloud.fault_injection_server import Fault, FaultInjectionOpenAIServer
from router.client import AsyncRouterClient, RouterClient
from router.domain.errors import BackendUnavailableError, InvalidRequestError, RequestIdInUseError, RouterError
from router.domain.types import Mode
from tests.conftest import WAIT_S, ServerThread, make_settings, wait_until

pytestmark = pytest.mark.integration



@pytest.fixture(scope="module")
def faulty_cloud() -> Iterator[FaultInjectionOpenAIServer]:
    # A configured cloud also keeps the daemon from starting the stand-in.
    with FaultInjectionOpenAIServer(hang_s=WAIT_S) as cloud:
        yield cloud


def start_daemon(cloud: FaultInjectionOpenAIServer, ledger_path: Path | None) -> ServerThread:
    ledger = ({"HYBRID_ROUTER_LEDGER__ENABLED": "true", "HYBRID_ROUTER_LEDGER__PATH": str(ledger_path)}
              if ledger_path is not None else {"HYBRID_ROUTER_LEDGER__ENABLED": "false"})
    return ServerThread(make_settings({
        **ledger, "HYBRID_ROUTER_CLOUD__BASE_URL": cloud.base_url, "HYBRID_ROUTER_CLOUD__API_KEY": "sk-test-unused",
        "HYBRID_ROUTER_CLOUD__MAX_RETRIES": "0", "HYBRID_ROUTER_CLOUD__TIMEOUT_S": "30",
    }))


@pytest.fixture(scope="module")
def ledger_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ledger") / "ledger.db"


@pytest.fixture(scope="module")
def daemon_with_ledger(smollm_path: Path, ledger_path: Path,
                       faulty_cloud: FaultInjectionOpenAIServer) -> Iterator[ServerThread]:
    server = start_daemon(faulty_cloud, ledger_path)
    yield server
    server.stop()


def ask(client: RouterClient, request_id: str):
    return client.generate(prompt="Say hi.", mode="edge", max_tokens=2, request_id=request_id)


def edge_requests_recorded(client: RouterClient) -> int:
    """From Stats, which first waits for the ledger to commit what is queued."""
    return sum(summary.requests for summary in client.stats().modes if summary.mode == Mode.EDGE_ONLY)


def test_a_reused_id_is_refused_and_the_first_answer_is_kept(daemon_with_ledger: ServerThread) -> None:
    with RouterClient(daemon_with_ledger.address, timeout_s=120) as client:
        recorded_before = edge_requests_recorded(client)
        first = ask(client, "reused-1")
        assert first.request_id == "reused-1"
        with pytest.raises(RequestIdInUseError) as caught:
            ask(client, "reused-1")
        assert "'reused-1'" in caught.value.message and "send a new request_id" in caught.value.message
        with pytest.raises(RequestIdInUseError):  # the streaming call too
            with client.stream(prompt="Say hi.", mode="edge", max_tokens=2, request_id="reused-1") as stream:
                list(stream)
        assert ask(client, "reused-2").request_id == "reused-2"  # the daemon serves on
        # reused-1 once and reused-2: the refused requests were neither served nor recorded.
        assert edge_requests_recorded(client) == recorded_before + 2


@pytest.mark.parametrize("with_ledger", [True, False], ids=["with a ledger", "without a ledger"])
def test_an_id_in_flight_is_refused_and_free_again_when_its_request_recorded_nothing(
        smollm_path: Path, tmp_path: Path, with_ledger: bool) -> None:
    request_id = "in-flight"
    # A cloud of this test's own, whose hang lasts until the test ends it by stopping the server.
    with FaultInjectionOpenAIServer(hang_s=WAIT_S) as cloud:
        daemon = start_daemon(cloud, tmp_path / "ledger.db" if with_ledger else None)
        try:
            cloud.inject(Fault.HANG)
            outcome: dict[str, RouterError] = {}

            def first_request() -> None:
                with RouterClient(daemon.address, timeout_s=WAIT_S) as first_client:
                    try:
                        first_client.generate(prompt="hi", mode="cloud", max_tokens=2, request_id=request_id)
                    except RouterError as exc:  # asserted below
                        outcome["error"] = exc

            first = threading.Thread(target=first_request)
            first.start()
            # From the moment the cloud has it until the hang ends, the first request is in flight.
            wait_until(lambda: cloud.requests_seen >= 1, "the first request reaching the cloud")
            with RouterClient(daemon.address, timeout_s=WAIT_S) as client:
                with pytest.raises(RequestIdInUseError, match="belongs to a request in flight"):
                    ask(client, request_id)
                cloud.stop()  # the hang ends: the connection drops before any token, nothing was spent
                first.join(WAIT_S)
                assert isinstance(outcome.get("error"), BackendUnavailableError), outcome
                assert ask(client, request_id).request_id == request_id  # the failed request recorded nothing
                if with_ledger:
                    with pytest.raises(RequestIdInUseError, match="already recorded"):
                        ask(client, request_id)
                else:  # nothing records an answer, so only an id in flight is in use
                    assert ask(client, request_id).request_id == request_id
        finally:
            daemon.stop()


async def test_of_two_concurrent_requests_with_one_id_one_is_refused(daemon_with_ledger: ServerThread) -> None:
    async with AsyncRouterClient(daemon_with_ledger.address, timeout_s=120) as client:
        outcomes = await asyncio.gather(
            *(client.generate(prompt="Count to five.", mode="edge", max_tokens=8, request_id="twin")
              for _ in range(2)), return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, RequestIdInUseError)]
    served = [o for o in outcomes if not isinstance(o, BaseException)]
    assert (len(served), len(refused)) == (1, 1), outcomes


def test_an_id_in_the_database_is_refused_by_a_daemon_that_never_saw_it(
        daemon_with_ledger: ServerThread, ledger_path: Path, faulty_cloud: FaultInjectionOpenAIServer) -> None:
    with RouterClient(daemon_with_ledger.address, timeout_s=120) as client:
        ask(client, "before-restart")
        edge_requests_recorded(client)  # Stats commits what is queued
    second = start_daemon(faulty_cloud, ledger_path)  # a new daemon on the same ledger file
    try:
        with RouterClient(second.address, timeout_s=120) as client:
            with pytest.raises(RequestIdInUseError, match="already recorded"):
                ask(client, "before-restart")
    finally:
        second.stop()


def test_an_oversized_or_odd_id_is_invalid(daemon_with_ledger: ServerThread) -> None:
    with RouterClient(daemon_with_ledger.address, timeout_s=120) as client:
        with pytest.raises(InvalidRequestError, match="request_id is 10000 characters; at most 128"):
            ask(client, "x" * 10_000)
        with pytest.raises(InvalidRequestError, match="request_id may hold only"):
            ask(client, "has space")
