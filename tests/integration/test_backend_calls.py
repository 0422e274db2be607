"""Backend calls with real parts: a mode that stops reading frees the llama.cpp edge at once, a mode that
calls the edge three times leaves three runs, and a client that cancels a cloud stream leaves its spend
in the ledger and in Stats (the daemon on port 0, the SmolLM2-135M stand-in as the cloud); and, on the
router in this process with the 135M edge, every call priced and recorded however the mode or the client
ends it. The same calls when the backend fails or hangs are in tests/unit/test_backend_calls.py."""
from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Iterator, Optional

import pytest

from cloud.standin import StandinServer
from edge.llama_backend import LlamaBackend
from router.client import RouterClient
from router.core.fault_injection import FaultInjectionSink
from router.domain.config import ServerSettings
from router.core.engine import Backends, Router
from router.core.modes import builtin_modes
from router.core.modes.base import ModeContext, ModeEvent, ModeOutcome
from router.domain.pricing import CostModel
from router.domain.types import (BackendKind, ChatMessage, Decision, GenerateRequest, GenerateResult, Mode, RunPurpose,
                                 TextDelta)
from tests.conftest import ServerThread, make_settings, wait_until
from tests.integration.conftest import standin_cloud

pytestmark = pytest.mark.integration

EDGE, CLOUD = BackendKind.EDGE, BackendKind.CLOUD
TEST_MODE = Mode.EDGE_RAG_CLOUD_INFO  # the tests' own modes are registered under this mode's number
COSTS = CostModel(0.15, 0.6, 1.35e8, 7e-10, 0.15)
LONG_TASK = "Count from one to two hundred in words, separated by commas."
LONG_MAX_TOKENS = 1000


def outcome(ctx: ModeContext, text: str, served_by: BackendKind = EDGE) -> ModeOutcome:
    return ModeOutcome(text=text, served_by=served_by, decision=Decision(mode=ctx.mode, reason="test"),
                       finish_reason="stop")


@dataclass(frozen=True)
class StopsReadingAfterThreeDeltas:
    mode: Mode = TEST_MODE

    async def run(self, ctx: ModeContext) -> AsyncIterator[ModeEvent]:
        seen = []
        async with ctx.call(EDGE) as call:
            async for delta in call.deltas():
                yield delta
                seen.append(delta.text)
                if len(seen) == 3:
                    break
        yield outcome(ctx, "".join(seen))


@dataclass(frozen=True)
class AnswerSampleVerify:
    mode: Mode = TEST_MODE

    async def run(self, ctx: ModeContext) -> AsyncIterator[ModeEvent]:
        async with ctx.call(EDGE) as answer:
            async for delta in answer.deltas():
                yield delta
        async with ctx.call(EDGE, purpose=RunPurpose.SAMPLE, temperature=0.7, seed=3, max_tokens=4) as sample:
            async for _ in sample.deltas():
                pass
        question = f"Is this answer correct? {answer.run.text}\nReply yes or no."
        async with ctx.call(EDGE, [ChatMessage("user", question)], purpose=RunPurpose.VERIFY,
                            max_tokens=1) as verify:
            async for _ in verify.deltas():
                pass
        yield outcome(ctx, answer.run.text)


@pytest.fixture
def edge(smollm_edge: LlamaBackend) -> LlamaBackend:
    return smollm_edge


async def test_a_mode_that_stops_reading_frees_the_edge_for_the_next_request_at_once(edge: LlamaBackend) -> None:
    modes = {**builtin_modes(), TEST_MODE: StopsReadingAfterThreeDeltas()}
    router = Router(settings=ServerSettings(), costs=COSTS, modes=modes, backends=Backends(edge=edge), ready=True)
    generated_before = edge.metrics.tokens_generated
    first = await router.generate(GenerateRequest(messages=(ChatMessage("user", LONG_TASK),), mode=TEST_MODE,
                                                  max_tokens=LONG_MAX_TOKENS, temperature=0.0))
    # Freed when the mode left the call's block, not by a finaliser later: the generation has ended, and the
    # model generated no token beyond those the stopped run counts (none went on in the background).
    assert not edge._lock.locked() and edge._active_cancel is None
    [stopped] = first.runs
    assert stopped.finish_reason == "cancelled" and stopped.cost_usd > 0
    assert 3 <= stopped.completion_tokens <= 6  # stopped within a token or so of the third
    assert edge.metrics.tokens_generated - generated_before == stopped.completion_tokens
    second = await router.generate(GenerateRequest(messages=(ChatMessage("user", "Say hi."),), mode=Mode.EDGE_ONLY,
                                                   max_tokens=4, temperature=0.0))
    assert second.text and edge.metrics.tokens_generated - generated_before == stopped.completion_tokens + \
        second.runs[0].completion_tokens


