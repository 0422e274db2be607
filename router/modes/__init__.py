"""The mode registry: a new mode is one new module and one line here."""
from __future__ import annotations

from typing import Optional

from edge.catalogue import ModelCache
from router.config import ArbitrationSettings
from router.modes.base import ModeHandler
from router.modes.single import SingleBackendMode
from router.types import BackendKind, Mode


def builtin_modes(arbitration: Optional[ArbitrationSettings] = None, *,
                  model_cache: Optional[ModelCache] = None) -> dict[Mode, ModeHandler]:
    """Every implemented mode, each given what it depends on (the arbiter, from `[arbitration]`;
    `model_cache`: where the learned scorer's text encoder is). Raises ConfigError for an unusable
    learned model."""
    from router.arbiters import build_arbiter
    from router.modes.post import PostArbitrationMode

    handlers: list[ModeHandler] = [
        SingleBackendMode(Mode.EDGE_ONLY, BackendKind.EDGE),
        SingleBackendMode(Mode.CLOUD_ONLY, BackendKind.CLOUD),
        PostArbitrationMode(build_arbiter(arbitration or ArbitrationSettings(), model_cache=model_cache)),
    ]
    return {handler.mode: handler for handler in handlers}
