"""Backend calls as modes make them: every call priced and recorded, however it ends, and every request
that spent something handed to the sinks. The fault-injection backend stands in for a model."""
from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import AsyncIterator, Optional

import pytest

from router.domain.config import ServerSettings
from router.core.engine import Backends, Router
from router.domain.errors import BackendUnavailableError
from router.core.fault_injection import FaultInjectionSink, FixedLatencyFaultInjectionBackend
from router.core.modes import builtin_modes
from router.core.modes.base import ModeContext, ModeEvent, ModeOutcome, UnknownCallParameterError
from router.domain.pricing import CostModel
from router.domain.types import (BackendKind, ChatMessage, Decision, GenerateRequest, GenerateResult, GenerationParams,
                          Mode, RunPurpose, TextDelta)

COSTS = CostModel(0.15, 0.6, 1e8, 3e-10, 0.15)
EDGE, CLOUD = BackendKind.EDGE, BackendKind.CLOUD
TEST_MODE = Mode.POST_ARBITRATION  # the tests' own modes are registered under it


class RecordingSink:
    def __init__(self) -> None:
        self.results: list[GenerateResult] = []

    def record(self, request: GenerateRequest, result: GenerateResult) -> None:
        self.results.append(result)


def outcome(ctx: ModeContext, text: str, served_by: BackendKind = EDGE) -> ModeOutcome:
    return ModeOutcome(text=text, served_by=served_by, decision=Decision(mode=ctx.mode, reason="test"),
                       finish_reason="stop")


@dataclass(frozen=True)
class AnswerThenSampleThenVerify:
    """Three edge calls, each with its own messages and parameters."""

    mode: Mode = TEST_MODE

    async def run(self, ctx: ModeContext) -> AsyncIterator[ModeEvent]:
        async with ctx.call(EDGE) as answer:
            async for delta in answer.deltas():
                yield delta
        async with ctx.call(EDGE, purpose=RunPurpose.SAMPLE, max_tokens=2, temperature=0.7, seed=11) as sample:
            async for _ in sample.deltas():
                pass
        verify_prompt = [ChatMessage("user", "Is this answer right? Say yes or no, and nothing else at all.")]
        async with ctx.call(EDGE, verify_prompt, purpose=RunPurpose.VERIFY, max_tokens=1, stop=["\n"]) as verify:
            async for _ in verify.deltas():
                pass
        assert (sample.params.temperature, sample.params.seed, verify.params.stop) == (0.7, 11, ("\n",))
        yield outcome(ctx, answer.run.text)


@dataclass(frozen=True)
class BreakAfterFirstDelta:
    """Stops reading its one call after the first delta, and answers with what it has."""

    kind: BackendKind = EDGE
    mode: Mode = TEST_MODE

    async def run(self, ctx: ModeContext) -> AsyncIterator[ModeEvent]:
        async with ctx.call(self.kind) as call:
            async for delta in call.deltas():
                yield delta
                break
        yield outcome(ctx, "".join(call._text_parts), self.kind)


@dataclass(frozen=True)
class EdgeThenCloud:
    """The edge answers, the cloud answers instead (an escalation), the cloud serves."""

    mode: Mode = TEST_MODE

    async def run(self, ctx: ModeContext) -> AsyncIterator[ModeEvent]:
        for kind in (EDGE, CLOUD):
            async with ctx.call(kind) as call:
                async for _ in call.deltas():
                    pass
        yield outcome(ctx, call.run.text, CLOUD)


def make_router(edge: FixedLatencyFaultInjectionBackend, *sinks: object, handler: Optional[object] = None,
                cloud: Optional[FixedLatencyFaultInjectionBackend] = None) -> Router:
    modes = dict(builtin_modes())
    if handler is not None:
        modes[TEST_MODE] = handler
    return Router(settings=ServerSettings(), costs=COSTS, modes=modes, backends=Backends(edge=edge, cloud=cloud),
                  sinks=sinks, ready=True)


def request(mode: Mode = TEST_MODE, max_tokens: int = 3) -> GenerateRequest:
    return GenerateRequest(messages=(ChatMessage("user", "hi there"),), mode=mode, max_tokens=max_tokens)


async def test_a_mode_calling_the_edge_three_times_records_three_priced_runs_in_order() -> None:
    sink = RecordingSink()
    edge = FixedLatencyFaultInjectionBackend(latency_s=0.001, tokens=4)
    result = await make_router(edge, sink, handler=AnswerThenSampleThenVerify()).generate(request())
    runs = result.runs
    assert [run.purpose for run in runs] == ["answer", "sample", "verify"]
    assert [run.completion_tokens for run in runs] == [3, 2, 1]  # each call's own max_tokens
    assert runs[2].prompt_tokens != runs[0].prompt_tokens  # the verification had its own messages
    assert all(run.cost_usd > 0 for run in runs)
    assert result.edge_cost_usd == pytest.approx(sum(run.cost_usd for run in runs))
    assert result.cost_usd == result.edge_cost_usd and result.text == " ok ok ok"
    assert result.latency.edge_s >= sum(run.total_s for run in runs)  # every call's time counts
    assert sink.results == [result]


def test_an_unknown_call_parameter_is_a_typed_error() -> None:
    params = GenerationParams(max_tokens=3, temperature=0.0, stop=(), seed=None)
    ctx = ModeContext(request=request(), mode=TEST_MODE, params=params, backends={}, costs=COSTS)
    with pytest.raises(UnknownCallParameterError, match="top_k"):
        ctx.call(EDGE, top_k=5)


