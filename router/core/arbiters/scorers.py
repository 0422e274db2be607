"""Scorers: how confident we are that the edge's answer is good enough, in [0, 1] (higher keeps it).

Each scorer reads the edge's draft and may ask the edge again (self-consistency samples, a
self-verification prompt) through `EdgeCalls`; those calls are priced and recorded like any other.
Every scorer returns its score and the features it computed, which go into the decision record
(and from there the ledger and the bench's labelled corpus).

| name | score | extra edge calls |
|---|---|---|
| logprob | geometric-mean token probability, exp(mean logprob) | none |
| task | with a passage: a span of the sentence that best matches the question scores high, a short span from elsewhere less, a free answer low; else as logprob | none |
| consistency | for an answer that ends in a number: share of `samples` samples (T=0.7, seeds differ) that reach the same number; else as task | `samples` |
| verify | the edge's own P(yes) that its answer is right and supported (AutoMix-style, few-shot) | one, one token |
| rule | the default rule: consistency for numbers, task for passages, logprob otherwise | as consistency |
| all | as rule, with every feature computed (verification included): for labelling | samples + one |
| learned | a trained model's predicted gain of asking the cloud, from all's features and the question embedding (learned.py, built by build_arbiter) | as all |
"""
from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Mapping, Optional, Protocol, Sequence

from router.core.arbiters.features import (Draft, answer_number, base_features, consistency_features,
                                      has_passage)

SAMPLE_TEMPERATURE = 0.7
DEFAULT_SAMPLES = 3
# Seeds of the self-consistency samples: fixed offsets, so a request is scored the same way each time.
SAMPLE_SEED_BASE = 7919
VERIFY_MAX_INPUT_CHARS = 6000  # keeps the verification prompt inside the edge's context
VERIFY_SYSTEM = "You check answers. Reply with Yes or No only."
VERIFY_EXAMPLES = (
    ("Question: What is 12 + 30?", "12 + 30 = 42. #### 42", "Yes"),
    ("Passage: The Nile flows north into the Mediterranean Sea.\nQuestion: Into which sea does the Nile flow?",
     "the Red Sea", "No"),
)


class ScorerError(RuntimeError):
    """A scorer could not score this draft; the arbiter escalates and the decision says why."""


class ScorerStaleError(ScorerError):
    """The scorer was trained on an edge that no longer runs (a probe read the states of the base model, and
    the edge now runs an adapter): its scores mean nothing. An arbiter with a stand-in scores with that one
    instead of escalating every request; the decision says why."""


class EdgeCalls(Protocol):
    """Extra edge generations a scorer may ask for; each is priced and recorded as its own run."""

    async def complete(self, messages: Sequence[Mapping[str, str]], *, purpose: str, max_tokens: int,
                       temperature: float, seed: Optional[int]) -> tuple[str, Sequence[float]]: ...


@dataclass(frozen=True)
class Score:
    value: float
    features: Mapping[str, float] = field(default_factory=dict)


class Scorer(Protocol):
    name: str

    async def score(self, draft: Draft, calls: EdgeCalls, *, max_tokens: int) -> Score: ...


def logprob_score(features: Mapping[str, float]) -> float:
    return features["lp_exp_mean"]


def task_score(draft: Draft, features: Mapping[str, float]) -> float:
    return task_score_from_features({**features, "has_passage": float(has_passage(draft))})


def task_score_from_features(features: Mapping[str, float]) -> float:
    """The task score from recorded features alone (`has_passage` included), so a labelled corpus
    can be re-scored offline without the drafts."""
    if not features["has_passage"]:
        return logprob_score(features)
    # Reading: a span of the sentence that best matches the question is the answer's shape (F1 0.67,
    # against 0.38 for a span from elsewhere in the passage and 0.27 for no span; features.focus_features),
    # and a short span beats a long one; the logprob separates within each shape. The weights were chosen
    # on the corpus's train split (SQuAD APGR 0.638 -> 0.656, CPT(80%) 0.555 -> 0.534 against the earlier
    # rule, 0.5 short span + 0.25 verbatim + 0.25 logprob).
    return 0.5 * features["span_in_focus"] + 0.25 * features["span_short"] + 0.25 * logprob_score(features)


# What the default rule reads (consistency_score_from_features, task_score_from_features).
RULE_INPUTS = ("has_consistency", "consistency_agree", "has_passage", "span_in_focus", "span_short", "lp_exp_mean")


def current_rule_score(features: Mapping[str, float], recorded: float) -> float:
    """The default rule's score as the code now draws it, when `features` hold its inputs; else the score
    recorded with them. A corpus line and a ledger row then share one baseline, whenever they were labelled."""
    if all(name in features for name in RULE_INPUTS):
        return consistency_score_from_features(features)
    return recorded


def consistency_score_from_features(features: Mapping[str, float]) -> float:
    """The samples' agreement for an answer that ends in a number, else the task score: the choice the
    consistency scorer and the default rule make, also used to re-score a labelled corpus offline."""
    if features["has_consistency"]:
        return features["consistency_agree"]
    return task_score_from_features(features)


