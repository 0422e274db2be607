"""The cascade: the edge answers, a scorer rates the answer, and below the threshold the cloud answers.

Streaming: with `stream_draft` (the default) the edge's tokens reach the client as they come, so a
kept answer (most of them) arrives at the edge's speed; when the cloud must answer, a DraftDiscarded
event tells the client to drop the draft, and the cloud's answer follows. Without it, the edge's text
is held back until the decision and sent as one delta.

`early`: early escalation. While the edge streams, its running confidence (the geometric-mean token
probability over the last `window` tokens) is watched; when it falls below `threshold`, the edge is
stopped there and the cloud answers, so a bad edge answer costs only the part already generated. An
answer that runs to its end is scored as in the cascade.

`shadow` is the cascade that always asks the cloud and serves its answer, with every scorer's
features recorded: it labels traffic (the cloud's answer beside the edge's, for training) at the
cloud's price.

A scorer that fails is logged; the cloud answers and the decision says why. A scorer that is stale (a
probe trained before the edge's adapter changed) steps aside for the arbiter's `stand_in`, the default
rule at its own threshold, where it has one: escalating every request would send all traffic to the cloud
until the probe is retrained.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import AsyncIterator, Mapping, Optional, Sequence

from router.core.arbiters.features import Draft
from router.core.arbiters.scorers import Score, Scorer, ScorerStaleError
from router.core.arbiters.thresholds import Threshold
from router.core.modes.base import BackendCall, ModeContext, ModeEvent, ModeOutcome
from router.domain.types import BackendKind, BackendRun, Decision, DraftDiscarded, TextDelta


def streams_draft(ctx: ModeContext, configured: bool) -> bool:
    """Whether this request's draft reaches the client before it is judged: the request's own choice
    (GenerateRequest.stream_draft), else the arbiter's configured one."""
    chosen = ctx.request.stream_draft
    return configured if chosen is None else chosen


@dataclass(frozen=True)
class ContextEdgeCalls:
    """The scorers' extra edge generations, run through the mode context so each is priced and recorded."""

    ctx: ModeContext

    async def complete(self, messages: Sequence[Mapping[str, str]], *, purpose: str, max_tokens: int,
                       temperature: float, seed: Optional[int]) -> tuple[str, Sequence[float]]:
        call = self.ctx.call(BackendKind.EDGE, messages=messages, purpose=purpose, max_tokens=max_tokens,
                             temperature=temperature, seed=seed)
        run = await call.collect()
        return run.text, tuple(call.token_logprobs)


@dataclass(frozen=True)
class EarlyExit:
    """Stop the edge when the geometric-mean probability of its last `window` tokens drops below `threshold`."""

    threshold: float
    window: int = 16

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0 or self.window < 1:
            raise ValueError("early escalation needs a threshold in [0, 1] and a window of at least 1 token")

    def running_confidence(self, token_logprobs: Sequence[float]) -> Optional[float]:
        """None until `window` tokens have come: a few uncertain opening tokens are normal."""
        if len(token_logprobs) < self.window:
            return None
        recent = token_logprobs[-self.window:]
        return math.exp(math.fsum(recent) / len(recent))


@dataclass(frozen=True)
class Verdict:
    keep: bool
    score: Optional[Score]
    threshold: float
    reason: str
    scorer: str = ""  # who scored, where it is not the arbiter's own scorer (a stand-in)
    threshold_kind: str = ""


@dataclass(frozen=True)
class StandIn:
    """What scores when the arbiter's scorer is stale, against its own threshold."""

    scorer: Scorer
    threshold: Threshold


