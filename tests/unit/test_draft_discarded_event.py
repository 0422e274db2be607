"""DraftDiscarded, the stream event that replaces a draft: on the wire and through the core."""
from router.doors import wire
from router.domain.config import ServerSettings
from router.core.engine import Backends, Router
from router.core.fault_injection import FixedLatencyFaultInjectionBackend
from router.domain.pricing import CostModel
from router.domain.types import (BackendKind, BackendRun, ChatMessage, Decision, DraftDiscarded, GenerateRequest,
                          GenerateResult, Latency, Mode, RunPurpose, TextDelta)
from router.v1 import router_pb2 as pb
from tests.draft_discarding_fault_injection import DraftDiscardingFaultInjectionMode

COSTS = CostModel(0.15, 0.6, 1e8, 3e-10, 0.15)
FAULT_MODE = Mode.EDGE_AGENT_CLOUD_INFO  # a mode no built-in handler serves
REQUEST = GenerateRequest(messages=(ChatMessage("user", "hi there"),), mode=FAULT_MODE, max_tokens=3)


def test_draft_discarded_round_trips_on_the_stream() -> None:
    event = DraftDiscarded(discarded=BackendKind.EDGE, next=BackendKind.CLOUD, reason="score 0.2 < 0.5")
    message = wire.stream_event_to_proto(event)
    assert message.WhichOneof("event") == "draft_discarded"
    assert wire.stream_event_from_proto(message) == event


def test_every_stream_event_round_trips_through_one_pair_of_functions() -> None:
    run = BackendRun(BackendKind.CLOUD, "m", "t", 3, 4, 0.1, 0.2, 0.3, 1e-6, "stop", None)
    result = GenerateResult("id", "t", BackendKind.CLOUD, "e", "m", (run,), 1e-6, 0.0, 1e-6,
                            Latency(0.2, 0.4, 0.0, 0.3), Decision(Mode.CLOUD_ONLY), "stop")
    for event in (TextDelta("x", BackendKind.EDGE, -0.5), DraftDiscarded(BackendKind.EDGE, BackendKind.CLOUD),
                  result):
        assert wire.stream_event_from_proto(wire.stream_event_to_proto(event)) == event


def test_an_event_from_a_newer_daemon_is_skipped_not_taken_for_empty_text() -> None:
    assert wire.stream_event_from_proto(pb.GenerateStreamResponse()) is None


def make_router(*, draft_tokens: int, cloud_latency_s: float) -> Router:
    mode = DraftDiscardingFaultInjectionMode(FAULT_MODE, draft_tokens=draft_tokens, reason="injected")
    backends = Backends(edge=FixedLatencyFaultInjectionBackend(latency_s=0.0),
                        cloud=FixedLatencyFaultInjectionBackend(latency_s=cloud_latency_s))
    return Router(settings=ServerSettings(), costs=COSTS, modes={FAULT_MODE: mode}, backends=backends, ready=True)


async def test_the_core_streams_the_draft_the_event_then_the_answer() -> None:
    events = [event async for event in make_router(draft_tokens=2, cloud_latency_s=0.0).stream(REQUEST)]
    *streamed, result = events
    assert streamed == [TextDelta(" ok", BackendKind.EDGE, -0.1)] * 2 + [
        DraftDiscarded(BackendKind.EDGE, BackendKind.CLOUD, "injected")] + [
        TextDelta(" ok", BackendKind.CLOUD, -0.1)] * 3
    assert isinstance(result, GenerateResult) and result.served_by == BackendKind.CLOUD
    assert result.text == result.run_for(BackendKind.CLOUD).text == " ok ok ok"
    assert [run.purpose for run in result.runs] == [RunPurpose.DRAFT, RunPurpose.ANSWER]


async def test_ttft_counts_to_the_first_text_not_to_the_event() -> None:
    # An empty draft: the event comes at once, the first text only after the cloud's latency.
    router = make_router(draft_tokens=0, cloud_latency_s=0.2)
    events = [event async for event in router.stream(REQUEST)]
    assert isinstance(events[0], DraftDiscarded)
    result = events[-1]
    assert isinstance(result, GenerateResult) and result.latency.ttft_s >= 0.2


async def test_ttft_is_to_the_served_answer_not_to_a_discarded_draft() -> None:
    # The draft's text comes at once; the answer's only after the cloud's latency.
    events = [event async for event in make_router(draft_tokens=2, cloud_latency_s=0.2).stream(REQUEST)]
    assert isinstance(events[0], TextDelta) and events[0].backend == BackendKind.EDGE
    result = events[-1]
    assert isinstance(result, GenerateResult) and result.latency.ttft_s >= 0.2

