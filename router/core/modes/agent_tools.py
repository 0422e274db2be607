"""EDGE_AGENT_CLOUD_INFO's tools: calculate, search and ask_cloud.

Each tool returns a ToolResult: the observation the edge reads next (formatted and trimmed by
agent_prompt.py), and the tool's own error, cost and latency for the trace. A tool never raises for a
failure the loop can go on after (a bad expression, the Info service down, the cloud failing): the
failure becomes an observation "error: ...", so one failed tool call does not fail the request.

`calculate` is the safe evaluator of router/core/calculator.py: numbers, + - * / // % **, parentheses
and round/abs/min/max, bounded; anything else is refused with an error that says what is allowed.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from router.core.backends import translate_backend_error
from router.core.calculator import CalculationError, evaluate, format_number, is_plain_number
from router.core.info import InfoError
from router.core.modes.agent_prompt import (calculation_observation, cloud_observation, error_observation,
                                            search_observation)
from router.core.modes.base import ModeContext
from router.core.modes.rag_focus import focus_passages
from router.domain.errors import RouterError
from router.domain.types import BackendKind, Passage, RunPurpose

# Past the wall-time cap a tool gets this much longer to answer, for its own timeout to fire first.
TOOL_TIMEOUT_GRACE_S = 0.25


@dataclass(frozen=True)
class ToolResult:
    observation: str  # what the edge reads next, trimmed
    error: str = ""  # why the tool failed; "" when it worked
    cost_usd: float = 0.0  # the tool's own spend (a search, a cloud call)
    latency_s: float = 0.0
    answer: str = ""  # the tool's answer alone, for the best-so-far rule (a cloud answer, a result)
    passages: tuple[Passage, ...] = ()  # what a search found, whole (the observation may show less)


# -- calculate ---------------------------------------------------------------------------------------

def calculate(expression: str) -> ToolResult:
    """The tool's result, computed on the calling thread (see calculate_off_loop for async callers)."""
    started = time.perf_counter()
    try:
        result = format_number(evaluate(expression))
    except CalculationError as exc:
        return ToolResult(error_observation(str(exc)), error=str(exc), latency_s=time.perf_counter() - started)
    observation = calculation_observation(expression, result, already_a_number=is_plain_number(expression))
    return ToolResult(observation, answer=result, latency_s=time.perf_counter() - started)


async def calculate_off_loop(expression: str) -> ToolResult:
    """`calculate` in a worker thread: the expression is the edge's text, and however cheap the calculator's
    bounds make it, parsing it is CPU work that does not belong on the event loop."""
    return await asyncio.to_thread(calculate, expression)


# -- search and ask_cloud ----------------------------------------------------------------------------

async def search(ctx: ModeContext, query: str, *, k: int, max_chars: int, timeout_s: float,
                 focus_sentences: int = 0) -> ToolResult:
    """The Info service's k best passages for the request's caller; ctx.retrieve records the call
    (and its cost) however it ends. A failure, or no answer within `timeout_s`, is an error observation.
    `focus_sentences` > 0: the observation holds only the passages' sentences that best match the query
    (rag_focus.py), as EDGE_RAG_CLOUD_INFO's reader does."""
    started = time.perf_counter()
    recorded = len(ctx.info_calls)
    try:
        async with asyncio.timeout(timeout_s + TOOL_TIMEOUT_GRACE_S):
            passages = await ctx.retrieve(query, k=k, operation="search", timeout_s=timeout_s)
    except InfoError as exc:
        error = exc.reason if str(exc) in ("", exc.reason) else f"{exc.reason}: {exc}"
    except TimeoutError:
        error = f"info service timed out (no answer in {timeout_s:.3g} s)"
    else:
        error = ""
    cost = sum(call.cost_usd for call in ctx.info_calls[recorded:])
    latency = time.perf_counter() - started
    if error:
        return ToolResult(error_observation(f"search failed: {error}"), error=error, cost_usd=cost, latency_s=latency)
    shown = focus_passages(query, passages, focus_sentences)
    return ToolResult(search_observation(shown, max_chars), cost_usd=cost, latency_s=latency, passages=tuple(passages))


async def ask_cloud(ctx: ModeContext, question: str, *, max_tokens: int, max_chars: int,
                    timeout_s: float) -> ToolResult:
    """One bounded call to the cloud with the edge's question alone; its answer is data for the edge.
    A cloud failure (router/core/backends.py's errors), or no answer within `timeout_s`, is an error
    observation; the call's run (and what it spent) stays in the context either way."""
    started = time.perf_counter()
    recorded = len(ctx.runs)
    error = ""
    text = ""
    try:
        async with asyncio.timeout(timeout_s):
            run = await ctx.call(BackendKind.CLOUD, messages=[{"role": "user", "content": question}],
                                 purpose=RunPurpose.TOOL, max_tokens=max_tokens, stop=()).collect()
            text = run.text
    except TimeoutError:
        error = f"the cloud did not answer in {timeout_s:.3g} s"
    except RouterError as exc:  # the cloud backend is not loaded
        error = exc.message
    except Exception as exc:
        translated = translate_backend_error(exc)
        if translated is None:  # not a backend failure: a bug, which must not pass for a tool error
            raise
        error = translated.message
    cost = sum(run.cost_usd for run in ctx.runs[recorded:])
    latency = time.perf_counter() - started
    if error:
        return ToolResult(error_observation(f"ask_cloud failed: {error}"), error=error, cost_usd=cost,
                          latency_s=latency)
    return ToolResult(cloud_observation(text, max_chars), cost_usd=cost, latency_s=latency, answer=text.strip())


def no_time_left(tool: str) -> ToolResult:
    """A tool the wall-time cap leaves no time for is not called."""
    reason = "not run: the wall-time cap was reached"
    return ToolResult(error_observation(f"{tool} {reason}"), error=reason)
