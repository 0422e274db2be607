"""The parallel arbiter's race through the real router, with fault-injection backends of chosen speed."""
from __future__ import annotations

from edge.catalogue import ModelCache
from router.assembly.modes import build_modes
from router.core.engine import Backends, Router
from router.core.fault_injection import FixedLatencyFaultInjectionBackend
from router.domain.config import ArbitrationSettings, ServerSettings
from router.domain.pricing import CostModel
from router.domain.types import (BackendKind, ChatMessage, DraftDiscarded, GenerateRequest, GenerateResult, Mode,
                                 RunPurpose)

COSTS = CostModel(0.15, 0.6, 1e8, 3e-10, 0.15)
REQUEST = GenerateRequest(messages=(ChatMessage("user", "Name a colour."),), mode=Mode.POST_ARBITRATION,
                          max_tokens=4)


def race(tmp_path, *, edge_latency_s: float, cloud_latency_s: float) -> Router:
    backends = Backends(edge=FixedLatencyFaultInjectionBackend(latency_s=edge_latency_s),
                        cloud=FixedLatencyFaultInjectionBackend(latency_s=cloud_latency_s))
    settings = ArbitrationSettings(arbiter="parallel", scorer="logprob", fixed_threshold=0.5)
    return Router(settings=ServerSettings(), costs=COSTS, backends=backends, ready=True,
                  modes=build_modes(settings, model_cache=ModelCache(tmp_path)))


async def test_a_cloud_answer_that_is_whole_before_the_edge_is_judged_is_served_at_once(tmp_path) -> None:
    events = [e async for e in race(tmp_path, edge_latency_s=2.0, cloud_latency_s=0.0).stream(REQUEST)]
    result = events[-1]
    assert isinstance(result, GenerateResult) and result.served_by == BackendKind.CLOUD
    assert result.decision.escalated and "came before the edge's was judged" in result.decision.reason
    edge_run = result.run_for(BackendKind.EDGE)
    # Stopped before its first token: the edge's answer was not waited for.
    assert edge_run is not None and edge_run.finish_reason == "cancelled" and edge_run.purpose == RunPurpose.DRAFT
    assert edge_run.completion_tokens == 0
    assert not any(isinstance(e, DraftDiscarded) for e in events)  # the edge had streamed nothing


async def test_an_edge_answer_judged_first_is_kept_and_the_cloud_cancelled(tmp_path) -> None:
    result = await race(tmp_path, edge_latency_s=0.0, cloud_latency_s=2.0).generate(REQUEST)
    assert result.served_by == BackendKind.EDGE and not result.decision.escalated
    assert "the cloud call was cancelled" in result.decision.reason
    assert result.run_for(BackendKind.CLOUD).finish_reason == "cancelled"


async def test_an_edge_that_fails_leaves_the_answer_to_the_cloud_already_running(tmp_path) -> None:
    backends = Backends(edge=FixedLatencyFaultInjectionBackend(latency_s=0.0, tokens=4, fail_after_tokens=1),
                        cloud=FixedLatencyFaultInjectionBackend(latency_s=0.05))
    settings = ArbitrationSettings(arbiter="parallel", scorer="logprob", fixed_threshold=0.5)
    router = Router(settings=ServerSettings(), costs=COSTS, backends=backends, ready=True,
                    modes=build_modes(settings, model_cache=ModelCache(tmp_path)))
    events = [e async for e in router.stream(REQUEST)]
    result = events[-1]
    assert isinstance(result, GenerateResult) and result.served_by == BackendKind.CLOUD and result.text
    assert result.decision.escalated and "the edge failed (" in result.decision.reason
    edge_run = result.run_for(BackendKind.EDGE)
    assert edge_run.finish_reason == "error" and edge_run.purpose == RunPurpose.DRAFT and edge_run.cost_usd > 0
    assert result.run_for(BackendKind.CLOUD).finish_reason != "cancelled"
