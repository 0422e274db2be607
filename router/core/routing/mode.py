"""PRE_ARBITRATION: the router picks one model before anything is generated, and that model answers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncIterator

from router.core.arbiters.thresholds import Threshold
from router.core.modes.base import ModeContext, ModeEvent, ModeOutcome
from router.core.routing.model import RouterSlot
from router.domain.types import BackendKind, Decision, Mode


@dataclass(frozen=True)
class PreArbitrationMode:
    slot: RouterSlot
    threshold: Threshold
    mode: Mode = Mode.PRE_ARBITRATION

    async def run(self, ctx: ModeContext) -> AsyncIterator[ModeEvent]:
        router = self.slot.current  # once: a reload during this request does not change its router
        messages = [{"role": m.role, "content": m.content} for m in ctx.request.messages]
        routed = router.decide(messages)
        threshold = self.threshold.current()
        keep = self.threshold.keeps(routed.score, threshold)
        self.threshold.observe(routed.score)
        backend = BackendKind.EDGE if keep else BackendKind.CLOUD
        async with ctx.call(backend) as call:
            async for delta in call.deltas():
                yield delta
        assert call.run is not None
        decision = Decision(
            mode=self.mode, arbiter="pre", scorer=router.name, score=routed.score, threshold=threshold,
            threshold_kind=self.threshold.name, escalated=not keep,
            reason=(f"{router.name}: score {routed.score:.3f} {'>=' if keep else '<'} threshold {threshold:.3f}, "
                    f"so the {backend.name.lower()} answers"),
            features={**routed.features, "predicted_gain": routed.gain, "decide_ms": routed.decide_s * 1000.0})
        yield ModeOutcome(text=call.run.text, served_by=backend, decision=decision,
                          finish_reason=call.run.finish_reason)
