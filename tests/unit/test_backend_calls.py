"""Backend calls as modes make them, when the backend fails or hangs: every call priced and recorded
however it ends, and every request that spent something handed to the sinks. Each test injects its fault
with the fault-injection backend; the same calls on the 135M model, without a fault, are in
tests/integration/test_backend_calls.py."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import AsyncIterator, Optional

import pytest

from router.domain.config import ServerSettings
from router.core.engine import Backends, Router
from router.domain.errors import BackendUnavailableError
from router.core.fault_injection import FixedLatencyFaultInjectionBackend
from router.core.modes import builtin_modes
from router.core.modes.base import ModeContext, ModeEvent, ModeOutcome, UnknownCallParameterError
from router.domain.pricing import CostModel
from router.domain.types import (BackendKind, ChatMessage, Decision, GenerateRequest, GenerateResult, GenerationParams,
                          Mode, RunPurpose)
from tests.hanging_fault_injection import HangingFaultInjectionBackend

COSTS = CostModel(0.15, 0.6, 1e8, 3e-10, 0.15)
EDGE = BackendKind.EDGE
TEST_MODE = Mode.POST_ARBITRATION  # the tests' own modes are registered under it


class RecordingSink:
    def __init__(self) -> None:
        self.results: list[GenerateResult] = []

    def record(self, request: GenerateRequest, result: GenerateResult) -> None:
        self.results.append(result)


def outcome(ctx: ModeContext, text: str, served_by: BackendKind = EDGE) -> ModeOutcome:
    return ModeOutcome(text=text, served_by=served_by, decision=Decision(mode=ctx.mode, reason="test"),
                       finish_reason="stop")


def make_router(edge: FixedLatencyFaultInjectionBackend, *sinks: object, handler: Optional[object] = None) -> Router:
    modes = dict(builtin_modes())
    if handler is not None:
        modes[TEST_MODE] = handler
    return Router(settings=ServerSettings(), costs=COSTS, modes=modes, backends=Backends(edge=edge),
                  sinks=sinks, ready=True)


def request(mode: Mode = TEST_MODE, max_tokens: int = 3) -> GenerateRequest:
    return GenerateRequest(messages=(ChatMessage("user", "hi there"),), mode=mode, max_tokens=max_tokens)


def test_an_unknown_call_parameter_is_a_typed_error() -> None:
    params = GenerationParams(max_tokens=3, temperature=0.0, stop=(), seed=None)
    ctx = ModeContext(request=request(), mode=TEST_MODE, params=params, backends={}, costs=COSTS)
    with pytest.raises(UnknownCallParameterError, match="top_k"):
        ctx.call(EDGE, top_k=5)


async def test_a_cancelled_task_leaves_a_cancelled_result_for_the_prompt_it_spent() -> None:
    sink = RecordingSink()
    edge = HangingFaultInjectionBackend()
    router = make_router(edge, sink)
    task = asyncio.create_task(router.generate(request(Mode.EDGE_ONLY)))
    await edge.hanging.wait()  # the prompt went to the edge, which hangs
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [result] = sink.results
    assert result.finish_reason == "cancelled" and result.text == ""
    [run] = result.runs
    assert run.finish_reason == "cancelled" and run.completion_tokens == 0 and run.prompt_tokens > 0


async def test_a_backend_failing_mid_answer_reaches_the_sinks_as_an_error_with_what_it_streamed() -> None:
    sink = RecordingSink()
    router = make_router(FixedLatencyFaultInjectionBackend(latency_s=0.001, tokens=8, fail_after_tokens=2), sink)
    with pytest.raises(BackendUnavailableError, match="injected fault"):
        await router.generate(request(Mode.EDGE_ONLY, max_tokens=8))
    [result] = sink.results
    assert (result.served_by, result.finish_reason, result.text) == (BackendKind.UNSPECIFIED, "error", " ok ok")
    assert [(run.finish_reason, run.completion_tokens) for run in result.runs] == [("error", 2)]
    assert result.cost_usd > 0 and "injected fault" in result.decision.reason


@dataclass(frozen=True)
class CollectsTheEdge:
    """Takes the edge's whole answer at once, then serves it (as a scorer's sample or an agent step does)."""

    mode: Mode = TEST_MODE

    async def run(self, ctx: ModeContext) -> AsyncIterator[ModeEvent]:
        call = ctx.call(EDGE, purpose=RunPurpose.SAMPLE, max_tokens=2)
        run = await call.collect()
        assert run is call.run and call._closed
        yield outcome(ctx, run.text)


async def test_collect_passes_a_failure_on_with_what_the_call_spent_recorded() -> None:
    sink = RecordingSink()
    edge = FixedLatencyFaultInjectionBackend(latency_s=0.001, tokens=8, fail_after_tokens=1)
    with pytest.raises(BackendUnavailableError, match="injected fault"):
        await make_router(edge, sink, handler=CollectsTheEdge()).generate(request(max_tokens=8))
    [result] = sink.results
    assert [(run.finish_reason, run.completion_tokens) for run in result.runs] == [("error", 1)]
    assert result.cost_usd > 0
