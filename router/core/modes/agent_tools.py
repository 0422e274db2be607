"""EDGE_AGENT_CLOUD_INFO's tools: calculate, search and ask_cloud.

Each tool returns a ToolResult: the observation the edge reads next (formatted and trimmed by
agent_prompt.py), and the tool's own error, cost and latency for the trace. A tool never raises for a
failure the loop can go on after (a bad expression, the Info service down, the cloud failing): the
failure becomes an observation "error: ...", so one failed tool call does not fail the request.

`calculate` is an arithmetic evaluator over Python's `ast`, never `eval`: numbers, + - * / // % **,
unary minus and plus, parentheses and round/abs/min/max. Anything else (names, attributes, strings,
other calls, comparisons, subscripts) is refused with an error that says what is allowed. Exponents
and results are bounded, so that no expression can spend the CPU or the memory of the daemon.
"""
from __future__ import annotations

import ast
import asyncio
import math
import operator
import re
import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Mapping, Union

from router.core.backends import translate_backend_error
from router.core.info import InfoError
from router.core.modes.agent_prompt import (calculation_observation, cloud_observation, error_observation,
                                            search_observation)
from router.core.modes.base import ModeContext
from router.core.modes.rag_focus import focus_passages
from router.domain.errors import RouterError
from router.domain.types import BackendKind, Passage, RunPurpose

Number = Union[int, float]

# An expression longer than this is no arithmetic the edge needs; it also bounds the parser's nesting.
MAX_EXPRESSION_CHARS = 300
# Results (and every intermediate value) stay below 10**MAX_RESULT_DIGITS in magnitude.
MAX_RESULT_DIGITS = 100
MAX_ABS_EXPONENT = 1000
# Past the wall-time cap a tool gets this much longer to answer, for its own timeout to fire first.
TOOL_TIMEOUT_GRACE_S = 0.25

