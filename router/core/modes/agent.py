"""EDGE_AGENT_CLOUD_INFO: the edge runs a bounded tool loop, and calls the cloud and the Info service as tools.

Each step is one edge generation under a GBNF grammar (agent_prompt.py): a JSON object with a
thought, a tool and its input. The tools (agent_tools.py): `search` (the Info service), `ask_cloud`
(one bounded cloud call), `calculate` (arithmetic), and `answer`, which ends the loop. Each tool's
result goes back to the edge as the next turn, trimmed; a failed tool is an "error: ..." observation
and the loop goes on. The answer reaches the client as one delta at the end: the steps are JSON for
the trace (Decision.steps), not text for the client.

Caps, all from [agent]: steps (edge generations, a retried step included), edge tokens over the loop,
dollars (every run's and every retrieval's cost so far), wall time, and the edge's context window.

Before each step the loop checks whether a step may start at all, then whether it is the last one a
cap allows; that step is generated under the answer-only grammar, so the edge itself writes the
answer from everything it has seen:
  - the step cap: the last step it allows is forced to answer (max_steps is never exceeded);
  - the token cap and the context window: a step whose token budget they cut below step_max_tokens is
    forced to answer (max_tokens of a step is also bounded by the tokens left, so the loop never
    generates more than max_tokens);
  - the dollar cap: once spending reaches it, no tool runs again, but one edge step forced to answer
    may still run (it costs only edge energy, and can spend nothing through a tool);
  - the wall-time cap: no step starts after it, and a step is forced to answer when less time is left
    than the mean step has taken, so the loop ends within about one step of the cap. A tool gets
    only the time left (search and ask_cloud are cut off at the cap; a tool is not called past it).
When no step may start (no time, fewer than MIN_STEP_TOKENS tokens, a full context), the loop serves the
best answer so far, in this order: the latest ask_cloud answer (served by the cloud), else the latest
calculate result, else the latest thought (served by the edge), else nothing. The same rule serves a
loop that ends on two unparseable steps in a row. The decision's reason names what ended the loop.

Answers read from the search results ([agent] read_search_results): when the edge answers and the last
tool that worked was a search (a failed call after it does not count), the answer it serves is written by EDGE_RAG_CLOUD_INFO's reader (one more
edge call, the request's own instructions) over the passages the loop's searches found, focused on the
user's question ([info] focus_sentences). The step's own answer stays in the trace. Inside a JSON step
the 0.5B edge answers badly: it copies a sentence of the observation, or a word of the worked examples
(F1 0.10 on 35 SQuAD questions, 0.36 with the reading). After a calculate or ask_cloud the step's answer is served as it is. The reading
is part of the answering step: it does not count against max_steps; its tokens count against max_tokens.
It is skipped once the wall time or the dollar cap is spent, or when the token cap or the edge's context
leaves it fewer than MIN_STEP_TOKENS; if it fails or says nothing, the step's own answer is served.

A search that fails (or that the wall-time cap leaves no time for) marks the decision degraded, as
EDGE_RAG_CLOUD_INFO does. A call the edge repeats (the same tool and input) is not made again: the edge
gets the earlier observation back, and its next step is forced to answer (small models loop).

The request's own max_tokens and stop strings do not apply to the loop: the steps are JSON under a
grammar (a stop string could cut one), and the [agent] caps bound them instead. Steps are greedy
(temperature 0); ask_cloud keeps the request's temperature.
"""
from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import AsyncIterator, Optional, Sequence

from router.core.modes.agent_prompt import (ANSWER, FORCED_ANSWER_NOTE, RETRY_NOTE, TOOLS, ParsedStep,
                                            StepParseError, agent_messages, observation_turn, parse_step,
                                            repeated_observation, step_grammar, trim, with_note)
from router.core.modes.agent_tools import ToolResult, ask_cloud, calculate_off_loop, no_time_left, search
from router.core.backends import is_backend_failure
from router.core.modes.base import ModeContext, ModeEvent, ModeOutcome
from router.core.modes.edge_context import CONTEXT_MARGIN_TOKENS, EdgeContext
from router.core.modes.rag import fit_reading
from router.core.modes.rag_focus import focus_passages
from router.core.modes.rag_prompt import rag_messages, retrieval_query
from router.domain.config import AgentSettings
from router.domain.types import AgentStep, BackendKind, Decision, Mode, Passage, RunPurpose, TextDelta