async def test_a_call_the_mode_stops_reading_is_closed_and_priced_for_what_it_generated() -> None:
    edge = FixedLatencyFaultInjectionBackend(latency_s=0.001, tokens=8)
    result = await make_router(edge, handler=BreakAfterFirstDelta()).generate(request(max_tokens=8))
    [run] = result.runs
    assert (run.finish_reason, run.completion_tokens, run.text) == ("cancelled", 1, " ok")
    assert run.cost_usd > 0 and result.cost_usd == run.cost_usd


async def test_a_discarded_answer_becomes_a_draft_and_still_costs() -> None:
    edge = FixedLatencyFaultInjectionBackend(latency_s=0.001)
    cloud = FixedLatencyFaultInjectionBackend(latency_s=0.001)
    result = await make_router(edge, cloud=cloud, handler=EdgeThenCloud()).generate(request())
    assert [(run.backend, run.purpose) for run in result.runs] == [(EDGE, "draft"), (CLOUD, "answer")]
    assert result.edge_cost_usd > 0 and result.cloud_cost_usd > 0
    assert result.run_for(EDGE) is result.runs[0]  # a draft is still the edge's answer, for scoring


async def test_a_client_that_stops_reading_leaves_a_cancelled_result_with_its_spend_in_the_sinks() -> None:
    sink = RecordingSink()
    router = make_router(FixedLatencyFaultInjectionBackend(latency_s=0.001, tokens=8), sink)
    events = router.stream(request(Mode.EDGE_ONLY, max_tokens=8))
    assert isinstance(await anext(events), TextDelta)
    await events.aclose()  # the client went away after one delta
    [result] = sink.results
    assert (result.served_by, result.finish_reason, result.text) == (BackendKind.UNSPECIFIED, "cancelled", " ok")
    [run] = result.runs
    assert (run.finish_reason, run.completion_tokens) == ("cancelled", 1)
    assert result.cost_usd == result.edge_cost_usd == run.cost_usd > 0
    assert not result.answered and result.decision.mode == Mode.EDGE_ONLY


async def test_a_cancelled_task_leaves_a_cancelled_result_for_the_prompt_it_spent() -> None:
    sink = RecordingSink()
    router = make_router(FixedLatencyFaultInjectionBackend(latency_s=60), sink)
    task = asyncio.create_task(router.generate(request(Mode.EDGE_ONLY)))
    await asyncio.sleep(0)  # the task's first step runs up to its first wait: inside the edge's latency
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


async def test_a_sink_that_raises_never_fails_the_request_nor_starves_the_next_sink() -> None:
    sink = RecordingSink()
    router = make_router(FixedLatencyFaultInjectionBackend(latency_s=0.001), FaultInjectionSink(), sink)
    result = await router.generate(request(Mode.EDGE_ONLY))
    assert result.text == " ok ok ok" and sink.results == [result]
    events = router.stream(request(Mode.EDGE_ONLY))
    await anext(events)
    await events.aclose()  # on the cancel path too: the cancellation is what propagates, nothing else
    assert [r.finish_reason for r in sink.results] == ["length", "cancelled"]


async def test_leaving_the_block_closes_the_stream_before_the_next_line_runs() -> None:
    closed_at_exit: list[Optional[str]] = []

    @dataclass(frozen=True)
    class ChecksOnExit:
        mode: Mode = TEST_MODE

        async def run(self, ctx: ModeContext) -> AsyncIterator[ModeEvent]:
            with contextlib.suppress(LookupError):
                async with ctx.call(EDGE) as call:
                    async for _ in call.deltas():
                        raise LookupError("the mode's own bug")
            # Already closed and recorded here, not at garbage collection.
            closed_at_exit.append(call.run.finish_reason if call.run else None)
            yield outcome(ctx, "")

    await make_router(FixedLatencyFaultInjectionBackend(latency_s=0.001), handler=ChecksOnExit()).generate(request())
    assert closed_at_exit == ["cancelled"]


@dataclass(frozen=True)
class CollectsTheEdge:
    """Takes the edge's whole answer at once, then serves it (as a scorer's sample or an agent step does)."""

    mode: Mode = TEST_MODE

    async def run(self, ctx: ModeContext) -> AsyncIterator[ModeEvent]:
        call = ctx.call(EDGE, purpose=RunPurpose.SAMPLE, max_tokens=2)
        run = await call.collect()
        assert run is call.run and call._closed
        yield outcome(ctx, run.text)


async def test_collect_returns_the_whole_run_closed_and_recorded() -> None:
    result = await make_router(FixedLatencyFaultInjectionBackend(latency_s=0.001, tokens=8),
                               handler=CollectsTheEdge()).generate(request(max_tokens=8))
    [run] = result.runs
    assert (run.purpose, run.completion_tokens, run.text, result.text) == ("sample", 2, " ok ok", " ok ok")
    assert run.cost_usd > 0


async def test_collect_passes_a_failure_on_with_what_the_call_spent_recorded() -> None:
    sink = RecordingSink()
    edge = FixedLatencyFaultInjectionBackend(latency_s=0.001, tokens=8, fail_after_tokens=1)
    with pytest.raises(BackendUnavailableError, match="injected fault"):
        await make_router(edge, sink, handler=CollectsTheEdge()).generate(request(max_tokens=8))
    [result] = sink.results
    assert [(run.finish_reason, run.completion_tokens) for run in result.runs] == [("error", 1)]
    assert result.cost_usd > 0