ALLOWED_SUMMARY = "numbers, + - * / // % ** ( ) and round, abs, min, max"
# What small models write for arithmetic that Python spells differently.
_SPELLINGS = (("×", "*"), ("÷", "/"), ("−", "-"), ("^", "**"), ("$", ""))
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")  # 1,250 is one number, not a tuple
# 25% is a quarter where no number follows the sign; 10 % 3 stays the remainder.
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%(?!\s*[\d(.])")


class CalculationError(ValueError):
    """An expression the calculator refuses or cannot evaluate; the message is for the edge to read."""


@dataclass(frozen=True)
class ToolResult:
    observation: str  # what the edge reads next, trimmed
    error: str = ""  # why the tool failed; "" when it worked
    cost_usd: float = 0.0  # the tool's own spend (a search, a cloud call)
    latency_s: float = 0.0
    answer: str = ""  # the tool's answer alone, for the best-so-far rule (a cloud answer, a result)
    passages: tuple[Passage, ...] = ()  # what a search found, whole (the observation may show less)


# -- calculate ---------------------------------------------------------------------------------------

def _bounded(value: Number) -> Number:
    if isinstance(value, float) and not math.isfinite(value):
        raise CalculationError("the result is not a finite number")
    if abs(value) >= 10 ** MAX_RESULT_DIGITS:
        raise CalculationError(f"the result is too large (more than {MAX_RESULT_DIGITS} digits)")
    return value


def _power(base: Number, exponent: Number) -> Number:
    if abs(exponent) > MAX_ABS_EXPONENT:
        raise CalculationError(f"the exponent {exponent:g} is too large (at most {MAX_ABS_EXPONENT})")
    # Refuse before computing: 9**999 is cheap to refuse and costly to build.
    if exponent > 0 and abs(base) > 1 and exponent * math.log10(abs(base)) >= MAX_RESULT_DIGITS:
        raise CalculationError(f"the result is too large (more than {MAX_RESULT_DIGITS} digits)")
    if base == 0 and exponent < 0:
        raise CalculationError("division by zero")
    result = base ** exponent
    if isinstance(result, complex):
        raise CalculationError("a negative number to a fractional power is not a real number")
    return result


def _divide(operation: Callable[[Number, Number], Number]) -> Callable[[Number, Number], Number]:
    def checked(left: Number, right: Number) -> Number:
        if right == 0:
            raise CalculationError("division by zero")
        return operation(left, right)
    return checked


_BINARY: Mapping[type, Callable[[Number, Number], Number]] = MappingProxyType({
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: _divide(operator.truediv), ast.FloorDiv: _divide(operator.floordiv), ast.Mod: _divide(operator.mod),
    ast.Pow: _power,
})
_UNARY: Mapping[type, Callable[[Number], Number]] = MappingProxyType({ast.USub: operator.neg, ast.UAdd: operator.pos})


def _round(value: Number, digits: Number = 0) -> Number:
    if not isinstance(digits, int) or not -MAX_RESULT_DIGITS <= digits <= MAX_RESULT_DIGITS:
        raise CalculationError("round() takes a whole number of digits")
    return round(value, digits) if digits else round(value)


_FUNCTIONS: Mapping[str, tuple[Callable[..., Number], int, int]] = MappingProxyType({  # name: (function, least, most arguments)
    "round": (_round, 1, 2), "abs": (abs, 1, 1), "min": (min, 2, 20), "max": (max, 2, 20),
})


def _evaluate(node: ast.AST) -> Number:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise CalculationError(f"only numbers are allowed, not {type(node.value).__name__} "
                                   f"{node.value!r:.40}; use {ALLOWED_SUMMARY}")
        return _bounded(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _bounded(_BINARY[type(node.op)](_evaluate(node.left), _evaluate(node.right)))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.Call):
        return _call(node)
    if isinstance(node, ast.Name):
        raise CalculationError(f"names are not allowed ({node.id!r}); write the numbers themselves")
    if isinstance(node, ast.Attribute):
        raise CalculationError("attribute access is not allowed; use " + ALLOWED_SUMMARY)
    raise CalculationError(f"{type(node).__name__} is not allowed; use {ALLOWED_SUMMARY}")


def _call(node: ast.Call) -> Number:
    name = node.func.id if isinstance(node.func, ast.Name) else None
    if name not in _FUNCTIONS:
        shown = f"{name!r}" if name else "this call"
        raise CalculationError(f"function {shown} is not allowed; only round, abs, min and max are")
    if node.keywords or any(isinstance(arg, ast.Starred) for arg in node.args):
        raise CalculationError(f"{name}() takes plain numbers only")
    function, least, most = _FUNCTIONS[name]
    if not least <= len(node.args) <= most:
        raise CalculationError(f"{name}() takes {least} to {most} numbers, not {len(node.args)}")
    return _bounded(function(*(_evaluate(arg) for arg in node.args)))


def evaluate(expression: str) -> Number:
    """The value of an arithmetic expression; raises CalculationError for anything else."""
    text = expression.strip().rstrip("=").strip()
    for written, python in _SPELLINGS:
        text = text.replace(written, python)
    text = _PERCENT.sub(r"(\1/100)", _THOUSANDS_COMMA.sub("", text))
    if not text:
        raise CalculationError("the expression is empty; write arithmetic such as (20 - 4) * 3")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise CalculationError(f"the expression is too long (at most {MAX_EXPRESSION_CHARS} characters)")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError) as exc:  # ValueError: a null byte
        raise CalculationError(f"not arithmetic ({getattr(exc, 'msg', exc)}); write numbers and operators only, "
                               f"e.g. (20 - 4) * 3") from None
    except (RecursionError, MemoryError):
        raise CalculationError("the expression is nested too deeply") from None
    try:
        return _evaluate(tree)
    except OverflowError:
        raise CalculationError(f"the result is too large (more than {MAX_RESULT_DIGITS} digits)") from None
    except RecursionError:
        raise CalculationError("the expression is nested too deeply") from None


def format_number(value: Number) -> str:
    """Whole numbers without a decimal point (12, not 12.0); others to 10 significant digits."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, float):
        return format(value, ".10g")
    return str(value)


def is_plain_number(expression: str) -> bool:
    """Whether the expression is one number and nothing to calculate (small models "calculate" 24)."""
    try:
        node = ast.parse(expression.strip().rstrip("=").replace(",", "").strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        node = node.operand
    return isinstance(node, ast.Constant)


def calculate(expression: str) -> ToolResult:
    started = time.perf_counter()
    try:
        result = format_number(evaluate(expression))
    except CalculationError as exc:
        return ToolResult(error_observation(str(exc)), error=str(exc), latency_s=time.perf_counter() - started)
    observation = calculation_observation(expression, result, already_a_number=is_plain_number(expression))
    return ToolResult(observation, answer=result, latency_s=time.perf_counter() - started)


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