async def consistency(draft: Draft, calls: EdgeCalls, *, samples: int, max_tokens: int) -> dict[str, float]:
    greedy = answer_number(draft.text)
    if greedy is None:
        return consistency_features(None, ())
    found = []
    for index in range(samples):
        text, _ = await calls.complete(draft.messages, purpose="sample", max_tokens=max_tokens,
                                       temperature=SAMPLE_TEMPERATURE, seed=SAMPLE_SEED_BASE + index)
        found.append(answer_number(text))
    return consistency_features(greedy, found)


def verification_messages(draft: Draft) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": VERIFY_SYSTEM}]
    for question, answer, verdict in VERIFY_EXAMPLES:
        messages.append({"role": "user", "content": _verify_turn(question, answer)})
        messages.append({"role": "assistant", "content": verdict})
    context = "\n".join(m["content"] for m in draft.messages if m["role"] != "system")
    messages.append({"role": "user", "content": _verify_turn(context[-VERIFY_MAX_INPUT_CHARS:],
                                                             draft.text[-VERIFY_MAX_INPUT_CHARS // 4:])})
    return messages


def _verify_turn(question: str, answer: str) -> str:
    return (f"{question}\n\nProposed answer: {answer.strip()}\n\n"
            "Is the proposed answer correct and supported by the question? Reply Yes or No.")


async def verification(draft: Draft, calls: EdgeCalls) -> dict[str, float]:
    """P(yes) from the first token of a greedy reply. The edge reports the sampled token's logprob
    only, so a "No" with probability p is read as P(yes) = 1 - p (the mass left for other tokens
    is small for a Yes/No question; it is an estimate, and it is what the learned model sees)."""
    text, logprobs = await calls.complete(verification_messages(draft), purpose="verify", max_tokens=1,
                                          temperature=0.0, seed=None)
    probability = math.exp(logprobs[0]) if logprobs else 0.5
    word = text.strip().lower()
    if word.startswith("yes"):
        p_yes = probability
    elif word.startswith("no"):
        p_yes = 1.0 - probability
    else:
        p_yes = 0.5  # neither: no opinion
    return {"has_verification": 1.0, "verify_p_yes": p_yes}


async def base_features_off_loop(draft: Draft) -> dict[str, float]:
    """`base_features` in a worker thread: its regexes and the arithmetic check's calculator run over the
    whole draft, CPU work that does not belong on the event loop."""
    return await asyncio.to_thread(base_features, draft)


@dataclass(frozen=True)
class LogprobScorer:
    name: str = "logprob"

    async def score(self, draft: Draft, calls: EdgeCalls, *, max_tokens: int) -> Score:
        features = await base_features_off_loop(draft)
        return Score(logprob_score(features), features)


@dataclass(frozen=True)
class TaskScorer:
    name: str = "task"

    async def score(self, draft: Draft, calls: EdgeCalls, *, max_tokens: int) -> Score:
        features = await base_features_off_loop(draft)
        return Score(task_score(draft, features), features)


@dataclass(frozen=True)
class ConsistencyScorer:
    samples: int = DEFAULT_SAMPLES
    name: str = "consistency"

    async def score(self, draft: Draft, calls: EdgeCalls, *, max_tokens: int) -> Score:
        features = await base_features_off_loop(draft)
        features.update(await consistency(draft, calls, samples=self.samples, max_tokens=max_tokens))
        return Score(consistency_score_from_features(features), features)


@dataclass(frozen=True)
class VerifyScorer:
    name: str = "verify"

    async def score(self, draft: Draft, calls: EdgeCalls, *, max_tokens: int) -> Score:
        features = await base_features_off_loop(draft)
        features.update(await verification(draft, calls))
        return Score(features["verify_p_yes"], features)


@dataclass(frozen=True)
class RuleScorer:
    """The documented default rule, used until a learned model is trained; `all` also verifies."""

    samples: int = DEFAULT_SAMPLES
    verify: bool = False
    name: str = "rule"

    async def score(self, draft: Draft, calls: EdgeCalls, *, max_tokens: int) -> Score:
        features = await base_features_off_loop(draft)
        features.update(await consistency(draft, calls, samples=self.samples, max_tokens=max_tokens))
        if self.verify:
            features.update(await verification(draft, calls))
        return Score(consistency_score_from_features(features), features)


# The threshold the default rule is used at (its scores are agreement shares and span grades): where the
# probe, whose operating point the default arbitration.fixed_threshold is, steps aside for the rule.
RULE_THRESHOLD = 0.5


def build_scorer(name: str, *, samples: int = DEFAULT_SAMPLES) -> Scorer:
    factories = {"logprob": LogprobScorer, "task": TaskScorer,
                 "consistency": lambda: ConsistencyScorer(samples=samples), "verify": VerifyScorer,
                 "rule": lambda: RuleScorer(samples=samples),
                 "all": lambda: RuleScorer(samples=samples, verify=True, name="all")}
    if name not in factories:
        # `learned` is a ScorerName too, but needs files: router/assembly/modes.py builds it.
        raise ValueError(f"build_scorer cannot build {name!r}; it builds: {', '.join(factories)}")
    return factories[name]()

