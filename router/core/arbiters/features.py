"""What an edge answer looks like, as numbers: the inputs of every scorer and of the learned model.

Pure functions of the request and the edge's draft; no model, no I/O. A feature that does not
apply (no passage, no number in the answer) is 0 with its `has_*` indicator at 0, never NaN, so the
vector can go straight into an ONNX model.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from cloud.info.analysis import analyze
from cloud.info.chunking import sentence_spans
from router.core.arbiters.arithmetic import check_arithmetic
from router.domain.scoring import final_number, normalize_answer

# An input this long (characters, all messages) is taken to carry a passage to answer from.
PASSAGE_MIN_CHARS = 600
_PASSAGE_MARKER = re.compile(r"^(?:passage|context|document|text|article)\s*:", re.IGNORECASE | re.MULTILINE)
_QUESTION_MARKER = re.compile(r"\bquestion\s*:", re.IGNORECASE)
# A short span: the measured F1 gap (0.55 against 0.33) opens above about 8 words.
SHORT_SPAN_WORDS = 8
# The tail of a chain of thought, where the final answer is: its confidence is read apart.
TAIL_TOKENS = 16
QUESTION_WORDS = ("what", "who", "when", "where", "which", "why", "how")

FEATURE_NAMES: tuple[str, ...] = (
    "lp_mean", "lp_min", "lp_p10", "lp_p25", "lp_p50", "lp_tail_mean", "lp_exp_mean",
    "completion_tokens", "answer_words", "finished",
    "input_chars", "has_passage", "question_digits", "question_word",
    "has_number", "span_verbatim", "span_short", "span_in_focus", "arithmetic_checked", "arithmetic_wrong",
    "has_consistency", "consistency_agree", "consistency_distinct",
    "has_verification", "verify_p_yes",
)


@dataclass(frozen=True)
class Draft:
    """The edge's answer as a scorer sees it."""

    messages: Sequence[Mapping[str, str]]
    text: str
    token_logprobs: Sequence[float]
    finish_reason: str
    # The edge's hidden states (edge.HiddenStates: `.prompt`, `.draft`), when the arbiter's scorer asked for them.
    hidden_states: Optional[Any] = field(default=None, compare=False, repr=False)

    @property
    def input_text(self) -> str:
        return "\n".join(m["content"] for m in self.messages)

    @property
    def question(self) -> str:
        users = [m["content"] for m in self.messages if m["role"] == "user"]
        return users[-1] if users else ""


def has_passage(draft: Draft) -> bool:
    text = draft.input_text
    return len(text) >= PASSAGE_MIN_CHARS or bool(_PASSAGE_MARKER.search(text))


def logprob_features(token_logprobs: Sequence[float]) -> dict[str, float]:
    if not token_logprobs:
        return {"lp_mean": 0.0, "lp_min": 0.0, "lp_p10": 0.0, "lp_p25": 0.0, "lp_p50": 0.0,
                "lp_tail_mean": 0.0, "lp_exp_mean": 0.0}
    ordered = sorted(token_logprobs)
    mean = math.fsum(token_logprobs) / len(token_logprobs)
    tail = token_logprobs[-TAIL_TOKENS:]
    return {"lp_mean": mean, "lp_min": ordered[0], "lp_p10": _quantile(ordered, 0.10),
            "lp_p25": _quantile(ordered, 0.25), "lp_p50": _quantile(ordered, 0.50),
            "lp_tail_mean": math.fsum(tail) / len(tail), "lp_exp_mean": math.exp(mean)}


def _quantile(ordered: Sequence[float], q: float) -> float:
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def span_features(draft: Draft) -> dict[str, float]:
    """Whether the answer is a verbatim span of the input (SQuAD-style reading), and a short one."""
    answer = normalize_answer(draft.text)
    words = len(answer.split())
    verbatim = bool(answer) and answer in normalize_answer(draft.input_text)
    return {"answer_words": float(words), "span_verbatim": float(verbatim),
            "span_short": float(verbatim and words <= SHORT_SPAN_WORDS)}


def question_and_passage(text: str) -> tuple[str, str]:
    """A reading request cut into its question and its passage: the question follows the last
    "Question:" (else it is the last line), and the passage is what comes before it, from a "Passage:"
    (or "Context:", ...) marker when there is one."""
    markers = list(_QUESTION_MARKER.finditer(text))
    if markers:
        question, before = text[markers[-1].end():], text[:markers[-1].start()]
    else:
        before, _, question = text.rstrip().rpartition("\n")
    opening = _PASSAGE_MARKER.search(before)
    return question.strip(), (before[opening.end():] if opening else before).strip()


def focus_sentence(question: str, passage: str) -> str:
    """The passage's sentence that shares the most (stemmed) words with the question, the first of equals
    (the focused reader's choice for one passage, router/core/modes/rag_focus.py); "" when none shares one."""
    wanted = set(analyze(question, stem=True))
    best, best_shared = "", 0
    for start, end in sentence_spans(passage):
        sentence = passage[start:end].strip()
        shared = len(wanted & set(analyze(sentence, stem=True)))
        if shared > best_shared:
            best, best_shared = sentence, shared
    return best


