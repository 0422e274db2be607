"""The calculator's bounds hold before any work is done, and async callers run it off the event loop."""
from __future__ import annotations

import asyncio
import re
import threading
from typing import Callable

import pytest

from router.core import calculator
from router.core.arbiters import features, scorers
from router.core.arbiters.arithmetic import evaluate as check_step
from router.core.arbiters.features import Draft
from router.core.calculator import MAX_EXPRESSION_CHARS, CalculationError, evaluate
from router.core.modes import agent_tools
from router.core.modes.agent_tools import calculate, calculate_off_loop

DIGITS = "9" * 20_000  # a digit run the old percent pattern read once from each of its digits


class PatternFaultInjection:
    """Stands in for one of the calculator's patterns and fails whenever it is used."""

    def __init__(self, name: str) -> None:
        self.name = name

    def sub(self, *args: object, **kwargs: object) -> str:
        raise AssertionError(f"the {self.name} pattern ran on an input the length limit refuses")


@pytest.mark.parametrize("expression", [DIGITS, DIGITS + "%", "1" + "," * 20_000 + "000", "25% of " * 3000])
def test_an_over_long_input_is_refused_before_any_pattern_runs(expression: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(calculator, "_PERCENT", PatternFaultInjection("percent"))
    monkeypatch.setattr(calculator, "_THOUSANDS_COMMA", PatternFaultInjection("thousands separator"))
    with pytest.raises(CalculationError, match=f"too long .*at most {MAX_EXPRESSION_CHARS}"):
        evaluate(expression)


def test_the_limit_counts_the_written_expression_not_its_rewriting() -> None:
    # Shorter once its currency signs go, but what was written is over the limit, and is refused as such.
    with pytest.raises(CalculationError, match="too long"):
        evaluate("$" * (MAX_EXPRESSION_CHARS + 1) + "1")
    # Surrounding blanks and a trailing "=" are not part of the expression.
    assert evaluate(" " * MAX_EXPRESSION_CHARS + "1 + 1 =" + " " * MAX_EXPRESSION_CHARS) == 2


def test_a_rewriting_that_grows_past_the_limit_is_refused_too() -> None:
    grows = "+".join(["5%"] * 60)  # 179 characters written, "(5/100)" each once rewritten
    assert len(grows) <= MAX_EXPRESSION_CHARS
    with pytest.raises(CalculationError, match="too long"):
        evaluate(grows)


def test_a_twenty_thousand_digit_input_gets_a_clear_refusal_everywhere() -> None:
    result = calculate(DIGITS)
    assert result.answer == "" and re.search(r"too long \(20000 characters; at most \d+\)", result.error)
    assert result.observation.startswith("error: ")
    assert check_step(DIGITS) is None
    assert calculator.is_plain_number(DIGITS) is False


@pytest.mark.parametrize("expression,expected", [("25%", 0.25), ("1.5% * 200", 3.0), ("10 % 3", 1),
                                                 ("50% + 25%", 0.75), ("12.5%", 0.125)])
def test_percentages_still_read_as_fractions(expression: str, expected: float) -> None:
    assert evaluate(expression) == pytest.approx(expected)


def waiting_for_the_event_loop_fault_injection(loop_ran: threading.Event, value: object) -> Callable[..., object]:
    """A stand-in that returns `value` only once the event loop has run a callback: called on the loop
    itself it waits in vain, and fails."""
    def stand_in(*args: object) -> object:
        if not loop_ran.wait(timeout=10):
            raise CalculationError("the event loop was blocked while the calculator ran")
        return value
    return stand_in


async def test_the_agents_calculate_tool_runs_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    loop_ran = threading.Event()
    monkeypatch.setattr(agent_tools, "evaluate", waiting_for_the_event_loop_fault_injection(loop_ran, 4))
    asyncio.get_running_loop().call_soon(loop_ran.set)
    result = await calculate_off_loop("2 + 2")
    assert result.error == "" and result.answer == "4"


async def test_the_arbiters_arithmetic_check_runs_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    loop_ran = threading.Event()
    monkeypatch.setattr(features, "check_arithmetic", waiting_for_the_event_loop_fault_injection(loop_ran, (3, 1)))
    asyncio.get_running_loop().call_soon(loop_ran.set)
    draft = Draft([{"role": "user", "content": "What is 2 + 2?"}], "2 + 2 = 4", (-0.1, -0.2), "stop")
    computed = await scorers.base_features_off_loop(draft)
    assert computed["arithmetic_checked"] == 3.0 and computed["arithmetic_wrong"] == 1.0
