"""Checking the arithmetic a chain of thought writes down: "22 - 16 = 6", "\\[ 10 \\times 5 = 50 \\]".

Why: the edge's maths answers that contain a wrong equality are nearly always wrong, and the check costs
no model call. A small model's slips are often arithmetic, and a calculator catches those; it cannot see
a wrong plan whose sums are right.

What counts as a checkable equality is narrow on purpose, because a false "wrong" would send a right
answer to the cloud:
- The text is cut into statements at lines, math delimiters, clause words ("so", "then", "and"), ", "
  and the end of a sentence, so two equalities of one sentence are never compared with each other.
- A left side is checked only when it ends in a computation (an operator between numbers) that stands
  alone: not continuing a word or a symbol ("x + 2", "G_8", "5x - 10"), so an unknown is never read as 0.
- A right side is read up to its first word; a middle side of a chain ("= 3 hours = 180 minutes") is
  compared onwards only when it is plain arithmetic, so a change of unit never reads as a slip.
- Percentages are values ("10%" is 0.1); LaTeX's \\times, \\cdot, \\div and \\frac{a}{b}, and "4 x 5" and
  "3 times 4", are rewritten; units in \\text{...}, currency signs and thousands separators are dropped.
- A right side written as a rounded number is right when the exact value rounds to it at the decimals
  written ("2/3 = 0.667", "5 / 2 = 3").

Pure functions that never raise. Expressions go to the project's safe calculator (router/core/calculator.py:
a syntax-tree walk with bounded results, never `eval`), and every pattern is linear in the text's length.
"""
from __future__ import annotations

import math
import re
from typing import Optional

from router.core import calculator

_UNITS = re.compile(r"\\(?:text|mathrm|textbf|mbox)\{[^{}]*\}")
_FRACTION = re.compile(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}")
_WORD_TIMES = re.compile(r"(?<=\d)\s*(?:\b[xX]\b|\btimes\b)\s*(?=[\d(])")
_PERCENT = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*\\?%")
_MATH_DELIMITER = re.compile(r"\\[\[\]()]")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_STATEMENT_BREAK = re.compile(r"\n|[:;]|,\s|\.\s|\b(?:so|then|and|therefore|thus)\b", re.IGNORECASE)
_ARITHMETIC = "[\\d.+\\-*/() ]"
# A run of arithmetic that does not continue a longer one: each is matched once, so the search is linear.
_TRAILING_RUN = re.compile(f"(?<!{_ARITHMETIC}){_ARITHMETIC}+$")
_LEADING_RUN = re.compile(f"^{_ARITHMETIC}+")
_WHOLE_RUN = re.compile(f"^{_ARITHMETIC}+$")
_BARE_NUMBER = re.compile(r"^\s*-?\d+(?:\.(\d+))?\s*$")
MAX_EXPRESSION_CHARS = 200  # a longer run of digits and operators is no hand-written step
RELATIVE_TOLERANCE = 1e-6


def normalise(text: str) -> str:
    """The text with LaTeX and word arithmetic rewritten as plain arithmetic, percentages as fractions,
    and units, currency signs and thousands separators gone."""
    text = _UNITS.sub(" ", text)
    text = _FRACTION.sub(r"((\1)/(\2))", text)
    for latex, plain in (("\\times", "*"), ("\\cdot", "*"), ("\\div", "/"), ("×", "*"), ("÷", "/"),
                         ("\\$", ""), ("$", ""), ("\\!", "")):
        text = text.replace(latex, plain)
    text = _WORD_TIMES.sub("*", text)
    text = _PERCENT.sub(r"(\1/100)", text)
    text = _MATH_DELIMITER.sub("\n", text)
    return _THOUSANDS.sub("", text)


def evaluate(expression: str) -> Optional[float]:
    """The value of plain arithmetic (numbers, + - * /, parentheses, unary minus) by the shared calculator;
    None for anything else, and for an exponent or a floor division, which no hand-written step uses."""
    expression = expression.strip()
    if len(expression) > MAX_EXPRESSION_CHARS or "**" in expression or "//" in expression:
        return None
    try:
        return float(calculator.evaluate(expression))
    except calculator.CalculationError:
        return None


def _computation(side: str) -> Optional[float]:
    """A left side's value: the computation it ends with, when that stands alone."""
    side = side[-(MAX_EXPRESSION_CHARS + 1):]
    found = _TRAILING_RUN.search(side)
    if not found:
        return None
    run = found.group(0).strip()
    if not run:
        return None
    before = side[:found.start()]
    touching = before[-1:]  # the character the run starts right after, if no space parts them
    # "x + 2", "5x - 10", "hours - 8", "G_8 * 3", "day1 + 2": the run continues an unknown or a name,
    # whose value is not in the text.
    if run[0] in "+*/" or (run[0] == "-" and before.rstrip()[-1:].isalnum()):
        return None
    if found.group(0)[0] == run[0] and (touching.isalnum() or touching in ("_", "^", ")")):
        return None
    if not any(symbol in run.lstrip("-") for symbol in "+-*/"):
        return None  # a bare number ("is 50 = 10", "R^2 = 40000") states, it does not compute
    return evaluate(run)


def _stated(side: str) -> tuple[Optional[float], Optional[int]]:
    """A right side's value, read up to its first word, and the decimals it was written with when it is
    a bare number (None for an expression: it must then hold exactly)."""
    found = _LEADING_RUN.match(side.strip()[:MAX_EXPRESSION_CHARS + 1])
    if not found:
        return None, None
    bare = _BARE_NUMBER.match(found.group(0))
    decimals = (len(bare.group(1)) if bare.group(1) else 0) if bare else None
    return evaluate(found.group(0)), decimals


def _holds(exact: float, stated: float, decimals: Optional[int]) -> bool:
    if math.isclose(exact, stated, rel_tol=RELATIVE_TOLERANCE, abs_tol=1e-9):
        return True
    # Rounded at the decimals written, halves either way ("5 / 2 = 3", "1/8 = 0.13").
    return decimals is not None and abs(exact - stated) <= 0.5 * 10.0 ** -decimals + RELATIVE_TOLERANCE * abs(exact)


def check_arithmetic(text: str) -> tuple[int, int]:
    """How many equalities of `text` could be checked, and how many of them are wrong."""
    checked = wrong = 0
    for statement in _STATEMENT_BREAK.split(normalise(text)):
        sides = statement.split("=")
        for index in range(len(sides) - 1):
            left = sides[index]
            if index == 0:
                exact = _computation(left)
            else:  # a middle side: compared onwards only when it is plain arithmetic
                exact = evaluate(left) if _WHOLE_RUN.match(left.strip()[:MAX_EXPRESSION_CHARS + 1]) else None
            stated, decimals = _stated(sides[index + 1])
            if exact is not None and stated is not None:
                checked += 1
                wrong += not _holds(exact, stated, decimals)
    return checked, wrong