# Fewer tokens than this cannot hold a step (the JSON's fixed part alone is about 15 tokens).
MIN_STEP_TOKENS = 24
FALLBACK_N_CTX = 4096  # for an edge that does not say its context size
# A loop that ends with an answer; one that a cap or unparseable steps cut short.
FINISH_ANSWERED = "stop"
FINISH_CUT_SHORT = "length"

STEP_GRAMMAR = step_grammar(TOOLS)
ANSWER_GRAMMAR = step_grammar((ANSWER,))
# Until a tool has been called, a step may not answer: left free, the 0.5B edge answered 87 of 116 SQuAD
# questions from memory at step 1 (F1 0.07, as the edge alone), which makes the loop pointless.
TOOL_TOOLS = tuple(tool for tool in TOOLS if tool != ANSWER)
TOOL_GRAMMAR = step_grammar(TOOL_TOOLS)


_GRAMMARS = MappingProxyType({TOOLS: STEP_GRAMMAR, (ANSWER,): ANSWER_GRAMMAR, TOOL_TOOLS: TOOL_GRAMMAR})


@dataclass(frozen=True)
class Cap:
    """Why a step is the last, or why none may start: a name for the features, words for the reason."""

    name: str  # steps | tokens | usd | wall | context | repeat | unparseable
    words: str


@dataclass(frozen=True)
class Ending:
    text: str
    served_by: BackendKind
    finish_reason: str
    how: str  # the reason's last clause: who answered, or which best-so-far answer was served


@dataclass(frozen=True)
class EdgeAgentMode:
    settings: AgentSettings
    focus_sentences: int = 0  # > 0: a search shows the edge only the best-matching sentences ([info])
    mode: Mode = Mode.EDGE_AGENT_CLOUD_INFO

    async def run(self, ctx: ModeContext) -> AsyncIterator[ModeEvent]:
        loop = _ToolLoop(ctx, self.settings, focus_sentences=self.focus_sentences)
        ending = await loop.run()
        if ending.text:
            yield TextDelta(ending.text, ending.served_by, None)
        yield ModeOutcome(text=ending.text, served_by=ending.served_by, finish_reason=ending.finish_reason,
                          decision=loop.decision(self.mode, ending))


