"""The pre-router's brain: a trained model, or the documented default rule, in a slot that a reload
swaps atomically.

Both answer `decide(messages)` with a RouteDecision: the predicted gain of asking the cloud (cloud
quality minus edge quality) and a score in [0, 1] where higher keeps the edge, as for every scorer,
so the thresholds (router/core/arbiters/thresholds.py) work unchanged.

The default rule, for a fresh install with no trained router (the decision's scorer says so): questions
asked over a passage go to the cloud first, then arithmetic word problems, then everything else. From the
gaps measured on the labelled corpus's train split (bench/corpus/, 993 items): the cloud adds 0.23 in F1
on SQuAD with its passage for $0.000043 a request, and 0.20 in accuracy on GSM8K for $0.000187 (a chain
of thought is long), so a passage is where a cloud dollar buys the most. (The 120-item sample the issue
started from put maths first, at 0.30 against 0.22; 1,500 items did not bear it out.)
    score = 0.5 - 0.25 * has_passage - 0.125 * looks_like_maths
looks_like_maths: no passage, and at least two numbers or an arithmetic word with a number.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Protocol, Sequence

import numpy as np

from router.core.arbiters.learned import LearnedModel, gain_to_score
from router.core.routing.features import ROUTER_FEATURE_NAMES, embedding_text, request_text, router_features

RULE_BASE, RULE_PASSAGE_STEP, RULE_MATHS_STEP = 0.5, 0.25, 0.125


@dataclass(frozen=True)
class RouteDecision:
    score: float                  # in [0, 1]; higher keeps the edge
    gain: float                   # the predicted gain of asking the cloud, in [-1, 1]
    features: Mapping[str, float]
    decide_s: float               # features, embedding and model, as timed in the daemon


class RequestRouter(Protocol):
    name: str      # what the decision record's scorer says: "router v0003" or "rule (no trained router: ...)"
    version: str   # the artifact's version directory, "" for the rule

    def decide(self, messages: Sequence[Mapping[str, str]]) -> RouteDecision: ...


def rule_score(features: Mapping[str, float]) -> float:
    passage = features["has_passage"] > 0
    maths = not passage and (features["numbers"] >= 2 or (features["numbers"] >= 1 and features["math_words"] >= 1))
    return RULE_BASE - RULE_PASSAGE_STEP * passage - RULE_MATHS_STEP * maths


@dataclass(frozen=True)
class RuleRouter:
    why: str
    version: str = ""

    @property
    def name(self) -> str:
        return f"rule (no trained router: {self.why})"

    def decide(self, messages: Sequence[Mapping[str, str]]) -> RouteDecision:
        began = time.perf_counter()
        features = router_features(request_text(messages))
        score = rule_score(features)
        return RouteDecision(score=score, gain=1.0 - 2.0 * score, features=features,
                             decide_s=time.perf_counter() - began)


@dataclass(frozen=True)
class LearnedRouter:
    model: LearnedModel
    encoder: Optional[Any]  # edge.encoder.TextEncoder when the model takes the embedding, else None

    @property
    def version(self) -> str:
        return self.model.directory.name

    @property
    def name(self) -> str:
        return f"router {self.version}"

    def decide(self, messages: Sequence[Mapping[str, str]]) -> RouteDecision:
        # CPU work (about 2 ms in all, the encoder most of it): the mode runs it in a worker thread.
        began = time.perf_counter()
        text = request_text(messages)
        features = router_features(text)
        row = np.asarray([features[name] for name in ROUTER_FEATURE_NAMES], dtype=np.float32)
        if self.encoder is not None:
            row = np.concatenate([row, self.encoder.encode([embedding_text(text)])[0]])
        gain = float(self.model.predict_gain(row[None, :])[0])
        if not np.isfinite(gain):
            raise ValueError(f"the router model {self.model.directory} predicted {gain}")
        return RouteDecision(score=gain_to_score(gain), gain=gain, features=features,
                             decide_s=time.perf_counter() - began)


@dataclass(frozen=True)
class Routing:
    """A router and the threshold it is judged against: they change together (a new model brings its
    own scores, and under target_accuracy its own calibration)."""

    router: RequestRouter
    threshold: Any  # router.core.arbiters.thresholds.Threshold


class RouterSlot:
    """The routing in use. `current` is read once per request, so a request in flight keeps the router
    it started with; `swap` replaces it for the requests after (one reference assignment: atomic on
    the event loop)."""

    def __init__(self, routing: Routing) -> None:
        self.current = routing

    def swap(self, routing: Routing) -> Routing:
        previous, self.current = self.current, routing
        return previous