def focus_features(draft: Draft) -> dict[str, float]:
    """Whether a reading answer lies, as whole words, in the sentence that best matches the question.
    Measured on the corpus's 683 SQuAD train items: a verbatim span inside that sentence scores F1 0.67
    and the cloud adds 0.13; a verbatim span elsewhere in the passage scores 0.38 and the cloud adds 0.34.
    The whole input is read, system prompt included, as `span_verbatim` reads it, so a passage sent as the
    system prompt with a bare question as the user turn is read too."""
    answer = normalize_answer(draft.text)
    if not answer or not has_passage(draft):
        return {"span_in_focus": 0.0}
    question, passage = question_and_passage(draft.input_text)
    sentence = normalize_answer(focus_sentence(question, passage))
    return {"span_in_focus": float(f" {answer} " in f" {sentence} ")}


# Beyond this many equalities a chain of thought is no longer hand-sized; the count says nothing more.
MAX_ARITHMETIC_CHECKS = 20


def arithmetic_features(draft: Draft) -> dict[str, float]:
    """The equalities the answer writes down that could be checked, and those that are wrong
    (arithmetic.py). On the corpus's GSM8K train split, 1 of the 43 answers with a wrong one is right,
    against 42% of those where all hold; the learned model reads both counts."""
    checked, wrong = check_arithmetic(draft.text)
    return {"arithmetic_checked": float(min(checked, MAX_ARITHMETIC_CHECKS)),
            "arithmetic_wrong": float(min(wrong, MAX_ARITHMETIC_CHECKS))}


def refreshed_text_features(messages: Sequence[Mapping[str, str]], edge_text: str,
                            features: Mapping[str, float]) -> dict[str, float]:
    """Recorded features with those that are pure functions of the request and the edge's answer
    computed afresh: rows labelled before such a feature existed (a corpus line, a ledger row) gain it
    without a model call."""
    draft = Draft(messages, edge_text, (), "stop")
    return {**features, **focus_features(draft), **arithmetic_features(draft)}


def request_features(draft: Draft) -> dict[str, float]:
    question = draft.question.lower()
    first_words = question.split("question:")[-1].split()[:3]
    return {"input_chars": float(len(draft.input_text)), "has_passage": float(has_passage(draft)),
            "question_digits": float(sum(ch.isdigit() for ch in question)),
            "question_word": float(any(word.strip("?,.") in QUESTION_WORDS for word in first_words))}


def answer_number(text: str) -> Optional[float]:
    return final_number(text)


def consistency_features(greedy: Optional[float], samples: Sequence[Optional[float]]) -> dict[str, float]:
    """Self-consistency of a numeric answer: the share of samples that reach the greedy answer's number."""
    if greedy is None or not samples:
        return {"has_consistency": 0.0, "consistency_agree": 0.0, "consistency_distinct": 0.0}
    agree = sum(1 for value in samples if value is not None and math.isclose(value, greedy, rel_tol=1e-9, abs_tol=1e-9))
    distinct = len({round(value, 6) for value in samples if value is not None} | {round(greedy, 6)})
    return {"has_consistency": 1.0, "consistency_agree": agree / len(samples),
            "consistency_distinct": float(distinct)}


# Early escalation's running confidence, read over the whole draft: not model inputs (FEATURE_NAMES), but
# recorded beside them so that early_threshold can be chosen offline from the corpus
# (bench/arbitration_early.py): where the draft's confidence first fell below each level, in tokens.
EARLY_WINDOW = 16
EARLY_LEVELS: tuple[float, ...] = (0.4, 0.5, 0.6, 0.7, 0.8)


def early_feature_name(level: float) -> str:
    return f"early_first_below_{round(level * 100):03d}"


def running_confidences(token_logprobs: Sequence[float], window: int = EARLY_WINDOW) -> list[float]:
    """The geometric-mean token probability of every `window`-token stretch, in order of its last token."""
    if len(token_logprobs) < window:
        return []
    total = math.fsum(token_logprobs[:window])
    values = [math.exp(total / window)]
    for end in range(window, len(token_logprobs)):
        total += token_logprobs[end] - token_logprobs[end - window]
        values.append(math.exp(total / window))
    return values


def early_features(token_logprobs: Sequence[float], window: int = EARLY_WINDOW) -> dict[str, float]:
    """The lowest running confidence, and for each level the tokens generated when it first fell below it
    (0 when it never did)."""
    values = running_confidences(token_logprobs, window)
    features = {"early_window_min": min(values) if values else 1.0}
    for level in EARLY_LEVELS:
        first = next((index for index, value in enumerate(values) if value < level), None)
        features[early_feature_name(level)] = 0.0 if first is None else float(first + window)
    return features


def base_features(draft: Draft) -> dict[str, float]:
    """Every feature that needs no further model call."""
    features = {**logprob_features(draft.token_logprobs), **request_features(draft), **span_features(draft),
                **focus_features(draft), **arithmetic_features(draft), **early_features(draft.token_logprobs)}
    features["completion_tokens"] = float(len(draft.token_logprobs))
    features["finished"] = float(draft.finish_reason == "stop")
    features["has_number"] = float(answer_number(draft.text) is not None)
    features.update(consistency_features(None, ()))
    features.update(has_verification=0.0, verify_p_yes=0.0)
    return features


def as_vector(features: Mapping[str, float]) -> list[float]:
    """The features in FEATURE_NAMES order (the learned model's input layout)."""
    return [float(features.get(name, 0.0)) for name in FEATURE_NAMES]