@pytest.fixture(scope="module")
def ledger_daemon(smollm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread, Path]]:
    ledger = tmp_path_factory.mktemp("ledger") / "ledger.db"
    server = ServerThread(make_settings({"HYBRID_ROUTER_LEDGER__ENABLED": "true",
                                         "HYBRID_ROUTER_LEDGER__PATH": str(ledger)}))

    async def register_the_test_mode() -> None:  # on the daemon's loop, beside the requests
        router = server.server.router
        router.modes = {**router.modes, TEST_MODE: AnswerSampleVerify()}

    server.call(register_the_test_mode())
    try:
        yield server, ledger
    finally:
        server.stop()


def ledger_row(ledger: Path, request_id: str) -> tuple[sqlite3.Row, list[sqlite3.Row]]:
    """The request's row and its runs, once the ledger's writer has committed them."""
    found: dict[str, object] = {}

    def committed() -> bool:
        with contextlib.closing(sqlite3.connect(ledger)) as conn:
            conn.row_factory = sqlite3.Row
            found["row"] = conn.execute("SELECT * FROM requests WHERE id = ?", (request_id,)).fetchone()
            found["runs"] = conn.execute("SELECT * FROM backend_runs WHERE request_id = ? ORDER BY ordinal",
                                         (request_id,)).fetchall()
        return found["row"] is not None

    wait_until(committed, f"{request_id} reaching the ledger")
    return found["row"], found["runs"]  # type: ignore[return-value]


def test_a_client_that_cancels_a_cloud_stream_leaves_its_spend_in_the_ledger_and_stats(
        ledger_daemon: tuple[ServerThread, Path]) -> None:
    server, ledger = ledger_daemon
    with RouterClient(server.address, timeout_s=120) as client:
        received = 0
        with client.stream(prompt=LONG_TASK, mode="cloud", max_tokens=200, request_id="cut-cloud") as stream:
            for _ in stream:
                received += 1
                if received == 3:
                    break  # leaving the block cancels the call
        row, runs = ledger_row(ledger, "cut-cloud")
        assert (row["finish_reason"], row["served_by"], row["mode"]) == ("cancelled", "UNSPECIFIED", "CLOUD_ONLY")
        assert row["cloud_cost_usd"] > 0 and row["total_cost_usd"] == row["cloud_cost_usd"]
        [run] = runs
        assert (run["backend"], run["finish_reason"], run["purpose"]) == ("CLOUD", "cancelled", "answer")
        assert run["completion_tokens"] >= 3 and run["prompt_tokens"] > 0 and run["usage_estimated"] == 1
        [cloud] = [m for m in client.stats().modes if m.mode == Mode.CLOUD_ONLY]
        assert cloud.requests >= 1 and cloud.cloud_usd_per_1k > 0


def test_a_mode_calling_the_edge_three_times_records_three_runs_with_their_purposes(
        ledger_daemon: tuple[ServerThread, Path]) -> None:
    server, ledger = ledger_daemon
    with RouterClient(server.address, timeout_s=120) as client:
        result = client.generate(prompt="What is 2 + 2?", mode=TEST_MODE, max_tokens=8, request_id="three-calls")
    assert [(run.backend, run.purpose) for run in result.runs] == [
        (EDGE, "answer"), (EDGE, "sample"), (EDGE, "verify")]
    assert result.runs[1].completion_tokens <= 4 and result.runs[2].completion_tokens == 1  # their own budgets
    assert result.runs[2].prompt_tokens != result.runs[0].prompt_tokens  # the verification had its own messages
    assert all(run.completion_tokens >= 1 and run.cost_usd > 0 for run in result.runs)
    assert result.edge_cost_usd == pytest.approx(sum(run.cost_usd for run in result.runs))
    assert result.latency.edge_s >= sum(run.total_s for run in result.runs)
    row, runs = ledger_row(ledger, "three-calls")
    assert [run["purpose"] for run in runs] == ["answer", "sample", "verify"]
    assert row["backends_run"] == "EDGE,EDGE,EDGE" and row["edge_cost_usd"] == pytest.approx(result.edge_cost_usd)


