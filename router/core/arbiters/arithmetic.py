"""Checking the arithmetic a chain of thought writes down: "22 - 16 = 6", "\\[ 10 \\times 5 = 50 \\]".

Why: the edge's maths answers that contain a wrong equality are nearly always wrong (8% right on the
corpus's GSM8K train split, against 43% when every checked equality holds), and the check costs no model
call. A small model's slips are often arithmetic, and a calculator catches those; it cannot see a wrong
plan whose sums are right.

An equality is checked when both sides around an "=" end (left) or start (right) with plain arithmetic:
numbers, + - * / and parentheses, after LaTeX's \\times, \\cdot, \\div and \\frac{a}{b} are rewritten and
units in \\text{...}, currency and percent signs are dropped. Pure functions; the evaluator walks the
syntax tree and accepts numbers and the four operations only, so no text is ever executed.
"""
from __future__ import annotations

import ast
import math
import operator
import re
import warnings
from types import MappingProxyType
from typing import Callable, Mapping, Optional

_UNITS = re.compile(r"\\(?:text|mathrm|textbf|mbox)\{[^{}]*\}")
_FRACTION = re.compile(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}")
_MATH_DELIMITER = re.compile(r"\\[\[\]()]")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
# A statement ends at a line, a math delimiter or a clause break; "=" chains inside one are compared pairwise.
_STATEMENT_BREAK = re.compile(r"\n|[:;]|\b(?:so|then|and)\b")
_LEADING_ARITHMETIC = re.compile(r"^[\d.+\-*/() ]+")
_TRAILING_ARITHMETIC = re.compile(r"[\d.+\-*/() ]+$")
_OPERATORS: Mapping[type, Callable[[float, float], float]] = MappingProxyType({
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv})
MAX_EXPRESSION_CHARS = 200  # a longer run of digits and operators is no hand-written step
# Rounding a side to 2 decimals (money) or to a whole number (people, items) is no slip.
_ROUNDINGS = (None, 2, 0)


def normalise(text: str) -> str:
    """The text with LaTeX arithmetic rewritten as plain arithmetic and units, signs and separators gone."""
    text = _UNITS.sub(" ", text)
    text = _FRACTION.sub(r"((\1)/(\2))", text)
    for latex, plain in (("\\times", "*"), ("\\cdot", "*"), ("\\div", "/"), ("×", "*"), ("÷", "/"),
                         ("\\$", ""), ("$", ""), ("\\%", ""), ("%", ""), ("\\!", "")):
        text = text.replace(latex, plain)
    text = _MATH_DELIMITER.sub("\n", text)
    return _THOUSANDS.sub("", text)


def evaluate(expression: str) -> Optional[float]:
    """The value of plain arithmetic (numbers, + - * /, parentheses, unary minus); None for anything else."""
    expression = expression.strip()
    if not expression or len(expression) > MAX_EXPRESSION_CHARS or not any(ch.isdigit() for ch in expression):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)  # "2 (3)" parses as a call, and warns so
            tree = ast.parse(expression, mode="eval")
    except (SyntaxError, ValueError):
        return None
    try:
        value = _value(tree.body)
    except (ZeroDivisionError, OverflowError):
        return None
    return value if value is not None and math.isfinite(value) else None


def _value(node: ast.AST) -> Optional[float]:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _value(node.operand)
        return None if inner is None else (-inner if isinstance(node.op, ast.USub) else inner)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _value(node.left), _value(node.right)
        return None if left is None or right is None else _OPERATORS[type(node.op)](left, right)
    return None


def _agree(left: float, right: float) -> bool:
    for digits in _ROUNDINGS:
        rounded = left if digits is None else round(left, digits)
        if math.isclose(rounded, right, rel_tol=1e-6, abs_tol=1e-9):
            return True
    return False


def check_arithmetic(text: str) -> tuple[int, int]:
    """How many equalities of `text` could be checked, and how many of them are wrong."""
    checked = wrong = 0
    for statement in _STATEMENT_BREAK.split(normalise(text)):
        sides = statement.split("=")
        values: list[Optional[float]] = []
        for index, side in enumerate(sides):
            # The left side's arithmetic is its end ("the total is 3 * 4"), a right side's its start.
            found = (_TRAILING_ARITHMETIC.search(side) if index == 0 else _LEADING_ARITHMETIC.match(side.strip()))
            values.append(evaluate(found.group(0)) if found else None)
        for left, right in zip(values, values[1:]):
            if left is not None and right is not None:
                checked += 1
                wrong += not _agree(left, right)
    return checked, wrong
