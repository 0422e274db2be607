"""A cloud-capable request that a gate kept off the cloud (router/core/cloud_gate.py): the edge answers,
and the decision keeps the mode asked for, marked degraded, with the gate's reason."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import AsyncIterator

from router.core.modes.base import ModeContext, ModeEvent, ModeOutcome
from router.core.modes.single import SingleBackendMode
from router.domain.types import BackendKind, Decision, Mode


@dataclass(frozen=True)
class EdgeInsteadOfCloud:
    mode: Mode
    reason: str

    async def run(self, ctx: ModeContext) -> AsyncIterator[ModeEvent]:
        async for event in SingleBackendMode(self.mode, BackendKind.EDGE).run(ctx):
            if isinstance(event, ModeOutcome):
                event = dataclasses.replace(event, decision=Decision(
                    mode=self.mode, reason=f"degraded: {self.reason}; the edge answers", degraded=True))
            yield event
