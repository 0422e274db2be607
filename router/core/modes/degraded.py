"""A cloud-capable request that a gate kept off the cloud (router/core/cloud_gate.py): the edge answers,
and the decision keeps the mode asked for, marked degraded, with the gate's reason."""
from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncIterator

from router.core.modes.base import ModeContext, ModeEvent, ModeOutcome
from router.domain.types import BackendKind, Decision, Mode


@dataclass(frozen=True)
class EdgeInsteadOfCloud:
    mode: Mode
    reason: str

    async def run(self, ctx: ModeContext) -> AsyncIterator[ModeEvent]:
        async with ctx.call(BackendKind.EDGE) as call:
            async for delta in call.deltas():
                yield delta
        assert call.run is not None
        yield ModeOutcome(text=call.run.text, served_by=BackendKind.EDGE,
                          decision=Decision(mode=self.mode, reason=f"degraded: {self.reason}; the edge answers",
                                            degraded=True),
                          finish_reason=call.run.finish_reason)
