"""The edge's LoRA adapter: which one it starts with (`edge.adapter`), and the swap `UseAdapter` asks for.

The versions live in the adapter store (`models.adapters_dir`, edge/adapter_store.py), one store per base
model. At start-up `edge.adapter = "active"` takes the store's active version; if that one cannot be used
the daemon starts on the base model and logs why (a device must come up), where a version named in the
configuration that cannot be used stops the start-up with a ConfigError naming the file. A swap loads
first and records the change in the store only once the edge runs on it, so the store never names an
adapter the daemon refused.
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from edge.adapter_store import BASE_ONLY, AdapterStore, AdapterStoreError, AdapterVersion
from edge.errors import AdapterLoadError
from router.domain.config import ConfigError, EdgeSettings, Settings
from router.domain.errors import InvalidRequestError

if TYPE_CHECKING:
    from router.assembly.parts import ResolvedModel

ACTIVE = "active"


def edge_model_file(settings: Settings) -> "ResolvedModel":
    """The configured edge model's file, name and SHA-256 (hashed when the catalogue does not give it): what
    an adapter is trained on and bound to."""
    from edge.lora_adapter import file_sha256
    from router.assembly.parts import model_cache, resolve_model

    model = resolve_model(model_cache(settings), settings.edge.model, settings.edge.model_path)
    return model if model.sha256 else type(model)(name=model.name, path=model.path, sha256=file_sha256(model.path))


class AdapterRefusedError(InvalidRequestError):
    """A swap named an adapter that cannot be used; the one in use stays."""


class EdgeAdapters:
    """Swaps the adapter of one loaded edge (a LlamaBackend), one swap at a time."""

    def __init__(self, edge: Any, settings: EdgeSettings, adapters_dir: Path, logger: logging.Logger,
                 on_change: Callable[[str], None] = lambda label: None) -> None:
        """`on_change`: told the new adapter's label ("" for none) after each swap (the metrics)."""
        self._edge = edge
        self._settings = settings
        self.store = AdapterStore(adapters_dir, edge.name)
        self._logger = logger
        self._on_change = on_change
        self._swapping = asyncio.Lock()

    @property
    def supported(self) -> bool:
        return hasattr(self._edge, "use_adapter")

    async def start(self) -> None:
        """The adapter `edge.adapter` names, at start-up."""
        wanted = self._settings.adapter
        if wanted == BASE_ONLY or not self.supported:
            return
        try:
            version = self.store.active() if wanted == ACTIVE else self.store.get(wanted)
            if version is not None:
                await self._load(version)
                self._on_change(version.version)
        except (AdapterStoreError, AdapterLoadError, OSError) as exc:
            if wanted != ACTIVE:
                raise ConfigError(f"edge.adapter = {wanted!r}: {exc}") from exc
            self._logger.error("the edge starts on its base model: the store's active adapter cannot be used: %s", exc)

    async def use(self, version: str) -> tuple[str, str]:
        """`version`: "vNNNN", "none" (the base model alone) or "" (the store's active version). Returns
        the edge's served-model name before and after. Raises AdapterRefusedError; nothing changes then."""
        if not self.supported:
            raise AdapterRefusedError(f"the edge backend {self._edge.name} takes no LoRA adapters")
        async with self._swapping:
            previous = self._edge.served_model
            try:
                chosen = (self.store.active() if version == "" else None if version == BASE_ONLY
                          else self.store.get(version))
                await self._load(chosen)
            except (AdapterStoreError, AdapterLoadError) as exc:
                raise AdapterRefusedError(f"{exc}; the edge stays on {previous}") from exc
            finally:
                # Whatever happened (a refusal, a cancelled call whose swap still ran to its end), the
                # metrics and the store follow what the edge runs now.
                running = self._edge.adapter
                self._on_change(running.name if running is not None else "")
                self._record(previous, running.name if running is not None else None)
            current = self._edge.served_model
        self._logger.info("edge adapter swapped", extra={"fields": {"previous": previous, "current": current}})
        return previous, current

    def _record(self, previous: str, running: Optional[str]) -> None:
        if previous == self._edge.served_model:
            return
        try:
            self.store.use(running, reason="UseAdapter")
        except (OSError, AdapterStoreError) as exc:  # the edge swapped; only the record of it failed
            self._logger.error("the edge runs %s, but the adapter store could not record it (the next start may "
                               "use another): %s", self._edge.served_model, exc)

    async def _load(self, version: Optional[AdapterVersion]) -> None:
        if version is None:
            await self._edge.use_adapter(None)
        else:
            await self._edge.use_adapter(version.path, name=version.version, scale=self._settings.adapter_scale)

    def info(self) -> tuple[str, str]:
        """(name, sha256) of the adapter in use; empty strings for none."""
        adapter = getattr(self._edge, "adapter", None)
        return (adapter.name, adapter.sha256) if adapter is not None else ("", "")
