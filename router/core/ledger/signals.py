"""Accuracy signals: evidence, stored beside each request, of how good its answers were.

Kinds (`SignalKind`):
- reference: the answer scored against the request's reference answer (router.scoring);
- judge:     a grader's score, usually arriving later through `Ledger.add_signal`;
- agreement: edge and cloud both answered; 1.0/0.0 when both end in a number (numeric compare),
             else the token F1 between the two answers;
- feedback:  a user's score, thumbs and/or corrected answer.

Targets (`SignalTarget`) say which answer a signal is about: the served one (`final`), one
backend's (`edge`, `cloud`), or the pair (`pair`, for agreement). Per-backend reference scores let
the DPO export tell which backend's answer was the better one.

Computed on the ledger's writer thread, never on the request path.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from router.domain.scoring import final_number, gsm8k_gold, numbers_equal, score_answer, token_f1
from router.domain.types import BackendKind, BackendRun, GenerateRequest, GenerateResult

CANCELLED = "cancelled"  # router.backends' finish_reason for a stream closed early
FAILED = "error"         # ... and for one the backend broke off


class SignalKind(str, enum.Enum):
    REFERENCE = "reference"
    JUDGE = "judge"
    AGREEMENT = "agreement"
    FEEDBACK = "feedback"


class SignalTarget(str, enum.Enum):
    FINAL = "final"
    EDGE = "edge"
    CLOUD = "cloud"
    PAIR = "pair"

    @classmethod
    def for_backend(cls, backend: BackendKind) -> "SignalTarget":
        if backend == BackendKind.EDGE:
            return cls.EDGE
        if backend == BackendKind.CLOUD:
            return cls.CLOUD
        raise ValueError(f"no signal target for backend {backend!r}")


def _unit_interval(name: str, value: Optional[float]) -> Optional[float]:
    if value is None:
        return None
    number = float(value)
    if not (0.0 <= number <= 1.0) or math.isnan(number):
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
    return number


@dataclass(frozen=True)
class AccuracySignal:
    """One piece of evidence about an answer. `score` is in [0, 1]; `correct` and `f1` are
    optional refinements (a reference score on text has both, a judge usually only a score).
    `detail` must be JSON-serialisable; under log_content=redacted/none its strings are filtered
    like every other stored text."""

    kind: SignalKind
    score: Optional[float]
    correct: Optional[bool] = None
    f1: Optional[float] = None
    target: SignalTarget = SignalTarget.FINAL
    detail: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        # Validated here, on the caller's thread, so a bad signal fails where it was made rather
        # than as a CHECK-constraint error inside some later batch.
        object.__setattr__(self, "kind", SignalKind(self.kind))
        object.__setattr__(self, "target", SignalTarget(self.target))
        object.__setattr__(self, "score", _unit_interval("score", self.score))
        object.__setattr__(self, "f1", _unit_interval("f1", self.f1))
        if self.correct is not None:
            object.__setattr__(self, "correct", bool(self.correct))
        # A judge that replied with no grade still cost a cloud call: its signal carries that cost and no
        # score, and the accuracy figures pass it over.
        if self.score is None and self.correct is None and self.kind not in (SignalKind.FEEDBACK, SignalKind.JUDGE):
            raise ValueError(f"a {self.kind.value} signal needs a score or a correct flag")


def gold_answers(reference: str) -> list[str]:
    """A GSM8K-style reference ("...reasoning... #### 72") is scored on its final number only."""
    if "####" in reference:
        try:
            return [gsm8k_gold(reference)]
        except ValueError:
            pass
    return [reference]


def reference_signal(answer: str, reference: str, target: SignalTarget) -> AccuracySignal:
    scored = score_answer(answer, gold_answers(reference))
    score = scored.f1 if scored.f1 is not None else float(scored.correct)
    return AccuracySignal(kind=SignalKind.REFERENCE, score=score, correct=scored.correct, f1=scored.f1,
                          target=target, detail={"method": scored.method}, source="router.scoring")


def agreement_signal(edge_text: str, cloud_text: str) -> AccuracySignal:
    edge_number, cloud_number = final_number(edge_text), final_number(cloud_text)
    if edge_number is not None and cloud_number is not None:
        agree = numbers_equal(edge_number, cloud_number)
        return AccuracySignal(kind=SignalKind.AGREEMENT, score=float(agree), correct=agree,
                              target=SignalTarget.PAIR, detail={"method": "final_number"},
                              source="router.scoring")
    f1 = token_f1(edge_text, cloud_text)
    return AccuracySignal(kind=SignalKind.AGREEMENT, score=f1, f1=f1, target=SignalTarget.PAIR,
                          detail={"method": "token_f1"}, source="router.scoring")


def _finished(run: Optional[BackendRun]) -> Optional[BackendRun]:
    """A cancelled run (the loser of a race, an early escalation) or a failed one left a partial
    answer: scoring it would call it wrong when it was only cut short."""
    if run is None or run.finish_reason in (CANCELLED, FAILED) or not run.text.strip():
        return None
    return run


def compute_signals(request: GenerateRequest, result: GenerateResult) -> list[AccuracySignal]:
    """The signals a finished request yields by itself: reference scores (served answer and each
    finished backend run) when it carries a reference answer, and agreement when both backends
    finished an answer."""
    signals: list[AccuracySignal] = []
    edge_run = _finished(result.run_for(BackendKind.EDGE))
    cloud_run = _finished(result.run_for(BackendKind.CLOUD))
    reference = request.reference_answer
    if reference is not None and reference.strip():
        signals.append(reference_signal(result.text, reference, SignalTarget.FINAL))
        for run in (edge_run, cloud_run):
            if run is not None:
                signals.append(reference_signal(run.text, reference, SignalTarget.for_backend(run.backend)))
    if edge_run is not None and cloud_run is not None:
        signals.append(agreement_signal(edge_run.text, cloud_run.text))
    return signals
