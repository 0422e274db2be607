"""Answer scoring shared by the bench and the ledger: one definition of "correct".

GSM8K-style answers are scored on their final number (numeric compare, commas and currency signs
stripped); SQuAD-style answers by exact match and token F1 after the official SQuAD v1.1
normalisation, taking the best over the gold answers. Pure functions, no imports from the router.
"""
from __future__ import annotations

import math
import re
import string
from collections import Counter
from dataclasses import dataclass
from typing import Optional, Sequence

NUMERIC = "numeric"
TEXT = "text"
METHODS = (NUMERIC, TEXT)

# Two numbers are equal when they agree to one part in a billion: loose enough for float parsing
# ("0.1 + 0.2"), tight enough that a gold of 192,000,000 does not accept 192,000,001. The absolute floor
# keeps a gold of 0 from demanding bit-exact zero.
_RELATIVE_TOLERANCE = 1e-9
_ABSOLUTE_TOLERANCE = 1e-9

_GSM8K_MARKER = "####"
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")  # LaTeX \boxed{42}, how Qwen models mark a final answer
_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")

# A number as people write it in prose: an optional sign glued to it (but not a hyphen glued to a
# word before it, so "5-3" and "COVID-19" yield no negatives), an optional currency sign, thousands
# groups or plain digits, an optional decimal part. A trailing full stop is not a decimal point
# ("The answer is 42.").
_NUMBER_IN_TEXT = re.compile(
    r"(?:(?<![\w)])(?P<sign>[-+−]))?"
    r"[$€£]?"
    r"(?P<digits>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
)
# The whole string must be one number, give or take a currency sign, a percent sign, a trailing
# full stop and white space.
_WHOLE_NUMBER = re.compile(
    r"\s*(?P<sign_before>[-+−]?)\s*[$€£]?\s*(?P<sign_after>[-+−]?)\s*"
    r"(?P<digits>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    r"\s*%?\s*\.?\s*"
)


def normalize_answer(s: str) -> str:
    """The official SQuAD v1.1 normalisation: lower-case, drop punctuation, drop the articles
    a/an/the, collapse white space (applied in that order, as the official script does)."""
    lowered = s.lower()
    no_punctuation = "".join(ch for ch in lowered if ch not in _PUNCTUATION)
    no_articles = _ARTICLES.sub(" ", no_punctuation)
    return " ".join(no_articles.split())


def exact_match(prediction: str, gold: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(gold)


def token_f1(prediction: str, gold: str) -> float:
    """Token-overlap F1 after normalisation, as in the official SQuAD script.

    When either side normalises to nothing, F1 is 1.0 if both do and 0.0 otherwise (the SQuAD 2.0
    rule); v1.1 golds are never empty, and this keeps F1 consistent with exact match.
    """
    prediction_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not prediction_tokens or not gold_tokens:
        return float(prediction_tokens == gold_tokens)
    common = Counter(prediction_tokens) & Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(prediction_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _to_float(sign: str, digits: str) -> float:
    value = float(digits.replace(",", ""))
    return -value if sign in ("-", "−") else value


def parse_number(s: str) -> Optional[float]:
    """The number a whole string stands for, or None: "$1,000" -> 1000.0, "50%" -> 50.0,
    "-2.5" -> -2.5, "1,234.5" -> 1234.5, "42." -> 42.0."""
    match = _WHOLE_NUMBER.fullmatch(s)
    if match is None:
        return None
    if match["sign_before"] and match["sign_after"]:
        return None
    return _to_float(match["sign_before"] or match["sign_after"], match["digits"])


def _numbers_in(text: str) -> list[float]:
    return [_to_float(m["sign"] or "", m["digits"]) for m in _NUMBER_IN_TEXT.finditer(text)]


def final_number(text: str) -> Optional[float]:
    """The answer's number: the first number after the last '####' when there is one, else the
    first number in the last \\boxed{...}, else the last number anywhere in the text (models that
    forget to mark their answer still get scored; prose after a marked answer does not count)."""
    marker_at = text.rfind(_GSM8K_MARKER)
    if marker_at >= 0:
        after_marker = _numbers_in(text[marker_at + len(_GSM8K_MARKER):])
        if after_marker:
            return after_marker[0]
    for boxed in reversed(_BOXED.findall(text)):
        in_box = _numbers_in(boxed)
        if in_box:
            return in_box[0]
    numbers = _numbers_in(text)
    return numbers[-1] if numbers else None


def gsm8k_gold(answer_field: str) -> str:
    """The gold answer of a GSM8K record: the text after the last '#### ', stripped."""
    marker_at = answer_field.rfind(_GSM8K_MARKER)
    if marker_at < 0:
        raise ValueError("GSM8K answer has no '####' line")
    gold = answer_field[marker_at + len(_GSM8K_MARKER):].strip()
    if not gold:
        raise ValueError("GSM8K answer has nothing after '####'")
    return gold


def numbers_equal(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=_RELATIVE_TOLERANCE, abs_tol=_ABSOLUTE_TOLERANCE)


@dataclass(frozen=True)
class AnswerScore:
    correct: bool
    f1: Optional[float]  # token F1 for text scoring; None for numeric scoring
    method: str  # "numeric" | "text"


def choose_method(golds: Sequence[str]) -> str:
    """Numeric when every gold parses as a number, else text."""
    if golds and all(parse_number(gold) is not None for gold in golds):
        return NUMERIC
    return TEXT


def score_answer(
    prediction: str, golds: Sequence[str], *, method: Optional[str] = None
) -> AnswerScore:
    """Scores one prediction against its gold answers (best over the golds)."""
    if isinstance(golds, str):
        raise TypeError("golds must be a sequence of strings, not a single string")
    if not golds:
        raise ValueError("at least one gold answer is needed")
    chosen = choose_method(golds) if method is None else method
    if chosen == NUMERIC:
        gold_numbers = [parse_number(gold) for gold in golds]
        if any(number is None for number in gold_numbers):
            raise ValueError(f"numeric scoring needs numeric golds, got {list(golds)!r}")
        predicted = final_number(prediction)
        correct = predicted is not None and any(
            numbers_equal(predicted, gold) for gold in gold_numbers  # type: ignore[arg-type]
        )
        return AnswerScore(correct=correct, f1=None, method=NUMERIC)
    if chosen == TEXT:
        correct = any(exact_match(prediction, gold) for gold in golds)
        f1 = max(token_f1(prediction, gold) for gold in golds)
        return AnswerScore(correct=correct, f1=f1, method=TEXT)
    raise ValueError(f"unknown scoring method {chosen!r}; known: {', '.join(METHODS)}")