@dataclass
class _ToolLoop:
    """One request's loop: its conversation, its trace and what it has spent."""

    ctx: ModeContext
    settings: AgentSettings
    focus_sentences: int = 0
    started: float = field(default_factory=time.monotonic)
    messages: list[dict[str, str]] = field(default_factory=list)
    steps: list[AgentStep] = field(default_factory=list)
    tool_calls: Counter[str] = field(default_factory=Counter)
    edge_tokens: int = 0
    step_seconds: list[float] = field(default_factory=list)
    parse_failures: int = 0
    repeated_calls: int = 0  # calls the edge repeated, answered from the trace instead of the tool
    repeated_last: bool = False  # the latest step repeated a call: the next one must answer
    search_failures: list[str] = field(default_factory=list)
    tool_errors: int = 0
    best_cloud: tuple[int, str] = (0, "")  # (step, text) of the latest ask_cloud answer
    best_result: tuple[int, str] = (0, "")  # of the latest calculate result
    best_thought: tuple[int, str] = (0, "")  # of the latest thought
    sources: list[Passage] = field(default_factory=list)  # what the searches found, first found first
    last_tool: str = ""  # the latest tool that worked (a repeated call does not count)
    read_answer: bool = False  # the served answer was read from `sources`
    cap: Optional[Cap] = None  # what ended (or forced the end of) the loop

    def __post_init__(self) -> None:
        self.messages = agent_messages(self.ctx.messages)

    # -- the loop ---------------------------------------------------------------------------------

    async def run(self) -> Ending:
        retrying = False
        while True:
            stop, room = await self._stop_before_step()
            if stop is not None:
                self.cap = stop
                return self._best_so_far(f"{stop.words} ended the loop before step {len(self.steps) + 1}")
            forced = self._forced_by(room)
            allowed = (ANSWER,) if forced else (TOOLS if self._tool_called() else TOOL_TOOLS)
            text, step_started = await self._generate(forced, room, retrying, allowed)
            try:
                step = parse_step(text, allowed)
            except StepParseError as exc:
                self._record_unparseable(text, str(exc), step_started)
                if retrying:
                    self.cap = Cap("unparseable", "two unparseable steps in a row")
                    return self._best_so_far(f"steps {len(self.steps) - 1} and {len(self.steps)} could not "
                                             f"be parsed")
                retrying = True
                continue
            retrying = False
            if step.thought:
                self.best_thought = (len(self.steps) + 1, step.thought)
            if step.tool == ANSWER:
                return await self._answered(step, forced, step_started)
            await self._use_tool(step, step_started)

    def _tool_called(self) -> bool:
        """A tool was tried (a failed one counts: the loop must not wait on a service that is down)."""
        return any(step.tool not in ("", ANSWER) for step in self.steps)

    async def _generate(self, forced: Optional[Cap], room: int, retrying: bool,
                        allowed: Sequence[str] = TOOLS) -> tuple[str, float]:
        """One step's text from the edge, under the grammar of the tools `allowed` (only "answer" when
        `forced`; no "answer" before a tool has been called)."""
        messages = self.messages
        notes = [note for note, wanted in ((RETRY_NOTE, retrying), (FORCED_ANSWER_NOTE, forced)) if wanted]
        if notes:
            messages = with_note(messages, " ".join(notes))
        step_started = time.monotonic()
        run = await self.ctx.call(BackendKind.EDGE, messages=messages, purpose=RunPurpose.AGENT_STEP,
                                  grammar=_GRAMMARS[tuple(allowed)], max_tokens=room,
                                  temperature=0.0, stop=()).collect()
        self.edge_tokens += run.completion_tokens
        if forced is not None:
            self.cap = forced
        return run.text, step_started

    async def _use_tool(self, step: ParsedStep, step_started: float) -> None:
        index = len(self.steps) + 1
        earlier = self._same_call_before(step)
        self.repeated_last = earlier is not None
        if earlier is not None:
            # The same call again would give the same result (and spend again): the edge is looping, so
            # it gets the earlier observation back, and its next step must answer.
            self.repeated_calls += 1
            result = ToolResult(repeated_observation(earlier.observation, step.tool, earlier.index))
        else:
            result = await self._call_tool(step)
            self.tool_calls[step.tool] += 1
        if result.error:
            self.tool_errors += 1
            if step.tool == "search":
                self.search_failures.append(result.error)
        elif step.tool == "ask_cloud" and result.answer:
            self.best_cloud = (index, result.answer)
        elif step.tool == "calculate" and result.answer:
            self.best_result = (index, result.answer)
        if earlier is None and not result.error:
            self.last_tool = step.tool
            known = {passage.passage_id for passage in self.sources}
            self.sources += [passage for passage in result.passages if passage.passage_id not in known]
        observation = trim(result.observation, self.settings.observation_max_chars)
        self.steps.append(AgentStep(index=index, thought=step.thought, tool=step.tool, arguments=step.input,
                                    observation=observation, cost_usd=result.cost_usd,
                                    latency_s=result.latency_s, error=result.error))
        self.messages += [{"role": "assistant", "content": step.as_json()}, observation_turn(observation)]
        self.step_seconds.append(time.monotonic() - step_started)

    def _same_call_before(self, step: ParsedStep) -> Optional[AgentStep]:
        """The first earlier step that made the same call (the same tool and input). A failed search or
        cloud call is not called again either: small models repeat a failed call step after step."""
        return next((earlier for earlier in self.steps
                     if earlier.tool == step.tool and earlier.arguments == step.input), None)

    async def _call_tool(self, step: ParsedStep) -> ToolResult:
        if step.tool == "calculate":
            return await calculate_off_loop(step.input)
        time_left = self._time_left()
        if time_left <= 0:
            return no_time_left(step.tool)
        settings = self.settings
        if step.tool == "search":
            return await search(self.ctx, step.input, k=settings.search_k, max_chars=settings.observation_max_chars,
                                timeout_s=time_left, focus_sentences=self.focus_sentences)
        return await ask_cloud(self.ctx, step.input, max_tokens=settings.ask_cloud_max_tokens,
                               max_chars=settings.observation_max_chars, timeout_s=time_left)

    # -- caps -------------------------------------------------------------------------------------

    def _time_left(self) -> float:
        return self.settings.max_wall_s - (time.monotonic() - self.started)

    def spent_usd(self) -> float:
        return sum(run.cost_usd for run in self.ctx.runs) + sum(call.cost_usd for call in self.ctx.info_calls)

    async def _stop_before_step(self) -> tuple[Optional[Cap], int]:
        """Why no step may start now (or None), and how many tokens the next step may generate."""
        settings = self.settings
        if self._time_left() <= 0:
            return Cap("wall", f"the wall-time cap (max_wall_s={settings.max_wall_s:g})"), 0
        if len(self.steps) >= settings.max_steps:
            return Cap("steps", f"the step cap (max_steps={settings.max_steps})"), 0
        tokens_left = settings.max_tokens - self.edge_tokens
        if tokens_left < MIN_STEP_TOKENS:
            return Cap("tokens", f"the token cap (max_tokens={settings.max_tokens} edge tokens)"), 0
        budget = min(settings.step_max_tokens, tokens_left)
        if not self.steps:
            # Only the request has grown the prompt so far: if it does not fit, the edge refuses it with
            # its own error (prompt too long), as in every other mode.
            return None, budget
        context_room = await self._context_room()
        if context_room < MIN_STEP_TOKENS:
            return Cap("context", f"the edge's context window ({max(context_room, 0)} tokens left)"), 0
        return None, min(budget, context_room)

    def _forced_by(self, room: int) -> Optional[Cap]:
        """The cap that makes the coming step the last one, so it must answer (None: a free step)."""
        settings = self.settings
        if len(self.steps) + 1 >= settings.max_steps:
            return Cap("steps", f"the step cap (max_steps={settings.max_steps})")
        if self.spent_usd() >= settings.max_usd:
            return Cap("usd", f"the dollar cap (max_usd=${settings.max_usd:g})")
        if room < settings.step_max_tokens:
            if settings.max_tokens - self.edge_tokens <= room:
                return Cap("tokens", f"the token cap (max_tokens={settings.max_tokens} edge tokens)")
            return Cap("context", f"the edge's context window ({room} tokens left for a step)")
        if self.repeated_last:
            return Cap("repeat", "a repeated tool call")
        if self.step_seconds and self._time_left() < sum(self.step_seconds) / len(self.step_seconds):
            return Cap("wall", f"the wall-time cap (max_wall_s={settings.max_wall_s:g})")
        return None

    async def _context_room(self) -> int:
        """Tokens the edge's context has left for the next step's output (counting is blocking: a thread)."""
        edge = self.ctx.backend(BackendKind.EDGE)
        context = EdgeContext.of(edge, FALLBACK_N_CTX)
        # The longest prompt a step can have: the notes of a retried, forced step included.
        prompt = with_note(self.messages, f"{RETRY_NOTE} {FORCED_ANSWER_NOTE}")
        return context.n_ctx - await asyncio.to_thread(context.count_prompt, prompt) - CONTEXT_MARGIN_TOKENS

    # -- the end ----------------------------------------------------------------------------------

    def _record_unparseable(self, text: str, error: str, step_started: float) -> None:
        self.parse_failures += 1
        self.steps.append(AgentStep(index=len(self.steps) + 1, thought="", tool="", arguments="",
                                    observation="", error=f"unparseable step: {error}; it read {trim(text, 200)!r}"))
        self.step_seconds.append(time.monotonic() - step_started)

    async def _answered(self, step: ParsedStep, forced: Optional[Cap], step_started: float) -> Ending:
        index = len(self.steps) + 1
        self.tool_calls[ANSWER] += 1
        text, finish_reason, read_from = step.input, FINISH_ANSWERED, ""
        read = await self._read_sources() if self._reads_search_results() else None
        if read is not None:
            text, finish_reason = read
            self.read_answer = True
            read_from = (f"; the answer was read from the {len(self.sources)} passage"
                         f"{'s' if len(self.sources) != 1 else ''} its searches found")
        self.steps.append(AgentStep(index=index, thought=step.thought, tool=ANSWER, arguments=step.input,
                                    observation=text if self.read_answer else ""))
        self.step_seconds.append(time.monotonic() - step_started)
        if forced is not None:
            how = f"{forced.words} forced step {index} to answer; the edge answered"
        else:
            how = f"the edge answered at step {index}"
        return Ending(text, BackendKind.EDGE, finish_reason, how + read_from)

    def _reads_search_results(self) -> bool:
        return (self.settings.read_search_results and self.last_tool == "search" and bool(self.sources)
                and self._time_left() > 0 and self.spent_usd() < self.settings.max_usd)

    async def _read_sources(self) -> Optional[tuple[str, str]]:
        """The reader's answer over what the searches found, and its finish reason (one edge call); None
        when there is no room for it (the token cap, the edge's context) or it fails or says nothing: the
        step's own answer is served then, and a loop that has answered never fails for its reading."""
        ctx = self.ctx
        question = retrieval_query(ctx.messages, ctx.request.metadata)
        reading = focus_passages(question, self.sources, self.focus_sentences)
        edge = ctx.backend(BackendKind.EDGE)
        wanted = min(ctx.params.max_tokens, self.settings.max_tokens - self.edge_tokens)

        def prepare() -> Optional[tuple[int, list[dict[str, str]]]]:
            context = EdgeContext.of(edge, FALLBACK_N_CTX)
            room = context.n_ctx - context.count_prompt(rag_messages(ctx.messages, [])) - CONTEXT_MARGIN_TOKENS
            max_tokens = min(wanted, room)
            if max_tokens < min(ctx.params.max_tokens, MIN_STEP_TOKENS):
                return None
            return max_tokens, fit_reading(edge, ctx.messages, reading, max_tokens, fallback_n_ctx=FALLBACK_N_CTX)[1]

        prepared = await asyncio.to_thread(prepare)
        if prepared is None:
            return None
        max_tokens, prompt = prepared
        call = ctx.call(BackendKind.EDGE, messages=prompt, max_tokens=max_tokens)
        try:
            await call.collect()
        except Exception as exc:
            if not is_backend_failure(exc):
                raise  # not a backend failure: a bug, which must not pass for a failed reading
        run = call.run
        if run is None:
            return None
        self.edge_tokens += run.completion_tokens
        text = run.text.strip()
        return (text, run.finish_reason) if text and run.finish_reason != "error" else None

    def _best_so_far(self, why: str) -> Ending:
        cloud_step, cloud_text = self.best_cloud
        if cloud_text:
            return Ending(cloud_text, BackendKind.CLOUD, FINISH_CUT_SHORT,
                          f"{why}; served the latest ask_cloud answer (step {cloud_step})")
        result_step, result = self.best_result
        if result:
            return Ending(result, BackendKind.EDGE, FINISH_CUT_SHORT,
                          f"{why}; served the latest calculate result (step {result_step})")
        thought_step, thought = self.best_thought
        if thought:
            return Ending(thought, BackendKind.EDGE, FINISH_CUT_SHORT,
                          f"{why}; served the latest thought (step {thought_step})")
        return Ending("", BackendKind.EDGE, FINISH_CUT_SHORT, f"{why}; no answer so far, so none was served")

    def decision(self, mode: Mode, ending: Ending) -> Decision:
        reason = f"EDGE_AGENT_CLOUD_INFO: {ending.how}"
        tools = ", ".join(f"{tool} x{count}" for tool, count in sorted(self.tool_calls.items()))
        reason += f" ({len(self.steps)} step{'s' if len(self.steps) != 1 else ''}: {tools or 'no tool called'})"
        if self.search_failures:
            reason += f"; degraded: search failed ({self.search_failures[-1]})"
        features: dict[str, float] = {
            "steps": float(len(self.steps)), "edge_tokens": float(self.edge_tokens),
            "parse_failures": float(self.parse_failures), "repeated_calls": float(self.repeated_calls),
            "tool_errors": float(self.tool_errors),
            "search_failures": float(len(self.search_failures)), "spent_usd": self.spent_usd(),
            "loop_s": time.monotonic() - self.started, "read_search_results": float(self.read_answer),
            "sources": float(len(self.sources)),
            **{f"tool_{tool}": float(self.tool_calls[tool]) for tool in TOOLS},
        }
        if self.cap is not None:
            features[f"cap_{self.cap.name}"] = 1.0
        return Decision(mode=mode, arbiter="agent", reason=reason, degraded=bool(self.search_failures),
                        escalated=ending.served_by == BackendKind.CLOUD, features=features,
                        steps=tuple(self.steps))
