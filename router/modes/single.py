"""EDGE_ONLY and CLOUD_ONLY: one model answers, and the decision record says so."""
from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncIterator

from router.modes.base import BackendCall, ModeContext, ModeEvent, ModeOutcome
from router.types import BackendKind, Decision, Mode


@dataclass(frozen=True)
class SingleBackendMode:
    mode: Mode
    backend: BackendKind

    async def run(self, ctx: ModeContext) -> AsyncIterator[ModeEvent]:
        call = BackendCall(ctx, self.backend)
        async for delta in call.deltas():
            yield delta
        assert call.run is not None
        yield ModeOutcome(
            text=call.run.text, served_by=self.backend, runs=(call.run,),
            decision=Decision(mode=self.mode, reason=f"{self.mode.name}: the {self.backend.name.lower()} model answers"),
            finish_reason=call.run.finish_reason)
