"""The cascade: the edge answers, a scorer rates the answer, and below the threshold the cloud answers.

Streaming: with `stream_draft` (the default) the edge's tokens reach the client as they come, so a
kept answer (most of them) arrives at the edge's speed; when the cloud must answer, a DraftDiscarded
event tells the client to drop the draft, and the cloud's answer follows. Without it, the edge's text
is held back until the decision and sent as one delta.

`shadow` is the cascade that always asks the cloud and serves its answer, with every scorer's
features recorded: it labels traffic (the cloud's answer beside the edge's, for training) at the
cloud's price.

A scorer that fails is logged; the cloud answers and the decision says why.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import AsyncIterator, Mapping, Optional, Sequence

from router.arbiters.features import Draft
from router.arbiters.scorers import Score, Scorer
from router.arbiters.thresholds import Threshold
from router.modes.base import ModeContext, ModeEvent, ModeOutcome
from router.types import BackendKind, Decision, DraftDiscarded, TextDelta


@dataclass(frozen=True)
class ContextEdgeCalls:
    """The scorers' extra edge generations, run through the mode context so each is priced and recorded."""

    ctx: ModeContext

    async def complete(self, messages: Sequence[Mapping[str, str]], *, purpose: str, max_tokens: int,
                       temperature: float, seed: Optional[int]) -> tuple[str, Sequence[float]]:
        async with self.ctx.call(BackendKind.EDGE, messages=messages, purpose=purpose, max_tokens=max_tokens,
                                 temperature=temperature, seed=seed) as call:
            async for _delta in call.deltas():
                pass
        assert call.run is not None
        return call.run.text, tuple(call.token_logprobs)


@dataclass
class CascadeArbiter:
    scorer: Scorer
    threshold: Threshold
    stream_draft: bool = True
    always_escalate: bool = False
    name: str = "cascade"
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("hybrid_router.arbiter"))

    async def run(self, ctx: ModeContext) -> AsyncIterator[ModeEvent]:
        async with ctx.call(BackendKind.EDGE, purpose="answer") as edge:
            async for delta in edge.deltas():
                if self.stream_draft:
                    yield delta
        edge_run = edge.run
        assert edge_run is not None
        draft = Draft(ctx.messages, edge_run.text, tuple(edge.token_logprobs), edge_run.finish_reason)
        threshold = self.threshold.current()
        score: Optional[Score] = None
        failure = ""
        try:
            score = await self.scorer.score(draft, ContextEdgeCalls(ctx), max_tokens=ctx.params.max_tokens)
        except Exception as exc:  # any scorer failure: the cloud answers, and the decision says why
            failure = f"scorer {self.scorer.name} failed ({type(exc).__name__}: {exc})"
            self.logger.warning("scorer failed; the cloud answers", extra={"fields": {
                "scorer": self.scorer.name, "error": str(exc), "type": type(exc).__name__}})
        if score is not None:
            self.threshold.observe(score.value)
        keep = score is not None and not self.always_escalate and score.value >= threshold
        decision = self._decision(ctx, score, threshold, keep, failure)
        if keep:
            if not self.stream_draft and edge_run.text:
                yield TextDelta(edge_run.text, BackendKind.EDGE, None)
            yield ModeOutcome(text=edge_run.text, served_by=BackendKind.EDGE, decision=decision,
                              finish_reason=edge_run.finish_reason)
            return
        edge.mark_discarded()
        if self.stream_draft and edge_run.text:
            yield DraftDiscarded(discarded=BackendKind.EDGE, next=BackendKind.CLOUD, reason=decision.reason)
        async with ctx.call(BackendKind.CLOUD, purpose="answer") as cloud:
            async for delta in cloud.deltas():
                yield delta
        cloud_run = cloud.run
        assert cloud_run is not None
        yield ModeOutcome(text=cloud_run.text, served_by=BackendKind.CLOUD, decision=decision,
                          finish_reason=cloud_run.finish_reason)

    def _decision(self, ctx: ModeContext, score: Optional[Score], threshold: float, keep: bool,
                  failure: str) -> Decision:
        if failure:
            reason = f"{failure}; the cloud answers"
        elif self.always_escalate:
            reason = f"shadow: the cloud answers every request; {self.scorer.name} scored the edge {score.value:.3f}"
        elif keep:
            reason = f"{self.scorer.name} scored the edge {score.value:.3f} >= threshold {threshold:.3f}: the edge answers"
        else:
            reason = f"{self.scorer.name} scored the edge {score.value:.3f} < threshold {threshold:.3f}: the cloud answers"
        return Decision(mode=ctx.mode, arbiter=self.name, score=None if score is None else score.value,
                        reason=reason, scorer=self.scorer.name, threshold=threshold,
                        threshold_kind=self.threshold.name, escalated=not keep,
                        features=dict(score.features) if score is not None else {})