@dataclass
class ScoringArbiter:
    """What every post-arbitration strategy shares: scoring an edge answer against the threshold."""

    scorer: Scorer
    threshold: Threshold
    stream_draft: bool = True
    name: str = "cascade"
    stand_in: Optional[StandIn] = None
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("hybrid_router.arbiter"))

    @property
    def captures_states(self) -> bool:
        """Whether the edge's answer must come with its hidden states: the scorer reads them."""
        return bool(getattr(self.scorer, "needs_hidden_states", False))

    async def judge(self, ctx: ModeContext, edge: BackendCall, *, always_escalate: bool = False) -> Verdict:
        run = edge.run
        assert run is not None
        draft = Draft(ctx.messages, run.text, tuple(edge.token_logprobs), run.finish_reason,
                      hidden_states=edge.hidden_states)
        calls = ContextEdgeCalls(ctx)
        scorer, threshold_of, stepped_aside = self.scorer, self.threshold, ""
        try:
            score = await scorer.score(draft, calls, max_tokens=ctx.params.max_tokens)
        except ScorerStaleError as exc:
            if self.stand_in is None:
                return self._failed(scorer, exc, threshold_of.current())
            self.logger.info("scorer stale; its stand-in scores", extra={"fields": {
                "scorer": scorer.name, "stand_in": self.stand_in.scorer.name, "why": str(exc)}})
            scorer, threshold_of = self.stand_in.scorer, self.stand_in.threshold
            stepped_aside = f"{self.scorer.name} steps aside ({exc}); "
            try:
                score = await scorer.score(draft, calls, max_tokens=ctx.params.max_tokens)
            except Exception as failure:  # as below: the cloud answers
                return self._failed(scorer, failure, threshold_of.current(), stepped_aside)
        except Exception as exc:  # any scorer failure: the cloud answers, and the decision says why
            return self._failed(scorer, exc, threshold_of.current())
        threshold = threshold_of.current()
        threshold_of.observe(score.value)
        who = {"scorer": scorer.name, "threshold_kind": threshold_of.name} if stepped_aside else {}
        if always_escalate:
            return Verdict(False, score, threshold, f"{stepped_aside}{self.name}: the cloud answers every request; "
                                                    f"{scorer.name} scored the edge {score.value:.3f}", **who)
        keep = threshold_of.keeps(score.value, threshold)
        relation = ("<" if score.value < threshold else ">=" if keep
                    else "= (a tie, escalated to hold the target share)")
        answers = "the edge answers" if keep else "the cloud answers"
        return Verdict(keep, score, threshold, f"{stepped_aside}{scorer.name} scored the edge {score.value:.3f} "
                                               f"{relation} threshold {threshold:.3f}: {answers}", **who)

    def _failed(self, scorer: Scorer, exc: Exception, threshold: float, stepped_aside: str = "") -> Verdict:
        self.logger.warning("scorer failed; the cloud answers", extra={"fields": {
            "scorer": scorer.name, "error": str(exc), "type": type(exc).__name__}})
        return Verdict(False, None, threshold,
                       f"{stepped_aside}scorer {scorer.name} failed ({type(exc).__name__}: {exc}); the cloud answers",
                       scorer=scorer.name if stepped_aside else "")

    def serve_edge(self, ctx: ModeContext, edge_run: BackendRun, decision: Decision) -> list[ModeEvent]:
        """The end of a request the edge answers: its text, when it was held back, then the outcome."""
        streamed = streams_draft(ctx, self.stream_draft)
        held_back = [TextDelta(edge_run.text, BackendKind.EDGE, None)] if not streamed and edge_run.text else []
        return [*held_back, ModeOutcome(text=edge_run.text, served_by=BackendKind.EDGE, decision=decision,
                                        finish_reason=edge_run.finish_reason)]

    def discard_edge(self, ctx: ModeContext, edge: BackendCall, decision: Decision) -> list[ModeEvent]:
        """The edge's answer is set aside for the cloud's: a draft, and the client is told if it saw it."""
        edge.mark_discarded()
        run = edge.run
        if streams_draft(ctx, self.stream_draft) and run is not None and run.text:
            return [DraftDiscarded(discarded=BackendKind.EDGE, next=BackendKind.CLOUD, reason=decision.reason)]
        return []

    def decision(self, ctx: ModeContext, verdict: Verdict, *, threshold_kind: str = "") -> Decision:
        score = verdict.score
        return Decision(mode=ctx.mode, arbiter=self.name, score=None if score is None else score.value,
                        reason=verdict.reason, scorer=verdict.scorer or self.scorer.name, threshold=verdict.threshold,
                        threshold_kind=threshold_kind or verdict.threshold_kind or self.threshold.name,
                        escalated=not verdict.keep,
                        features=dict(score.features) if score is not None else {})


@dataclass
class CascadeArbiter(ScoringArbiter):
    always_escalate: bool = False
    early: Optional[EarlyExit] = None

    async def run(self, ctx: ModeContext) -> AsyncIterator[ModeEvent]:
        stopped_at: Optional[float] = None
        async with ctx.call(BackendKind.EDGE, capture_states=self.captures_states) as edge:
            async for delta in edge.deltas():
                if streams_draft(ctx, self.stream_draft):
                    yield delta
                confidence = self.early.running_confidence(edge.token_logprobs) if self.early else None
                if confidence is not None and confidence < self.early.threshold:
                    stopped_at = confidence
                    break  # leaving the block stops the edge here: the rest is never generated
        edge_run = edge.run
        assert edge_run is not None
        if stopped_at is not None:
            verdict = Verdict(False, None, self.early.threshold,
                              f"early escalation: the edge's confidence over its last {self.early.window} tokens "
                              f"fell to {stopped_at:.3f} < {self.early.threshold:.3f} after "
                              f"{edge_run.completion_tokens} tokens; the cloud answers")
        else:
            verdict = await self.judge(ctx, edge, always_escalate=self.always_escalate)
        decision = self.decision(ctx, verdict, threshold_kind="early" if stopped_at is not None else "")
        if verdict.keep:
            for event in self.serve_edge(ctx, edge_run, decision):
                yield event
            return
        for event in self.discard_edge(ctx, edge, decision):
            yield event
        async with ctx.call(BackendKind.CLOUD) as cloud:
            async for delta in cloud.deltas():
                yield delta
        cloud_run = cloud.run
        assert cloud_run is not None
        yield ModeOutcome(text=cloud_run.text, served_by=BackendKind.CLOUD, decision=decision,
                          finish_reason=cloud_run.finish_reason)
