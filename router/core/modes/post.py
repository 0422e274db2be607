"""POST_ARBITRATION: the edge answers first; an arbiter (router/core/arbiters/) decides whether the cloud must."""
from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncIterator, Protocol

from router.core.modes.base import ModeContext, ModeEvent
from router.domain.types import Mode


class Arbiter(Protocol):
    name: str

    def run(self, ctx: ModeContext) -> AsyncIterator[ModeEvent]: ...


@dataclass(frozen=True)
class PostArbitrationMode:
    arbiter: Arbiter
    mode: Mode = Mode.POST_ARBITRATION

    def run(self, ctx: ModeContext) -> AsyncIterator[ModeEvent]:
        return self.arbiter.run(ctx)
