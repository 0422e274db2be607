"""The core's request path, with the fault-injection backend in place of a model."""
import pytest

from router.config import ServerSettings
from router.core import Backends, Router
from router.errors import BackendUnavailableError, NotReadyError
from router.fault_injection import MODEL_NAME, FixedLatencyFaultInjectionBackend
from router.modes import builtin_modes
from router.pricing import CostModel
from router.types import BackendKind, ChatMessage, GenerateRequest, GenerateResult, Mode, TextDelta

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
