"""What a request looks like to the pre-router, as numbers: cheap text features of the last user
message, the same text the encoder embeds.

Only the last user message is read, not the system prompt or earlier turns: the labelled corpus the
router is trained on holds that text alone, and a feature the training never saw vary would be noise.
Pure functions; no model, no I/O; never NaN.
"""
from __future__ import annotations

import math
import re
from typing import Mapping, Sequence

from router.core.arbiters.features import PASSAGE_MIN_CHARS, QUESTION_WORDS

ROUTER_FEATURE_NAMES: tuple[str, ...] = (
    "log_chars", "log_words", "log_lines", "has_passage", "numbers", "digit_share", "question_word",
    "math_words", "has_currency", "non_ascii_share", "ends_with_question",
)
# The encoder's time grows with the text (a SQuAD passage took it to 7 ms a request): the router embeds
# only the message's end, where the question is, in training and in serving alike.
EMBEDDING_CHARS = 256
MAX_NUMBERS = 20  # a table of figures is "many numbers"; beyond this the count says nothing more
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_PASSAGE_MARKER = re.compile(r"^(?:passage|context|document|text|article)\s*:", re.IGNORECASE | re.MULTILINE)
# Words of arithmetic word problems: where the edge's chains of thought go wrong most often.
_MATH_WORDS = re.compile(r"\b(?:total|each|per|how many|how much|percent|times|twice|half|average|remaining|"
                         r"left|profit|cost|costs|spend|spent|earn|earns|sum|difference)\b", re.IGNORECASE)
_CURRENCY = re.compile(r"[$€£¥]")


def request_text(messages: Sequence[Mapping[str, str]]) -> str:
    """The last user message: what the router reads and embeds."""
    users = [m["content"] for m in messages if m["role"] == "user"]
    return users[-1] if users else ""


def embedding_text(text: str) -> str:
    """What the router embeds of a request's text: its last EMBEDDING_CHARS characters."""
    return text[-EMBEDDING_CHARS:]


def router_features(text: str) -> dict[str, float]:
    words = text.split()
    first_words = text.lower().split("question:")[-1].split()[:3]
    digits = sum(ch.isdigit() for ch in text)
    return {
        "log_chars": math.log1p(len(text)),
        "log_words": math.log1p(len(words)),
        "log_lines": math.log1p(text.count("\n") + 1 if text else 0),
        "has_passage": float(len(text) >= PASSAGE_MIN_CHARS or bool(_PASSAGE_MARKER.search(text))),
        "numbers": float(min(len(_NUMBER.findall(text)), MAX_NUMBERS)),
        "digit_share": digits / len(text) if text else 0.0,
        "question_word": float(any(word.strip("?,.") in QUESTION_WORDS for word in first_words)),
        "math_words": float(len(_MATH_WORDS.findall(text))),
        "has_currency": float(bool(_CURRENCY.search(text))),
        "non_ascii_share": sum(ord(ch) > 127 for ch in text) / len(text) if text else 0.0,
        "ends_with_question": float(text.rstrip().endswith("?")),
    }
