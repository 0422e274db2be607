"""A backend's bounded queue (router/core/backend_queue.py): calls beyond it are refused at once, and a
call's place is given back exactly once, however its stream ends."""
from __future__ import annotations

import asyncio
from typing import Any, Mapping, Optional, Sequence

import pytest

from router.assembly.limits import build_backend_queues
from router.core.backend_queue import QueuedBackend
from router.core.backends import CompletionRecord
from router.core.fault_injection import FixedLatencyFaultInjectionBackend
from router.domain.pricing import CostModel
from router.domain.types import Mode
from tests.conftest import make_settings

MESSAGES = [{"role": "user", "content": "hi there"}]
COSTS = CostModel(0.15, 0.6, 1e8, 3e-10, 0.15)


def queued(inner: Any, *, capacity: int = 1, max_waiting: int = 1) -> QueuedBackend:
    return QueuedBackend(inner, capacity=capacity, max_waiting=max_waiting, label="edge")


def open_stream(backend: QueuedBackend, **options: Any):
    return backend.stream(MESSAGES, max_tokens=4, temperature=0.0, **options)


async def read_all(stream) -> list[str]:
    return [delta.text async for delta in stream]


async def test_an_error_that_ends_the_stream_gives_its_place_back_once() -> None:
    backend = queued(FixedLatencyFaultInjectionBackend(latency_s=0, fail_after_tokens=1))
    stream = open_stream(backend)
    with pytest.raises(Exception, match="injected fault"):
        await read_all(stream)
    assert backend.in_flight == 0 and stream.completion.finish_reason == "error"
    await stream.aclose()
    assert backend.in_flight == 0


class BlockingStreamFaultInjection:
    """A stream whose read blocks until cancelled, and which (like the edge's) has not ended then: the
    model runs on until aclose()."""

    def __init__(self) -> None:
        self.completion: Optional[CompletionRecord] = None
        self.reading = asyncio.Event()

    def __aiter__(self) -> "BlockingStreamFaultInjection":
        return self

    async def __anext__(self) -> Any:
        self.reading.set()
        await asyncio.Event().wait()

    async def aclose(self) -> None:
        self.completion = CompletionRecord(text="", model="blocking", prompt_tokens=0, completion_tokens=0,
                                             queue_s=0.0, ttft_s=0.0, total_s=0.0, finish_reason="cancelled")


class BlockingBackendFaultInjection:
    name = "blocking-fault-injection"

    def __init__(self) -> None:
        self.streams: list[BlockingStreamFaultInjection] = []
        self.options: list[Mapping[str, Any]] = []
        self.n_ctx = 321

    def stream(self, messages: Sequence[Mapping[str, str]], **options: Any) -> BlockingStreamFaultInjection:
        self.options.append(options)
        self.streams.append(BlockingStreamFaultInjection())
        return self.streams[-1]


async def test_a_cancelled_read_keeps_its_place_until_the_stream_is_closed() -> None:
    inner = BlockingBackendFaultInjection()
    backend = queued(inner)
    stream = open_stream(backend)
    reader = asyncio.ensure_future(stream.__anext__())
    await inner.streams[0].reading.wait()
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert backend.in_flight == 1  # not ended: the backend may still be working for it
    await stream.aclose()
    assert backend.in_flight == 0


async def test_a_close_cut_short_still_gives_the_place_back() -> None:
    class CloseFailsFaultInjection(BlockingStreamFaultInjection):
        async def aclose(self) -> None:
            raise asyncio.CancelledError

    inner = BlockingBackendFaultInjection()
    backend = queued(inner)
    inner_stream = CloseFailsFaultInjection()
    inner.stream = lambda messages, **options: inner_stream  # type: ignore[method-assign]
    stream = open_stream(backend)
    with pytest.raises(asyncio.CancelledError):
        await stream.aclose()
    assert backend.in_flight == 0


async def test_options_and_attributes_pass_through() -> None:
    inner = BlockingBackendFaultInjection()
    backend = queued(inner)
    stream = open_stream(backend, grammar="root ::= \"x\"", seed=7)
    assert inner.options == [{"max_tokens": 4, "temperature": 0.0, "grammar": "root ::= \"x\"", "seed": 7}]
    assert backend.name == "blocking-fault-injection" and backend.n_ctx == 321
    with pytest.raises(AttributeError):
        backend.no_such_attribute  # noqa: B018
    await stream.aclose()


async def test_a_refusal_inside_the_inner_stream_call_takes_no_place() -> None:
    backend = queued(FixedLatencyFaultInjectionBackend(latency_s=0, fail=True), capacity=1, max_waiting=0)
    with pytest.raises(TypeError):
        backend.stream(MESSAGES, max_tokens=4, temperature=0.0, no_such_option=1)
    assert backend.in_flight == 0


def test_the_daemon_sizes_each_queue() -> None:
    settings = make_settings({"HYBRID_ROUTER_LIMITS__MAX_QUEUED_PER_BACKEND": "5",
                              "HYBRID_ROUTER_CLOUD__MAX_CONCURRENCY": "3"})
    edge, cloud = build_backend_queues(settings, edge=object(), cloud=object())  # sized, never called
    assert (edge.capacity, edge.max_waiting, edge.label) == (1, 5, "edge")
    assert (cloud.capacity, cloud.max_waiting, cloud.label) == (3, 5, "cloud")


