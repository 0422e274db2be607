"""Backend calls with real parts: a mode that stops reading frees the llama.cpp edge at once, a mode that
calls the edge three times leaves three runs, and a client that cancels a cloud stream leaves its spend
in the ledger and in Stats (the daemon on port 0, the SmolLM2-135M stand-in as the cloud)."""
from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Iterator

import pytest

from edge.llama_backend import LlamaBackend
from router.client import RouterClient
from router.domain.config import ServerSettings
from router.core.engine import Backends, Router
from router.core.modes import builtin_modes
from router.core.modes.base import ModeContext, ModeEvent, ModeOutcome
from router.domain.pricing import CostModel
from router.domain.types import BackendKind, ChatMessage, Decision, GenerateRequest, Mode, RunPurpose
from tests.conftest import ServerThread, make_settings

pytestmark = pytest.mark.integration

EDGE = BackendKind.EDGE
TEST_MODE = Mode.EDGE_RAG_CLOUD_INFO  # the tests' own modes are registered under this mode's number
COSTS = CostModel(0.15, 0.6, 1.35e8, 7e-10, 0.15)
LONG_TASK = "Count from one to two hundred in words, separated by commas."
LONG_MAX_TOKENS = 1000


def outcome(ctx: ModeContext, text: str) -> ModeOutcome:
    return ModeOutcome(text=text, served_by=EDGE, decision=Decision(mode=ctx.mode, reason="test"),
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


@pytest.fixture(scope="module")
def edge(smollm_path: Path) -> Iterator[LlamaBackend]:
    backend = LlamaBackend(smollm_path, model_name="smollm2-135m", n_ctx=2048, n_threads=1)
    yield backend
    backend.close()


async def test_a_mode_that_stops_reading_frees_the_edge_for_the_next_request_at_once(edge: LlamaBackend) -> None:
    modes = {**builtin_modes(), TEST_MODE: StopsReadingAfterThreeDeltas()}
    router = Router(settings=ServerSettings(), costs=COSTS, modes=modes, backends=Backends(edge=edge), ready=True)
    first = await router.generate(GenerateRequest(messages=(ChatMessage("user", LONG_TASK),), mode=TEST_MODE,
                                                  max_tokens=LONG_MAX_TOKENS, temperature=0.0))
    assert not edge._lock.locked()  # freed when the mode left the call's block, not by a finaliser later
    [stopped] = first.runs
    assert stopped.finish_reason == "cancelled" and stopped.cost_usd > 0
    assert 3 <= stopped.completion_tokens <= 6  # stopped within a token or so of the third
    second = await router.generate(GenerateRequest(messages=(ChatMessage("user", "Say hi."),), mode=Mode.EDGE_ONLY,
                                                   max_tokens=4, temperature=0.0))
    [next_run] = second.runs
    seconds_per_token = (stopped.total_s - stopped.queue_s) / stopped.completion_tokens
    left_to_generate_s = (LONG_MAX_TOKENS - stopped.completion_tokens) * seconds_per_token
    assert next_run.queue_s < left_to_generate_s / 10  # it did not wait for the first call's remaining tokens


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


def ledger_row(ledger: Path, request_id: str, timeout_s: float = 60.0) -> tuple[sqlite3.Row, list[sqlite3.Row]]:
    """The request's row and its runs, once the ledger's writer has committed them."""
    deadline = time.monotonic() + timeout_s
    while True:
        with sqlite3.connect(ledger) as conn:
            conn.row_factory = sqlite3.Row
            row = conn.execute("SELECT * FROM requests WHERE id = ?", (request_id,)).fetchone()
            runs = conn.execute("SELECT * FROM backend_runs WHERE request_id = ? ORDER BY ordinal",
                                (request_id,)).fetchall()
        conn.close()
        if row is not None or time.monotonic() > deadline:
            assert row is not None, f"{request_id} never reached the ledger"
            return row, runs
        time.sleep(0.05)


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
    assert all(run.completion_tokens >= 1 and run.cost_usd > 0 for run in result.runs)
    assert result.edge_cost_usd == pytest.approx(sum(run.cost_usd for run in result.runs))
    assert result.latency.edge_s >= sum(run.total_s for run in result.runs)
    row, runs = ledger_row(ledger, "three-calls")
    assert [run["purpose"] for run in runs] == ["answer", "sample", "verify"]
    assert row["backends_run"] == "EDGE,EDGE,EDGE" and row["edge_cost_usd"] == pytest.approx(result.edge_cost_usd)
