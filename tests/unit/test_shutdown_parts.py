"""The parts of a bounded shutdown, without a model: cutting in-flight calls, a close that overruns,
and a SIGTERM remembered during start-up."""
from __future__ import annotations

import asyncio
import signal
import threading

import pytest

from cloud.openai_backend import OpenAIBackend
from router.assembly.parts import LoadedBackends, _close_in_daemon_thread
from router.domain.errors import BackendUnavailableError
from router.assembly.in_flight import InFlightCalls
from router.doors.stop_request import STOP_SIGNALS, StopRequest
from router.domain.types import ModelInfo

SHUTTING_DOWN = BackendUnavailableError("the daemon is shutting down")
NOWHERE = "http://127.0.0.1:1/v1"  # nothing listens: a client that must never be called


async def forever(started: asyncio.Event, cleaned: list[str]) -> None:
    started.set()
    try:
        await asyncio.Event().wait()
    finally:
        cleaned.append("router cleaned up")  # where the edge stops and the cloud stream closes


def test_a_call_cut_while_it_awaits_the_router_gets_the_cut_error_after_the_router_cleaned_up() -> None:
    async def scenario() -> None:
        calls = InFlightCalls()
        started, cleaned, seen = asyncio.Event(), [], {}

        async def handler() -> None:
            with calls.track() as call:
                try:
                    await call.run(lambda: forever(started, cleaned))
                except BackendUnavailableError as exc:
                    seen["error"] = exc
                    seen["cancelling"] = asyncio.current_task().cancelling()

        task = asyncio.create_task(handler())
        await started.wait()
        assert not await calls.wait(0)
        assert calls.cut(SHUTTING_DOWN) == 1
        await task
        assert seen == {"error": SHUTTING_DOWN, "cancelling": 0}  # the handler can still answer
        assert cleaned == ["router cleaned up"]
        assert await calls.wait(0) and len(calls) == 0

    asyncio.run(scenario())


def test_a_call_cut_between_two_steps_stops_before_the_next_without_being_cancelled() -> None:
    async def scenario() -> None:
        calls = InFlightCalls()
        steps: list[str] = []

        async def step(name: str) -> None:
            steps.append(name)

        with calls.track() as call:
            await call.run(lambda: step("first"))
            calls.cut(SHUTTING_DOWN)  # as if the task were in gRPC's write of the first message
            with pytest.raises(BackendUnavailableError):
                await call.run(lambda: step("second"))
            assert asyncio.current_task().cancelling() == 0
        assert steps == ["first"]

    asyncio.run(scenario())


def test_a_call_that_starts_after_the_cut_is_stopped_at_once() -> None:
    async def scenario() -> None:
        calls = InFlightCalls()
        calls.cut(SHUTTING_DOWN)
        with calls.track() as call:
            with pytest.raises(BackendUnavailableError):
                await call.run(lambda: asyncio.sleep(0))  # any step at all: it must never start

    asyncio.run(scenario())


def test_a_cancellation_that_is_not_a_cut_passes_through() -> None:
    async def scenario() -> None:
        calls = InFlightCalls()
        started, cleaned = asyncio.Event(), []

        async def handler() -> None:
            with calls.track() as call:
                await call.run(lambda: forever(started, cleaned))

        task = asyncio.create_task(handler())
        await started.wait()
        task.cancel()  # the client went away
        with pytest.raises(asyncio.CancelledError):
            await task
        assert cleaned == ["router cleaned up"]

    asyncio.run(scenario())


class BusyEdgeFaultInjection:
    """Fault injection: an edge whose close blocks until released, like llama.cpp in the middle of a prompt."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def close(self) -> None:
        self.release.wait(60)  # bounded, so that a close that waits for it fails the test, not hangs it


def test_backends_close_reports_an_edge_that_did_not_stop_within_the_budget() -> None:
    edge = BusyEdgeFaultInjection()
    cloud = OpenAIBackend(base_url=NOWHERE, api_key=None, model="cloud")  # the real client, never called
    backends = LoadedBackends(edge=edge, cloud=cloud, edge_info=ModelInfo(name="edge"),
                              cloud_info=ModelInfo(name="cloud"))
    try:
        assert asyncio.run(backends.close(timeout_s=0.05)) is False
    finally:
        edge.release.set()
    assert cloud._client.is_closed()  # the busy edge did not keep the cloud's connections open


def test_a_close_in_a_daemon_thread_returns_its_outcome() -> None:
    def broken() -> None:
        raise OSError("cannot free the model")

    assert asyncio.run(_close_in_daemon_thread(lambda: None, timeout_s=60)) is True
    with pytest.raises(OSError, match="cannot free the model"):
        asyncio.run(_close_in_daemon_thread(broken, timeout_s=60))


def test_a_stop_signal_before_the_event_loop_is_remembered_not_fatal() -> None:
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    stop = StopRequest()
    try:
        stop.install()
        assert all(signal.getsignal(signum) == stop._record for signum in STOP_SIGNALS)  # else SIGTERM kills pytest
        assert not stop.requested
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGINT)
        assert stop.requested and stop.signal is signal.SIGTERM  # the first one is kept
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