# -- the router in this process, on the 135M edge ------------------------------------------------------


class RecordingSink:
    def __init__(self) -> None:
        self.results: list[GenerateResult] = []

    def record(self, request: GenerateRequest, result: GenerateResult) -> None:
        self.results.append(result)


def local_router(edge: LlamaBackend, *sinks: object, handler: Optional[object] = None,
                 cloud: Optional[object] = None) -> Router:
    modes = dict(builtin_modes())
    if handler is not None:
        modes[TEST_MODE] = handler
    return Router(settings=ServerSettings(), costs=COSTS, modes=modes, backends=Backends(edge=edge, cloud=cloud),
                  sinks=sinks, ready=True)


def long_task(mode: Mode = TEST_MODE, max_tokens: int = 3) -> GenerateRequest:
    """A task far longer than max_tokens: the model is still talking when the budget ends."""
    return GenerateRequest(messages=(ChatMessage("user", LONG_TASK),), mode=mode, max_tokens=max_tokens,
                           temperature=0.0)


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


async def test_a_discarded_answer_becomes_a_draft_and_still_costs(edge: LlamaBackend,
                                                                  standin: StandinServer) -> None:
    cloud = standin_cloud(standin)
    try:
        result = await local_router(edge, cloud=cloud, handler=EdgeThenCloud()).generate(long_task())
    finally:
        await cloud.close()
    assert [(run.backend, run.purpose) for run in result.runs] == [(EDGE, "draft"), (CLOUD, "answer")]
    assert result.edge_cost_usd > 0 and result.cloud_cost_usd > 0
    assert result.run_for(EDGE) is result.runs[0]  # a draft is still the edge's answer, for scoring


async def test_a_client_that_stops_reading_leaves_a_cancelled_result_with_its_spend_in_the_sinks(
        edge: LlamaBackend) -> None:
    sink = RecordingSink()
    events = local_router(edge, sink).stream(long_task(Mode.EDGE_ONLY, max_tokens=64))
    first = await anext(events)
    assert isinstance(first, TextDelta)
    await events.aclose()  # the client went away after one delta
    [result] = sink.results
    assert (result.served_by, result.finish_reason) == (BackendKind.UNSPECIFIED, "cancelled")
    assert result.text.startswith(first.text)
    [run] = result.runs
    assert run.finish_reason == "cancelled" and 1 <= run.completion_tokens < 64
    assert result.cost_usd == result.edge_cost_usd == run.cost_usd > 0
    assert not result.answered and result.decision.mode == Mode.EDGE_ONLY
    assert not edge._lock.locked()  # the model is free for the next request


async def test_a_sink_that_raises_never_fails_the_request_nor_starves_the_next_sink(edge: LlamaBackend) -> None:
    sink = RecordingSink()
    router = local_router(edge, FaultInjectionSink(), sink)
    result = await router.generate(long_task(Mode.EDGE_ONLY))
    assert result.text and result.finish_reason == "length" and sink.results == [result]
    events = router.stream(long_task(Mode.EDGE_ONLY))
    await anext(events)
    await events.aclose()  # on the cancel path too: the cancellation is what propagates, nothing else
    assert [r.finish_reason for r in sink.results] == ["length", "cancelled"]


async def test_leaving_the_block_closes_the_stream_before_the_next_line_runs(edge: LlamaBackend) -> None:
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

    await local_router(edge, handler=ChecksOnExit()).generate(long_task(max_tokens=64))
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


async def test_collect_returns_the_whole_run_closed_and_recorded(edge: LlamaBackend) -> None:
    result = await local_router(edge, handler=CollectsTheEdge()).generate(long_task(max_tokens=8))
    [run] = result.runs
    assert (run.purpose, run.completion_tokens, run.finish_reason) == ("sample", 2, "length")
    assert run.text and result.text == run.text and run.cost_usd > 0
