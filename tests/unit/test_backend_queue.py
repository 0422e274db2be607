"""A backend's bounded queue (router/core/backend_queue.py): calls beyond it are refused at once, and a
call's place is given back exactly once, however its stream ends."""
from __future__ import annotations

import asyncio
import contextlib
import gc
from typing import Any, Mapping, Optional, Sequence

import pytest

from router.assembly.limits import build_backend_queues
from router.core.backend_queue import QueuedBackend
from router.core.engine import Backends, Router
from router.core.backends import CompletionRecord
from router.core.fault_injection import FixedLatencyFaultInjectionBackend
from router.core.modes import builtin_modes
from router.domain.config import ServerSettings
from router.domain.errors import LimitExceededError
from router.domain.pricing import CostModel
from router.domain.types import ChatMessage, GenerateRequest, Mode, TextDelta
from tests.conftest import make_settings

MESSAGES = [{"role": "user", "content": "hi there"}]
COSTS = CostModel(0.15, 0.6, 1e8, 3e-10, 0.15)


def queued(inner: Any = None, *, capacity: int = 1, max_waiting: int = 1) -> QueuedBackend:
    inner = inner or FixedLatencyFaultInjectionBackend(latency_s=0, tokens=2)
    return QueuedBackend(inner, capacity=capacity, max_waiting=max_waiting, label="edge")


def open_stream(backend: QueuedBackend, **options: Any):
    return backend.stream(MESSAGES, max_tokens=4, temperature=0.0, **options)


async def read_all(stream) -> list[str]:
    return [delta.text async for delta in stream]


async def test_a_call_beyond_running_and_waiting_is_refused_at_once() -> None:
    backend = queued(capacity=1, max_waiting=1)
    first, second = open_stream(backend), open_stream(backend)
    with pytest.raises(LimitExceededError, match=r"edge backend is busy: 2 calls .*max_queued_per_backend = 1"):
        open_stream(backend)
    assert backend.in_flight == 2
    await read_all(first)  # its natural end gives its place back
    third = open_stream(backend)
    await second.aclose()
    await third.aclose()
    assert backend.in_flight == 0


async def test_a_stream_read_to_its_end_gives_its_place_back_once() -> None:
    backend = queued()
    stream = open_stream(backend)
    assert await read_all(stream) == [" ok", " ok"]
    assert backend.in_flight == 0 and stream.completion is not None
    assert await read_all(stream) == []  # read past its end
    await stream.aclose()
    assert backend.in_flight == 0


async def test_closed_unread_or_twice_gives_its_place_back_once() -> None:
    backend = queued(max_waiting=3)
    kept = open_stream(backend)
    stream = open_stream(backend)
    await stream.aclose()
    await stream.aclose()
    assert backend.in_flight == 1 and stream.completion.finish_reason == "cancelled"
    await kept.aclose()
    assert backend.in_flight == 0


async def test_an_error_that_ends_the_stream_gives_its_place_back_once() -> None:
    backend = queued(FixedLatencyFaultInjectionBackend(latency_s=0, fail_after_tokens=1))
    stream = open_stream(backend)
    with pytest.raises(Exception, match="injected fault"):
        await read_all(stream)
    assert backend.in_flight == 0 and stream.completion.finish_reason == "error"
    await stream.aclose()
    assert backend.in_flight == 0


async def test_a_stream_dropped_unclosed_gives_its_place_back_when_collected() -> None:
    backend = queued()
    stream = open_stream(backend)
    assert backend.in_flight == 1
    del stream
    gc.collect()
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
    backend = queued(capacity=1, max_waiting=0)
    with pytest.raises(TypeError):
        backend.stream(MESSAGES, max_tokens=4, temperature=0.0, no_such_option=1)
    assert backend.in_flight == 0


def test_the_daemon_sizes_each_queue() -> None:
    settings = make_settings({"HYBRID_ROUTER_LIMITS__MAX_QUEUED_PER_BACKEND": "5",
                              "HYBRID_ROUTER_CLOUD__MAX_CONCURRENCY": "3"})
    edge, cloud = build_backend_queues(settings, edge=FixedLatencyFaultInjectionBackend(latency_s=0),
                                       cloud=FixedLatencyFaultInjectionBackend(latency_s=0))
    assert (edge.capacity, edge.max_waiting, edge.label) == (1, 5, "edge")
    assert (cloud.capacity, cloud.max_waiting, cloud.label) == (3, 5, "cloud")


async def test_through_the_router_a_full_queue_is_resource_exhausted_and_records_nothing() -> None:
    backend = queued(FixedLatencyFaultInjectionBackend(latency_s=0), capacity=1, max_waiting=0)
    recorded = []

    class Sink:
        def record(self, request: GenerateRequest, result: object) -> None:
            recorded.append(result)

    router = Router(settings=ServerSettings(), costs=COSTS, modes=builtin_modes(), backends=Backends(edge=backend),
                    sinks=(Sink(),), ready=True)
    request = GenerateRequest(messages=(ChatMessage("user", "hi there"),), mode=Mode.EDGE_ONLY, max_tokens=3)
    async with contextlib.aclosing(router.stream(request)) as running:
        assert isinstance(await running.__anext__(), TextDelta)
        with pytest.raises(LimitExceededError, match="edge backend is busy"):
            await router.generate(request)
        assert len(recorded) == 0
    assert backend.in_flight == 0
    assert (await router.generate(request)).text == " ok ok ok"
