"""The parallel arbiter's race through the real router in this process: the 135M model as the edge, the
135M stand-in as the cloud, and a backend that hangs (fault injection) on the side that must lose."""
from __future__ import annotations

from pathlib import Path

from cloud.standin import StandinServer
from edge.catalogue import ModelCache
from edge.llama_backend import LlamaBackend
from router.assembly.modes import build_modes
from router.core.engine import Backends, Router
from router.core.fault_injection import FixedLatencyFaultInjectionBackend
from router.domain.config import ArbitrationSettings, ServerSettings
from router.domain.pricing import CostModel
from router.domain.types import (BackendKind, ChatMessage, DraftDiscarded, GenerateRequest, GenerateResult, Mode,
                                 RunPurpose)
from tests.hanging_fault_injection import HangingFaultInjectionBackend
from tests.integration.conftest import standin_cloud

COSTS = CostModel(0.15, 0.6, 1.35e8, 7e-10, 0.15)
REQUEST = GenerateRequest(messages=(ChatMessage("user", "Name a colour."),), mode=Mode.POST_ARBITRATION,
                          max_tokens=4, temperature=0.0)


def race(tmp_path: Path, edge: object, cloud: object, *, threshold: float = 0.5) -> Router:
    settings = ArbitrationSettings(arbiter="parallel", scorer="logprob", fixed_threshold=threshold)
    return Router(settings=ServerSettings(), costs=COSTS, backends=Backends(edge=edge, cloud=cloud), ready=True,
                  modes=build_modes(settings, model_cache=ModelCache(tmp_path)))


async def test_a_cloud_answer_that_is_whole_before_the_edge_is_judged_is_served_at_once(
        tmp_path: Path, standin: StandinServer) -> None:
    cloud = standin_cloud(standin)
    try:
        events = [e async for e in race(tmp_path, HangingFaultInjectionBackend(), cloud).stream(REQUEST)]
    finally:
        await cloud.close()
    result = events[-1]
    assert isinstance(result, GenerateResult) and result.served_by == BackendKind.CLOUD and result.text
    assert result.decision.escalated and "came before the edge's was judged" in result.decision.reason
    edge_run = result.run_for(BackendKind.EDGE)
    # Stopped before its first token: the edge's answer was not waited for.
    assert edge_run is not None and edge_run.finish_reason == "cancelled" and edge_run.purpose == RunPurpose.DRAFT
    assert edge_run.completion_tokens == 0
    assert not any(isinstance(e, DraftDiscarded) for e in events)  # the edge had streamed nothing


async def test_an_edge_answer_judged_first_is_kept_and_the_cloud_cancelled(tmp_path: Path,
                                                                         smollm_edge: LlamaBackend) -> None:
    # Threshold 0 keeps any edge answer; the cloud hangs, so it cannot answer first.
    result = await race(tmp_path, smollm_edge, HangingFaultInjectionBackend(), threshold=0.0).generate(REQUEST)
    assert result.served_by == BackendKind.EDGE and not result.decision.escalated and result.text
    assert "the cloud call was cancelled" in result.decision.reason
    assert result.run_for(BackendKind.CLOUD).finish_reason == "cancelled"


async def test_an_edge_that_fails_leaves_the_answer_to_the_cloud_already_running(
        tmp_path: Path, standin: StandinServer) -> None:
    edge = FixedLatencyFaultInjectionBackend(latency_s=0.0, tokens=4, fail_after_tokens=1)
    cloud = standin_cloud(standin)
    try:
        events = [e async for e in race(tmp_path, edge, cloud).stream(REQUEST)]
    finally:
        await cloud.close()
    result = events[-1]
    assert isinstance(result, GenerateResult) and result.served_by == BackendKind.CLOUD and result.text
    assert result.decision.escalated and "the edge failed (" in result.decision.reason
    edge_run = result.run_for(BackendKind.EDGE)
    assert edge_run.finish_reason == "error" and edge_run.purpose == RunPurpose.DRAFT and edge_run.cost_usd > 0
    assert result.run_for(BackendKind.CLOUD).finish_reason != "cancelled"
