"""Fault injection for the stream: a test-only mode that discards the draft it streamed.

It sends what a cascade arbiter will send when it overrules the edge (the edge's draft, DraftDiscarded,
then the cloud's answer) on real backends and through the real core, service and SDK, without an
arbiter deciding anything. Tests register it under a mode the daemon does not implement.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncIterator

from router.core.modes.base import ModeContext, ModeEvent, ModeOutcome
from router.domain.types import BackendKind, Decision, DraftDiscarded, Mode

ARBITER_NAME = "draft-discarding-fault-injection"


@dataclass(frozen=True)
class DraftDiscardingFaultInjectionMode:
    """Streams the edge's first `draft_tokens` tokens, discards them, then streams the cloud's answer
    and returns it as the outcome."""

    mode: Mode
    draft_tokens: int = 4
    reason: str = "injected: the draft is always discarded"

    async def run(self, ctx: ModeContext) -> AsyncIterator[ModeEvent]:
        async with ctx.call(BackendKind.EDGE, max_tokens=self.draft_tokens) as draft:
            async for delta in draft.deltas():
                yield delta
        draft.mark_discarded()
        yield DraftDiscarded(discarded=BackendKind.EDGE, next=BackendKind.CLOUD, reason=self.reason)
        async with ctx.call(BackendKind.CLOUD) as answer:
            async for delta in answer.deltas():
                yield delta
        assert answer.run is not None
        yield ModeOutcome(text=answer.run.text, served_by=BackendKind.CLOUD,
                          decision=Decision(mode=self.mode, arbiter=ARBITER_NAME, reason=self.reason),
                          finish_reason=answer.run.finish_reason)
