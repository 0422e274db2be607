"""The core's request path, with the fault-injection backend in place of a model."""
import asyncio
import dataclasses
from pathlib import Path

import pytest

from router.domain.config import ServerSettings
from router.core.engine import Backends, Router
from router.domain.errors import BackendUnavailableError, NotReadyError, RequestIdInUseError
from router.core.ledger import Ledger
from router.core.fault_injection import MODEL_NAME, FixedLatencyFaultInjectionBackend
from router.core.modes import builtin_modes
from router.domain.pricing import CostModel
from router.domain.types import BackendKind, ChatMessage, GenerateRequest, GenerateResult, Mode, TextDelta

COSTS = CostModel(0.15, 0.6, 1e8, 3e-10, 0.15)


class RecordingSink:
    def __init__(self) -> None:
        self.results: list[GenerateResult] = []

    def record(self, request: GenerateRequest, result: GenerateResult) -> None:
        self.results.append(result)


def make_router(edge: FixedLatencyFaultInjectionBackend, sink: RecordingSink) -> Router:
    return Router(settings=ServerSettings(), costs=COSTS, modes=builtin_modes(), backends=Backends(edge=edge),
                  sinks=(sink,), ready=True)


REQUEST = GenerateRequest(messages=(ChatMessage("user", "hi there"),), mode=Mode.EDGE_ONLY, max_tokens=3,
                          request_id="r1")


async def test_stream_then_result_and_one_record() -> None:
    sink = RecordingSink()
    events = [event async for event in make_router(FixedLatencyFaultInjectionBackend(latency_s=0.001), sink).stream(REQUEST)]
    deltas, result = events[:-1], events[-1]
    assert all(isinstance(d, TextDelta) for d in deltas) and len(deltas) == 3
    assert isinstance(result, GenerateResult) and result.text == " ok ok ok" and result.finish_reason == "length"
    assert result.served_by == BackendKind.EDGE and result.edge_model == MODEL_NAME
    assert result.runs[0].mean_logprob == pytest.approx(-0.1)
    assert result.latency.edge_s > 0 and sink.results == [result]


async def test_a_failing_backend_is_a_typed_error_and_nothing_is_recorded() -> None:
    sink = RecordingSink()
    with pytest.raises(BackendUnavailableError, match="injected fault"):
        await make_router(FixedLatencyFaultInjectionBackend(latency_s=0, fail=True), sink).generate(REQUEST)
    assert sink.results == []


async def test_not_ready_until_loaded() -> None:
    router = make_router(FixedLatencyFaultInjectionBackend(latency_s=0), RecordingSink())
    router.ready = False
    with pytest.raises(NotReadyError):
        await router.generate(REQUEST)


# -- a client-supplied request_id must be new ------------------------------------------------

def ledger_router(tmp_path: Path, edge: FixedLatencyFaultInjectionBackend) -> tuple[Router, Ledger]:
    ledger = Ledger(tmp_path / "ledger.db")
    ledger.open()
    router = Router(settings=ServerSettings(), costs=COSTS, modes=builtin_modes(), backends=Backends(edge=edge),
                    sinks=(ledger,), recorded_ids=ledger, ready=True)
    return router, ledger


async def test_an_id_already_recorded_is_refused_queued_or_written(tmp_path: Path) -> None:
    router, ledger = ledger_router(tmp_path, FixedLatencyFaultInjectionBackend(latency_s=0))
    await router.generate(REQUEST)
    with pytest.raises(RequestIdInUseError, match="request_id 'r1' is already recorded") as caught:
        await router.generate(REQUEST)  # its record may still be queued: found there
    assert "send a new request_id" in caught.value.message
    assert await asyncio.to_thread(ledger.flush)
    with pytest.raises(RequestIdInUseError):
        await router.generate(REQUEST)  # now found in the database
    await asyncio.to_thread(ledger.close)
    assert ledger.metrics.written == 1 and ledger.metrics.duplicates == 0


async def test_of_concurrent_requests_with_one_id_only_one_runs() -> None:
    sink = RecordingSink()
    router = make_router(FixedLatencyFaultInjectionBackend(latency_s=0.01), sink)
    outcomes = await asyncio.gather(*(router.generate(REQUEST) for _ in range(3)), return_exceptions=True)
    served = [o for o in outcomes if isinstance(o, GenerateResult)]
    refused = [o for o in outcomes if isinstance(o, RequestIdInUseError)]
    # Three: a refused twin must not free the id that the running one holds.
    assert (len(served), len(refused)) == (1, 2), outcomes
    assert "belongs to a request in flight" in refused[0].message
    assert len(sink.results) == 1


async def test_the_id_is_free_again_after_a_request_that_recorded_nothing(tmp_path: Path) -> None:
    router, ledger = ledger_router(tmp_path, FixedLatencyFaultInjectionBackend(latency_s=0, fail=True))
    with pytest.raises(BackendUnavailableError):
        await router.generate(REQUEST)
    router.backends = Backends(edge=FixedLatencyFaultInjectionBackend(latency_s=0))
    assert (await router.generate(REQUEST)).request_id == "r1"
    await asyncio.to_thread(ledger.close)


async def test_a_cancelled_request_frees_its_id() -> None:
    router = make_router(FixedLatencyFaultInjectionBackend(latency_s=60), RecordingSink())
    task = asyncio.create_task(router.generate(REQUEST))
    while "r1" not in router._in_flight_ids:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    router.backends = Backends(edge=FixedLatencyFaultInjectionBackend(latency_s=0))
    assert (await router.generate(REQUEST)).request_id == "r1"


async def test_requests_without_an_id_get_fresh_ones_and_are_never_refused(tmp_path: Path) -> None:
    router, ledger = ledger_router(tmp_path, FixedLatencyFaultInjectionBackend(latency_s=0.01))
    anonymous = dataclasses.replace(REQUEST, request_id="")
    results = await asyncio.gather(*(router.generate(anonymous) for _ in range(3)))
    assert len({result.request_id for result in results}) == 3
    await asyncio.to_thread(ledger.close)
    assert ledger.metrics.written == 3
