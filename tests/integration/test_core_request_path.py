"""The core's request path on the 135M edge, in this process: the stream, then the result and one record;
and client-supplied request ids, which must be new (refused while in flight or once recorded, free again
after a request that recorded nothing). The same path when the backend fails is in
tests/unit/test_core_with_fault_injection.py."""
import asyncio
import dataclasses
from pathlib import Path

import pytest

from edge.llama_backend import LlamaBackend
from router.core.engine import Backends, Router
from router.core.fault_injection import FixedLatencyFaultInjectionBackend
from router.core.ledger import Ledger
from router.core.modes import builtin_modes
from router.domain.config import ServerSettings
from router.domain.errors import BackendUnavailableError, RequestIdInUseError
from router.domain.pricing import CostModel
from router.domain.types import BackendKind, ChatMessage, GenerateRequest, GenerateResult, Mode, TextDelta
from tests.conftest import TEST_MODEL
from tests.hanging_fault_injection import HangingFaultInjectionBackend

COSTS = CostModel(0.15, 0.6, 1.35e8, 7e-10, 0.15)
# Far longer than max_tokens: the model is still talking when the budget ends.
REQUEST = GenerateRequest(messages=(ChatMessage("user", "Count from one to two hundred in words."),),
                          mode=Mode.EDGE_ONLY, max_tokens=3, temperature=0.0, request_id="r1")


class RecordingSink:
    def __init__(self) -> None:
        self.results: list[GenerateResult] = []

    def record(self, request: GenerateRequest, result: GenerateResult) -> None:
        self.results.append(result)


def make_router(edge: object, *sinks: object, recorded_ids: object = None) -> Router:
    return Router(settings=ServerSettings(), costs=COSTS, modes=builtin_modes(), backends=Backends(edge=edge),
                  sinks=sinks, recorded_ids=recorded_ids, ready=True)


def ledger_router(tmp_path: Path, edge: object) -> tuple[Router, Ledger]:
    ledger = Ledger(tmp_path / "ledger.db")
    ledger.open()
    return make_router(edge, ledger, recorded_ids=ledger), ledger


async def test_stream_then_result_and_one_record(smollm_edge: LlamaBackend) -> None:
    sink = RecordingSink()
    events = [event async for event in make_router(smollm_edge, sink).stream(REQUEST)]
    deltas, result = events[:-1], events[-1]
    assert deltas and all(isinstance(d, TextDelta) and d.backend == BackendKind.EDGE for d in deltas)
    assert isinstance(result, GenerateResult) and result.finish_reason == "length"
    assert result.text == "".join(d.text for d in deltas) and result.runs[0].completion_tokens == 3
    assert result.served_by == BackendKind.EDGE and result.edge_model == TEST_MODEL
    assert result.runs[0].mean_logprob < 0
    assert result.latency.edge_s > 0 and sink.results == [result]


async def test_an_id_already_recorded_is_refused_queued_or_written(tmp_path: Path, smollm_edge: LlamaBackend) -> None:
    router, ledger = ledger_router(tmp_path, smollm_edge)
    await router.generate(REQUEST)
    with pytest.raises(RequestIdInUseError, match="request_id 'r1' is already recorded") as caught:
        await router.generate(REQUEST)  # its record may still be queued: found there
    assert "send a new request_id" in caught.value.message
    assert await asyncio.to_thread(ledger.flush)
    with pytest.raises(RequestIdInUseError):
        await router.generate(REQUEST)  # now found in the database
    await asyncio.to_thread(ledger.close)
    assert ledger.metrics.written == 1 and ledger.metrics.duplicates == 0


async def test_of_concurrent_requests_with_one_id_only_one_runs(smollm_edge: LlamaBackend) -> None:
    sink = RecordingSink()
    router = make_router(smollm_edge, sink)
    outcomes = await asyncio.gather(*(router.generate(REQUEST) for _ in range(3)), return_exceptions=True)
    served = [o for o in outcomes if isinstance(o, GenerateResult)]
    refused = [o for o in outcomes if isinstance(o, RequestIdInUseError)]
    # Three: a refused twin must not free the id that the running one holds.
    assert (len(served), len(refused)) == (1, 2), outcomes
    assert "belongs to a request in flight" in refused[0].message
    assert len(sink.results) == 1


async def test_the_id_is_free_again_after_a_request_that_recorded_nothing(tmp_path: Path,
                                                                        smollm_edge: LlamaBackend) -> None:
    router, ledger = ledger_router(tmp_path, FixedLatencyFaultInjectionBackend(latency_s=0, fail=True))
    with pytest.raises(BackendUnavailableError):
        await router.generate(REQUEST)
    router.backends = Backends(edge=smollm_edge)
    assert (await router.generate(REQUEST)).request_id == "r1"
    await asyncio.to_thread(ledger.close)
    assert ledger.metrics.written == 1


async def test_a_cancelled_request_frees_its_id(smollm_edge: LlamaBackend) -> None:
    hanging = HangingFaultInjectionBackend()
    router = make_router(hanging, RecordingSink())
    task = asyncio.create_task(router.generate(REQUEST))
    await hanging.hanging.wait()  # the request holds its id, inside the backend
    assert "r1" in router._in_flight_ids
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    router.backends = Backends(edge=smollm_edge)
    assert (await router.generate(REQUEST)).request_id == "r1"


async def test_requests_without_an_id_get_fresh_ones_and_are_never_refused(tmp_path: Path,
                                                                           smollm_edge: LlamaBackend) -> None:
    router, ledger = ledger_router(tmp_path, smollm_edge)
    anonymous = dataclasses.replace(REQUEST, request_id="")
    results = await asyncio.gather(*(router.generate(anonymous) for _ in range(3)))
    assert len({result.request_id for result in results}) == 3
    await asyncio.to_thread(ledger.close)
    assert ledger.metrics.written == 3
