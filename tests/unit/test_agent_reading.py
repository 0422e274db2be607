"""The agent's reading of its search results, decided without a model: a scripted fault-injection edge
replies with the steps a test needs, and can fail the reading call."""
from __future__ import annotations

import json
import time
from typing import Mapping, Optional, Sequence, Union

import pytest

from edge.errors import EdgeGenerationError
from router.core.engine import Backends, Router
from router.core.backends import CompletionRecord
from router.core.fault_injection import InjectedDelta
from router.core.modes.agent import EdgeAgentMode
from router.domain.config import AgentSettings, ServerSettings
from router.domain.pricing import CostModel
from router.domain.types import ChatMessage, GenerateRequest, Mode, Passage, RunPurpose
from tests.unit.test_agent_tools import FaultInjectionInfoSource

MODE = Mode.EDGE_AGENT_CLOUD_INFO
COSTS = CostModel(0.15, 0.6, 1.35e8, 7e-10, 0.15)
PASSAGES = (Passage("zorbia#1", "zorbia", "Zorbia was founded by Queen Alma in 1204.", 0.0),)
Reply = Union[str, Exception]


def step(tool: str, text: str) -> str:
    return json.dumps({"thought": "t", "tool": tool, "input": text})


class _ScriptedStream:
    def __init__(self, reply: Reply, prompt_tokens: int) -> None:
        self._reply, self._prompt_tokens, self._sent = reply, prompt_tokens, False
        self.completion: Optional[CompletionRecord] = None

    def __aiter__(self) -> "_ScriptedStream":
        return self

    async def __anext__(self) -> InjectedDelta:
        if isinstance(self._reply, Exception):
            self._finish("", "error")
            raise self._reply
        if self._sent:
            self._finish(self._reply, "stop")
            raise StopAsyncIteration
        self._sent = True
        return InjectedDelta(self._reply, -0.1)

    def _finish(self, text: str, reason: str) -> None:
        if self.completion is None:
            self.completion = CompletionRecord(text=text, model="scripted-fault-injection", completion_tokens=
                                                 len(text.split()), prompt_tokens=self._prompt_tokens, queue_s=0.0,
                                                 ttft_s=0.0, total_s=0.0, finish_reason=reason)

    async def aclose(self) -> None:
        self._finish(self._reply if isinstance(self._reply, str) else "", "cancelled")


class ScriptedFaultInjectionEdge:
    """Never a model: each call streams the next scripted reply at once, or raises it (an injected fault)."""

    def __init__(self, replies: Sequence[Reply]) -> None:
        self.name, self.n_params = "scripted-fault-injection", 0
        self.replies = list(replies)
        self.prompts: list[list[Mapping[str, str]]] = []

    def stream(self, messages: Sequence[Mapping[str, str]], *, max_tokens: int, temperature: float,
               stop: Sequence[str] = (), seed: Optional[int] = None, grammar: Optional[str] = None) -> _ScriptedStream:
        self.prompts.append(list(messages))
        return _ScriptedStream(self.replies.pop(0), sum(len(m["content"].split()) for m in messages))

    def close(self) -> None:
        pass


async def ask(edge: ScriptedFaultInjectionEdge, settings: AgentSettings,
              info: Optional[FaultInjectionInfoSource] = None):
    router = Router(settings=ServerSettings(), costs=COSTS, modes={MODE: EdgeAgentMode(settings)},
                    backends=Backends(edge=edge, cloud=None), info=info or FaultInjectionInfoSource(PASSAGES),
                    ready=True)
    return await router.generate(GenerateRequest(messages=(ChatMessage("user", "Question: Who founded Zorbia?"),),
                                                 mode=MODE, temperature=0.0))


async def test_the_reading_is_served_and_sees_the_passages_the_search_found() -> None:
    edge = ScriptedFaultInjectionEdge([step("search", "Zorbia founder"), step("answer", "Zorbia"), "Queen Alma"])
    result = await ask(edge, AgentSettings())
    assert result.text == "Queen Alma" and result.decision.features["read_search_results"] == 1.0
    assert "Queen Alma in 1204" in edge.prompts[-1][-1]["content"]  # the reader's prompt holds the passage
    assert result.decision.steps[-1].arguments == "Zorbia"  # the step's own answer stays in the trace


@pytest.mark.parametrize("why,replies,settings", [
    ("the reading fails", [step("search", "Zorbia founder"), step("answer", "Zorbia"),
                           EdgeGenerationError("injected fault")], AgentSettings()),
    ("the reading says nothing", [step("search", "Zorbia founder"), step("answer", "Zorbia"), "   "], AgentSettings()),
    ("the dollar cap is spent", [step("search", "Zorbia founder"), step("answer", "Zorbia")],
     AgentSettings(max_usd=1e-6)),
    ("it is turned off", [step("search", "Zorbia founder"), step("answer", "Zorbia")],
     AgentSettings(read_search_results=False)),
    ("the last tool was not a search", [step("search", "Zorbia founder"), step("calculate", "6 * 7"),
                                        step("answer", "Zorbia")], AgentSettings()),
])
async def test_the_steps_own_answer_is_served_when_there_is_no_reading(why: str, replies: list, settings) -> None:
    edge = ScriptedFaultInjectionEdge(replies)
    result = await ask(edge, settings)
    assert result.text == "Zorbia", why
    assert result.decision.features["read_search_results"] == 0.0 and "read from" not in result.decision.reason
    assert not edge.replies, "every scripted reply was used: no call was skipped or added"
    reads = [run for run in result.runs if run.purpose == RunPurpose.ANSWER]
    assert len(reads) == (1 if isinstance(replies[-1], Exception) or replies[-1].strip() == "" else 0)
