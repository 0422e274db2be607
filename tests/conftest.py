"""Shared fixtures: the test model, settings, and a real daemon on port 0 in a background thread.

The daemon runs its own event loop in a thread, so tests can use both the sync and the async SDK
against it, exactly as separate processes would.
"""
from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Iterator, Mapping, Optional

import pytest

from edge.catalogue import ModelCache
from router.domain.config import Settings, load_settings
from router.doors.server import RouterServer

TEST_MODEL = "smollm2-135m"


def models_dir() -> Path:
    return Path(os.environ.get("HYBRID_ROUTER_MODELS__CACHE_DIR", "~/.cache/hybrid-router/models")).expanduser()


@pytest.fixture(scope="session")
def smollm_path() -> Path:
    return ModelCache(models_dir()).require(TEST_MODEL)


def make_settings(overrides: Optional[Mapping[str, str]] = None, config_file: Optional[Path] = None) -> Settings:
    """Settings for tests: the 135M model as edge and as the stand-in cloud, small contexts, port 0."""
    env = {
        "HYBRID_ROUTER_MODELS__CACHE_DIR": str(models_dir()),
        "HYBRID_ROUTER_SERVER__LISTEN": "127.0.0.1:0",
        "HYBRID_ROUTER_SERVER__GRACE_PERIOD_S": "5",
        "HYBRID_ROUTER_SERVER__MAX_TOKENS_LIMIT": "1024",
        "HYBRID_ROUTER_SERVER__DEFAULT_MAX_TOKENS": "24",
        "HYBRID_ROUTER_SERVER__MAX_REQUEST_BYTES": "65536",
        "HYBRID_ROUTER_EDGE__MODEL": TEST_MODEL,
        "HYBRID_ROUTER_EDGE__N_CTX": "2048",
        "HYBRID_ROUTER_STANDIN__MODEL": TEST_MODEL,
        "HYBRID_ROUTER_STANDIN__N_CTX": "2048",
        "HYBRID_ROUTER_STANDIN__N_THREADS": "1",
        "HYBRID_ROUTER_EDGE__N_THREADS": "1",
        "HYBRID_ROUTER_LEDGER__ENABLED": "false",
        # Tests that need the Info service turn it on with their own index_dir (never the user's).
        "HYBRID_ROUTER_INFO__SERVICE": "off",
        "HYBRID_ROUTER_LOGGING__LEVEL": "WARNING",
    }
    env.update(overrides or {})
    return load_settings(config_file, env)


class ServerThread:
    """A RouterServer running on its own event loop in a background thread."""

    def __init__(self, settings: Settings, *, load: bool = True) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: RouterServer = self.call(self._make())
        self.address = self.call(self.server.start())
        if load:
            self.call(self.server.load(), timeout=300)

    async def _make(self) -> RouterServer:
        return RouterServer(self.settings)

    def call(self, coro, timeout: float = 120):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.call(self.server.stop(), timeout=120)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="session")
def daemon(smollm_path: Path) -> Iterator[ServerThread]:
    server = ServerThread(make_settings())
    yield server
    server.stop()
