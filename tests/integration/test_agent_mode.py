"""EDGE_AGENT_CLOUD_INFO with real parts: SmolLM2-135M as the edge (llama.cpp, grammar-constrained steps),
the 135M stand-in behind the fault-injection server as the cloud, and the Info service (the real encoder
and index, over gRPC) holding two documents about Zorbia, all through the Router and a real ModeContext,
so every step, tool call and cost lands in the result. A test-only Info source stands in for the service
only to inject its faults (a search that hangs or fails).

The 135M model answers at once when left alone, so the tests that need a tool prime it with earlier
turns of the request's own conversation that call that tool (at temperature 0 it follows them). Each
test asserts what its caps and faults make certain, never how the model words its answer, and nothing
about time.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import AsyncIterator, Callable, Iterator, Optional

import pytest

from cloud.fault_injection_server import Fault, FaultInjectionOpenAIServer
from cloud.info import Document
from cloud.openai_backend import OpenAIBackend
from cloud.standin import StandinServer
from edge.catalogue import ModelCache
from edge.encoder import TextEncoder
from edge.llama_backend import LlamaBackend
from router.assembly.info_client import GrpcInfoClient, InfoClient
from router.assembly.parts import STANDIN_SERVER_MODULE
from router.core.engine import Backends, Router
from router.core.info import InfoSource, InfoUnavailableError
from router.core.modes.agent import EdgeAgentMode
from router.domain.config import AgentSettings, ServerSettings
from router.domain.pricing import CostModel
from router.domain.types import (BackendKind, ChatMessage, GenerateRequest, GenerateResult, Mode, Passage,
                                 RunPurpose)
from tests.conftest import models_dir
from tests.integration.test_info_service import InfoServerThread
from tests.unit.test_agent_tools import FaultInjectionInfoSource

pytestmark = pytest.mark.integration

MODE = Mode.EDGE_AGENT_CLOUD_INFO
COSTS = CostModel(0.15, 0.6, 1.35e8, 7e-10, 0.15)
CLOUD_ALIAS = "agent-cloud-standin"
PASSAGES = (Passage("zorbia#1", "zorbia", "Zorbia was founded by Queen Alma in 1204.", 0.0),
            Passage("zorbia#2", "zorbia", "Zorbia lies on the river Tarn.", 0.0))
# The same two facts as documents of the Info service: one chunk each, so a search finds both.
DOCUMENTS = (Document(id="zorbia-founding", text="Zorbia was founded by Queen Alma in 1204."),
             Document(id="zorbia-river", text="Zorbia lies on the river Tarn."))
SEARCH_PRICE_USD = 1e-4


@pytest.fixture(scope="module")
def edge(smollm_path: Path) -> Iterator[LlamaBackend]:
    backend = LlamaBackend(smollm_path, model_name="smollm2-135m", n_ctx=2048, n_threads=1)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def cloud_server(smollm_path: Path) -> Iterator[FaultInjectionOpenAIServer]:
    """The stand-in cloud (llama.cpp's OpenAI-compatible server) behind the fault-injection server."""
    standin = StandinServer(smollm_path, model_alias=CLOUD_ALIAS, n_ctx=2048, n_threads=1,
                            server_module=STANDIN_SERVER_MODULE)
    asyncio.run(standin.start())
    try:
        with FaultInjectionOpenAIServer(upstream_base_url=standin.base_url) as server:
            yield server
    finally:
        asyncio.run(standin.stop())


@pytest.fixture(scope="module")
def info_address(new_info_index_dir: Callable[[str], Path]) -> Iterator[str]:
    """The Info service with DOCUMENTS ingested, on its own event loop in a background thread."""
    server = InfoServerThread({"HYBRID_ROUTER_INFO__INDEX_DIR": str(new_info_index_dir("agent-info"))},
                              TextEncoder.from_cache(ModelCache(models_dir())))
    try:
        with InfoClient(server.address, timeout_s=60, price_per_retrieval_usd=0) as client:
            client.ingest(DOCUMENTS)
        yield server.address
    finally:
        server.stop()


@pytest.fixture
async def info(info_address: str) -> AsyncIterator[GrpcInfoClient]:
    """A client of the Info service, as the daemon's router has one; every search priced SEARCH_PRICE_USD."""
    client = GrpcInfoClient(info_address, timeout_s=60, price_per_retrieval_usd=SEARCH_PRICE_USD)
    yield client
    await client.aclose()


def primed_for(tool: str, question: str) -> tuple[ChatMessage, ...]:
    """A request whose earlier turns call `tool`, so that the 135M model calls it too."""
    def step(text: str) -> str:
        return json.dumps({"thought": f"I must use {tool}.", "tool": tool, "input": text})
    return (ChatMessage("system", f"You must always use the {tool} tool, never answer."),
            ChatMessage("user", "Capital of Chile?"), ChatMessage("assistant", step("Capital of Chile?")),
            ChatMessage("user", "Capital of Bolivia?"), ChatMessage("assistant", step("Capital of Bolivia?")),
            ChatMessage("user", question))


CALCULATION = (ChatMessage("user", 'Reply with exactly this JSON: {"thought": "I will compute.", '
                                   '"tool": "calculate", "input": "17 * 23"}'),)


async def ask(edge: LlamaBackend, messages: tuple[ChatMessage, ...], settings: AgentSettings, *,
              info: Optional[InfoSource] = None, cloud: Optional[OpenAIBackend] = None) -> GenerateResult:
    router = Router(settings=ServerSettings(), costs=COSTS, modes={MODE: EdgeAgentMode(settings)},
                    backends=Backends(edge=edge, cloud=cloud), info=info, ready=True)
    return await router.generate(GenerateRequest(messages=messages, mode=MODE, temperature=0.0))


def edge_tokens(result: GenerateResult) -> int:
    """The loop's edge tokens: its steps', and the reading of its search results."""
    return sum(run.completion_tokens for run in result.runs if run.backend == BackendKind.EDGE)


def assert_priced_and_traced(result: GenerateResult) -> None:
    """Every step is an edge run, and so is the reading of the search results when there is one; the
    result's cost is every run's and every retrieval's."""
    decision = result.decision
    assert decision.mode == MODE and decision.arbiter == "agent"
    edge_runs = [run for run in result.runs if run.backend == BackendKind.EDGE]
    assert all(run.cost_usd > 0 for run in edge_runs)
    steps = [run for run in edge_runs if run.purpose == RunPurpose.AGENT_STEP]
    reads = [run for run in edge_runs if run.purpose == RunPurpose.ANSWER]
    assert len(steps) + len(reads) == len(edge_runs) and len(reads) == decision.features["read_search_results"]
    assert len(steps) == len(decision.steps) == decision.features["steps"]
    assert decision.features["edge_tokens"] == edge_tokens(result)
    assert result.cost_usd == pytest.approx(sum(r.cost_usd for r in result.runs)
                                            + sum(c.cost_usd for c in result.info_calls))
    assert [step.index for step in decision.steps] == list(range(1, len(decision.steps) + 1))


async def test_the_edge_calculates_then_answers_and_the_trace_is_in_the_decision(edge: LlamaBackend) -> None:
    result = await ask(edge, CALCULATION, AgentSettings(max_steps=3))
    assert_priced_and_traced(result)
    first = result.decision.steps[0]
    assert (first.tool, first.arguments, first.error) == ("calculate", "17 * 23", "")
    assert first.observation == "17 * 23 = 391"
    assert result.decision.features["tool_calculate"] == 1.0
    last = result.decision.steps[-1]
    if last.tool == "answer":  # the edge answered: its answer is served, as one delta
        assert result.text == last.arguments and result.finish_reason == "stop"
    assert result.served_by == BackendKind.EDGE and result.cloud_cost_usd == 0.0


async def test_the_first_step_must_call_a_tool_even_when_the_edge_would_answer(edge: LlamaBackend,
                                                                                 info: GrpcInfoClient) -> None:
    told_to_answer = (ChatMessage("user", 'Reply with exactly this JSON: {"thought": "I know it.", '
                                          '"tool": "answer", "input": "Paris"}'),)
    result = await ask(edge, told_to_answer, AgentSettings(max_steps=3), info=info)
    assert_priced_and_traced(result)
    first = result.decision.steps[0]
    assert first.tool in ("search", "ask_cloud", "calculate"), first  # the grammar left no "answer" at step 1


async def test_an_answer_right_after_a_search_is_read_from_the_passages_it_found(edge: LlamaBackend,
                                                                                 info: GrpcInfoClient) -> None:
    question = primed_for("search", "Who founded Zorbia?")
    result = await ask(edge, question, AgentSettings(max_steps=2), info=info)
    assert_priced_and_traced(result)
    first, last = result.decision.steps
    assert (first.tool, last.tool) == ("search", "answer")
    [read] = [run for run in result.runs if run.purpose == RunPurpose.ANSWER]
    assert read.backend == BackendKind.EDGE and result.text == read.text.strip() == last.observation
    assert "the answer was read from the 2 passages its searches found" in result.decision.reason
    assert result.decision.features["sources"] == 2.0
    [call] = result.info_calls
    assert call.operation == "search" and not call.error and call.cost_usd == pytest.approx(SEARCH_PRICE_USD)
    assert sorted(call.passage_ids) == ["zorbia-founding#0", "zorbia-river#0"]
    # Turned off, the answer step's own input is served, and no reading runs.
    plain = await ask(edge, question, AgentSettings(max_steps=2, read_search_results=False), info=info)
    assert_priced_and_traced(plain)
    assert plain.decision.features["read_search_results"] == 0.0
    assert plain.text == plain.decision.steps[-1].arguments and "read from" not in plain.decision.reason


async def test_the_step_cap_forces_the_last_step_to_answer(edge: LlamaBackend) -> None:
    result = await ask(edge, CALCULATION, AgentSettings(max_steps=1))
    assert_priced_and_traced(result)
    [step] = result.decision.steps
    assert step.tool == "answer" and result.text == step.arguments  # the grammar allowed nothing else
    assert "step cap (max_steps=1) forced step 1 to answer" in result.decision.reason
    assert result.decision.features["cap_steps"] == 1.0


async def test_the_token_cap_bounds_every_edge_token_of_the_loop(edge: LlamaBackend) -> None:
    result = await ask(edge, CALCULATION, AgentSettings(max_tokens=30, step_max_tokens=256))
    assert_priced_and_traced(result)
    assert edge_tokens(result) <= 30
    assert "token cap (max_tokens=30 edge tokens)" in result.decision.reason


async def test_the_dollar_cap_stops_the_tools_and_the_edge_answers(edge: LlamaBackend, info: GrpcInfoClient) -> None:
    result = await ask(edge, primed_for("search", "Who founded Zorbia?"), AgentSettings(max_usd=1e-6), info=info)
    assert_priced_and_traced(result)
    first, second = result.decision.steps
    assert first.tool == "search" and "[id zorbia-founding#0]" in first.observation
    assert first.cost_usd == pytest.approx(SEARCH_PRICE_USD)
    assert second.tool == "answer" and result.served_by == BackendKind.EDGE
    assert "dollar cap (max_usd=$1e-06) forced step 2 to answer" in result.decision.reason
    assert result.info_cost_usd == pytest.approx(SEARCH_PRICE_USD) and len(result.info_calls) == 1


async def test_the_wall_time_cap_cuts_a_hanging_search_and_ends_the_loop(edge: LlamaBackend) -> None:
    info = FaultInjectionInfoSource(PASSAGES, hang_s=120)
    result = await ask(edge, primed_for("search", "Who founded Zorbia?"), AgentSettings(max_wall_s=3), info=info)
    assert_priced_and_traced(result)
    [step] = result.decision.steps
    assert step.tool == "search" and step.error  # cut off at the cap, or not called past it
    assert "wall-time cap (max_wall_s=3) ended the loop before step 2" in result.decision.reason
    assert result.finish_reason == "length"


async def test_a_failed_search_is_recorded_and_the_request_is_answered_degraded(edge: LlamaBackend) -> None:
    info = FaultInjectionInfoSource(PASSAGES, fail_with=InfoUnavailableError("connection refused"))
    result = await ask(edge, primed_for("search", "Who founded Zorbia?"), AgentSettings(max_steps=2), info=info)
    assert_priced_and_traced(result)
    first, second = result.decision.steps
    assert first.tool == "search" and first.observation.startswith("error: search failed: info service unavailable")
    assert first.error == "info service unavailable: connection refused"
    assert second.tool == "answer" and result.answered and result.served_by == BackendKind.EDGE
    assert result.decision.degraded and "degraded: search failed" in result.decision.reason
    [call] = result.info_calls
    assert call.operation == "search" and call.error == "info service unavailable"


async def test_a_cut_off_step_is_retried_once_then_the_loop_ends_cleanly(edge: LlamaBackend) -> None:
    # 16 tokens cannot hold a step's JSON: both tries are cut off mid-object.
    result = await ask(edge, CALCULATION, AgentSettings(step_max_tokens=16))
    assert_priced_and_traced(result)
    first, second = result.decision.steps
    assert first.tool == second.tool == "" and all(s.error.startswith("unparseable step") for s in (first, second))
    assert "could not be parsed" in result.decision.reason and result.finish_reason == "length"
    assert result.decision.features["parse_failures"] == 2.0


async def test_the_cloud_answer_is_served_when_a_cap_ends_the_loop_after_ask_cloud(
        edge: LlamaBackend, cloud_server: FaultInjectionOpenAIServer) -> None:
    # Step 1 (about 25 tokens) may use all of step_max_tokens; what is left cannot hold another step.
    cloud = OpenAIBackend(base_url=cloud_server.base_url, api_key=None, model=CLOUD_ALIAS, max_retries=0)
    try:
        result = await ask(edge, primed_for("ask_cloud", "Capital of Peru?"),
                           AgentSettings(max_tokens=40, step_max_tokens=40, ask_cloud_max_tokens=12), cloud=cloud)
    finally:
        await cloud.close()
    assert_priced_and_traced(result)
    [step] = result.decision.steps
    [tool_run] = [run for run in result.runs if run.backend == BackendKind.CLOUD]
    assert step.tool == "ask_cloud" and not step.error and step.cost_usd == pytest.approx(tool_run.cost_usd)
    assert tool_run.purpose == RunPurpose.TOOL and tool_run.completion_tokens <= 12 and tool_run.cost_usd > 0
    assert result.served_by == BackendKind.CLOUD and result.text == tool_run.text.strip()
    assert "token cap" in result.decision.reason and "latest ask_cloud answer (step 1)" in result.decision.reason
    assert result.decision.escalated and result.cloud_cost_usd == pytest.approx(tool_run.cost_usd)


async def test_a_failed_cloud_call_is_an_observation_and_does_not_fail_the_request(
        edge: LlamaBackend, cloud_server: FaultInjectionOpenAIServer) -> None:
    cloud_server.inject(Fault.STATUS_500)
    cloud = OpenAIBackend(base_url=cloud_server.base_url, api_key=None, model=CLOUD_ALIAS, max_retries=0)
    try:
        result = await ask(edge, primed_for("ask_cloud", "Capital of Peru?"), AgentSettings(max_steps=2), cloud=cloud)
    finally:
        await cloud.close()
    assert_priced_and_traced(result)
    first, second = result.decision.steps
    assert first.tool == "ask_cloud"
    assert first.observation.startswith("error: ask_cloud failed: the cloud is unavailable")
    assert second.tool == "answer" and result.answered and result.served_by == BackendKind.EDGE
    [tool_run] = [run for run in result.runs if run.backend == BackendKind.CLOUD]
    assert tool_run.purpose == RunPurpose.TOOL and tool_run.finish_reason == "error"
    assert not result.decision.degraded  # only a failed search degrades the answer's grounding
