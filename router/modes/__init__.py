"""The mode registry: a new mode is one new module and one line here."""
from __future__ import annotations

from router.modes.base import ModeHandler
from router.modes.single import SingleBackendMode
from router.types import BackendKind, Mode


def builtin_modes() -> dict[Mode, ModeHandler]:
    handlers: list[ModeHandler] = [
        SingleBackendMode(Mode.EDGE_ONLY, BackendKind.EDGE),
        SingleBackendMode(Mode.CLOUD_ONLY, BackendKind.CLOUD),
    ]
    return {handler.mode: handler for handler in handlers}
