"""EDGE_ONLY and CLOUD_ONLY: one model answers, and the decision record says so."""
from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncIterator

from router.core.modes.base import ModeContext, ModeEvent, ModeOutcome
from router.domain.types import BackendKind, Decision, Mode


@dataclass(frozen=True)
class SingleBackendMode:
    mode: Mode
    backend: BackendKind

    async def run(self, ctx: ModeContext) -> AsyncIterator[ModeEvent]:
        async with ctx.call(self.backend) as call:
            async for delta in call.deltas():
                yield delta
        assert call.run is not None  # closed by its block: the context holds the run too
        yield ModeOutcome(
            text=call.run.text, served_by=self.backend,
            decision=Decision(mode=self.mode, reason=f"{self.mode.name}: the {self.backend.name.lower()} model answers"),
            finish_reason=call.run.finish_reason)
