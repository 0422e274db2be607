"""A safe arithmetic evaluator over Python's `ast`, never `eval`: numbers, + - * / // % **, unary minus and
plus, parentheses and round/abs/min/max. Anything else (names, attributes, strings, other calls,
comparisons, subscripts) is refused with a CalculationError that says what is allowed. Exponents and
results are bounded, so that no expression can spend the CPU or the memory of the daemon.

Used by the agent's `calculate` tool (router/core/modes/agent_tools.py), whose error messages the edge
reads, and by the arbiters' check of the arithmetic in a chain of thought (router/core/arbiters/arithmetic.py).
"""
from __future__ import annotations

import ast
import math
import operator
import re
from types import MappingProxyType
from typing import Callable, Mapping, Union

Number = Union[int, float]

# An expression longer than this is no arithmetic the edge needs; it also bounds the parser's nesting.
MAX_EXPRESSION_CHARS = 300
# Results (and every intermediate value) stay below 10**MAX_RESULT_DIGITS in magnitude.
MAX_RESULT_DIGITS = 100
MAX_ABS_EXPONENT = 1000

ALLOWED_SUMMARY = "numbers, + - * / // % ** ( ) and round, abs, min, max"
# What small models write for arithmetic that Python spells differently.
_SPELLINGS = (("×", "*"), ("÷", "/"), ("−", "-"), ("^", "**"), ("$", ""))
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")  # 1,250 is one number, not a tuple
# 25% is a quarter where no number follows the sign; 10 % 3 stays the remainder. A match starts only where
# a number starts, so a long run of digits is read once, not once from each of its digits.
_PERCENT = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*%(?!\s*[\d(.])")


class CalculationError(ValueError):
    """An expression the calculator refuses or cannot evaluate; the message is for the edge to read."""


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


def _refuse_long(text: str) -> None:
    if len(text) > MAX_EXPRESSION_CHARS:
        raise CalculationError(f"the expression is too long ({len(text)} characters; at most "
                               f"{MAX_EXPRESSION_CHARS})")


def evaluate(expression: str) -> Number:
    """The value of an arithmetic expression; raises CalculationError for anything else."""
    text = expression.strip().rstrip("=").strip()
    # Checked before any rewriting or pattern runs, so that no input costs more than a short one; and
    # again after, because the rewrites lengthen the text ("5%" becomes "(5/100)").
    _refuse_long(text)
    for written, python in _SPELLINGS:
        text = text.replace(written, python)
    text = _PERCENT.sub(r"(\1/100)", _THOUSANDS_COMMA.sub("", text))
    if not text:
        raise CalculationError("the expression is empty; write arithmetic such as (20 - 4) * 3")
    _refuse_long(text)
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
    if len(expression) > MAX_EXPRESSION_CHARS:
        return False
    try:
        node = ast.parse(expression.strip().rstrip("=").replace(",", "").strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        node = node.operand
    return isinstance(node, ast.Constant)
