"""The mode registry: a new mode is one new module and one line here."""
from __future__ import annotations

from typing import Optional

from router.core.modes.base import ModeHandler
from router.core.modes.post import Arbiter, PostArbitrationMode
from router.core.modes.single import SingleBackendMode
from router.domain.types import BackendKind, Mode


def builtin_modes(arbiter: Optional[Arbiter] = None) -> dict[Mode, ModeHandler]:
    """Every implemented mode, each given what it depends on: POST_ARBITRATION its arbiter (default:
    the one default `[arbitration]` settings build; router/assembly/modes.py builds the configured one)."""
    if arbiter is None:
        from router.core.arbiters import build_arbiter
        from router.domain.config import ArbitrationSettings

        arbiter = build_arbiter(ArbitrationSettings())
    handlers: list[ModeHandler] = [
        SingleBackendMode(Mode.EDGE_ONLY, BackendKind.EDGE),
        SingleBackendMode(Mode.CLOUD_ONLY, BackendKind.CLOUD),
        PostArbitrationMode(arbiter),
    ]
    return {handler.mode: handler for handler in handlers}
