"""What a request's logged signals say about its answers: a quality in [0, 1] (the deferral model's and the
router's labels, `labels`) or a verdict good/bad (the SFT and DPO sets', `verdict`).

Both read `LoggedRequest.evidence` (router/core/ledger/records.py): the latest signal of each (kind,
target), judge calls that gave no grade left out. Per-backend signals (target edge/cloud) speak for that
backend's answer; signals on the served answer (target final) speak for the backend that served it.
"""
from __future__ import annotations

from typing import Optional

from router.core.ledger.records import Evidence, LoggedSignal


def _reference(signal: LoggedSignal) -> Optional[float]:
    if signal.f1 is not None:
        return float(signal.f1)
    if signal.correct is not None:
        return float(bool(signal.correct))
    return None if signal.score is None else float(signal.score)


def _feedback(signal: LoggedSignal) -> Optional[float]:
    if signal.correct is not None:
        return float(bool(signal.correct))
    if signal.score is not None:
        return float(signal.score)
    if signal.thumbs_up is not None:
        return float(bool(signal.thumbs_up))
    if signal.corrected_answer:
        return 0.0
    return None


def _judge(signal: LoggedSignal) -> Optional[float]:
    if signal.score is not None:
        return float(signal.score)
    return None if signal.correct is None else float(bool(signal.correct))


def answer_quality(evidence: Evidence, backend: str, served_by: str) -> Optional[tuple[float, str]]:
    """The quality of `backend`'s ("EDGE"/"CLOUD") answer from its own signals, with the kind of
    evidence that gave it, or None. Agreement is not read here (see `labels`).

    Strongest first, for one backend's answer:
    1. reference: the latest reference signal on that backend's target (or on `final` when it served):
       its F1 when it has one, else correct (1/0);
    2. feedback (only for the backend that served, target `final`): correct (thumbs) 1/0, else its score,
       else a corrected answer alone means 0;
    3. judge: the latest judge signal's score on that backend's target (or `final` when it served); a judge
       call that gave no grade is not evidence."""
    served = served_by == backend
    targets = [backend.lower()] + (["final"] if served else [])
    for target in targets:
        signal = evidence.get(("reference", target))
        if signal is not None and (value := _reference(signal)) is not None:
            return value, "reference"
    if served:
        signal = evidence.get(("feedback", "final"))
        if signal is not None and (value := _feedback(signal)) is not None:
            return value, "feedback"
    for target in targets:
        signal = evidence.get(("judge", target))
        if signal is not None and (value := _judge(signal)) is not None:
            return value, "judge"
    return None


def labels(evidence: Evidence, served_by: str) -> tuple[Optional[float], Optional[float]]:
    """(edge quality, cloud quality), each None when nothing labels it: each answer's own evidence first
    (`answer_quality`). Agreement (target `pair`) is the weakest and speaks for the pair, not for one
    answer: when either side has no label above and the two answers were compared, the cloud is taken as
    the teacher: the cloud's quality is its own label if it has one, else 1.0; the edge's is the agreement
    score unless it has a label of its own."""
    edge = answer_quality(evidence, "EDGE", served_by)
    cloud = answer_quality(evidence, "CLOUD", served_by)
    edge_q = None if edge is None else edge[0]
    cloud_q = None if cloud is None else cloud[0]
    agreement = evidence.get(("agreement", "pair"))
    if (edge_q is None or cloud_q is None) and agreement is not None and agreement.score is not None:
        # The cloud is the teacher: agreement with it is the edge's quality.
        cloud_q = 1.0 if cloud_q is None else cloud_q
        edge_q = float(agreement.score) if edge_q is None else edge_q
    return edge_q, cloud_q


def verdict(evidence: Evidence, backend: str, served_by: str, min_score: float) -> Optional[bool]:
    """Was `backend`'s ("EDGE"/"CLOUD") answer good (True), bad (False), or is there no evidence (None)?

    Evidence about an answer is read in this order, the first that speaks wins:
    1. reference: `correct` of the latest reference signal (router.scoring against the gold answer);
    2. feedback (served answer only): thumbs, else score >= min_score; a correction with neither means
       the served answer was not acceptable;
    3. judge: score >= min_score."""
    targets = [backend.lower()] + (["final"] if served_by == backend else [])
    for target in targets:
        reference = evidence.get(("reference", target))
        if reference is not None and reference.correct is not None:
            return bool(reference.correct)
    if served_by == backend:
        feedback = evidence.get(("feedback", "final"))
        if feedback is not None:
            if feedback.correct is not None:
                return bool(feedback.correct)
            if feedback.score is not None:
                return feedback.score >= min_score
            if feedback.corrected_answer:
                return False
    for target in targets:
        judge = evidence.get(("judge", target))
        if judge is not None and judge.score is not None:
            return judge.score >= min_score
    return None
