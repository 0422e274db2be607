"""PRE_ARBITRATION: the router picks one model before anything is generated, and that model answers."""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import AsyncIterator, Optional

from router.core.arbiters.scorers import ScorerStaleError
from router.core.modes.base import ModeContext, ModeEvent, ModeOutcome
from router.core.routing.model import RequestRouter, RouteDecision, RouterSlot
from router.domain.types import BackendKind, Decision, Mode


@dataclass(frozen=True)
class PreArbitrationMode:
    slot: RouterSlot
    # What decides while the router refuses as stale (a prefill probe trained with another adapter on the edge):
    # the routing decide_at = request would use, in a slot of its own so a reload replaces it and leaves the probe.
    # None: a stale router fails like any other, and the cloud answers.
    stand_in: Optional[RouterSlot] = None
    mode: Mode = Mode.PRE_ARBITRATION
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("hybrid_router.routing"))

    async def run(self, ctx: ModeContext) -> AsyncIterator[ModeEvent]:
        routing = self.slot.current  # once: a reload during this request does not change its router
        router, judged_by = routing.router, routing.threshold
        messages = [{"role": m.role, "content": m.content} for m in ctx.request.messages]
        threshold = judged_by.current()
        stale_note = ""
        try:
            try:
                routed = await self._route(ctx, router, messages)
            except ScorerStaleError as exc:
                if self.stand_in is None:
                    raise
                stand_in = self.stand_in.current
                self.logger.info("router stale; its stand-in decides", extra={"fields": {
                    "router": router.name, "stand_in": stand_in.router.name, "why": str(exc)}})
                stale_note = f"{router.name} steps aside ({exc}); "
                router, judged_by = stand_in.router, stand_in.threshold
                threshold = judged_by.current()
                routed = await self._route(ctx, router, messages)
        except Exception as exc:  # any router failure (model, encoder, the edge's prefill): the cloud answers, as for POST's scorer
            self.logger.warning("router failed; the cloud answers", extra={"fields": {
                "router": router.name, "error": str(exc), "type": type(exc).__name__}})
            routed, keep = None, False
            reason = f"{stale_note}{router.name} failed ({type(exc).__name__}: {exc}); the cloud answers"
        else:
            keep = judged_by.keeps(routed.score, threshold)
            judged_by.observe(routed.score)
            relation = ("<" if routed.score < threshold else ">=" if keep
                        else "= (a tie, sent to the cloud to hold the share)")
            reason = (f"{stale_note}{router.name}: score {routed.score:.3f} {relation} threshold {threshold:.3f}, "
                      f"so the {'edge' if keep else 'cloud'} answers")
        backend = BackendKind.EDGE if keep else BackendKind.CLOUD
        async with ctx.call(backend) as call:
            async for delta in call.deltas():
                yield delta
        assert call.run is not None
        decision = Decision(
            mode=self.mode, arbiter="pre", scorer=router.name, score=None if routed is None else routed.score,
            threshold=threshold, threshold_kind=judged_by.name, escalated=not keep, reason=reason,
            features={} if routed is None else {**routed.features, "predicted_gain": routed.gain,
                                                "decide_ms": routed.decide_s * 1000.0})
        yield ModeOutcome(text=call.run.text, served_by=backend, decision=decision,
                          finish_reason=call.run.finish_reason)

    @staticmethod
    async def _route(ctx: ModeContext, router: RequestRouter, messages: list[dict[str, str]]) -> RouteDecision:
        # In a worker thread: a long message (up to server.max_request_bytes) and the encoder must not
        # hold up the other requests' streams.
        if getattr(router, "needs_prompt_state", False):
            # A prefill probe: the edge reads the prompt first (a kept request reuses that prefill).
            state = await ctx.read_prompt_state()
            return await asyncio.to_thread(router.decide, messages, state)
        return await asyncio.to_thread(router.decide, messages)
