"""The life both gRPC servers share (the daemon, and `hybrid-router info serve`): signal handlers before
loading, loading raced against a stop request, then one drain however the run ended.

The handlers are in place before loading starts, so a SIGTERM during a slow load stops the process
cleanly; `early_stop` carries a signal that came even earlier, before the event loop could take it. A
second SIGTERM or Ctrl-C during the drain is logged and ignored: the drain's own budget bounds it, and
SIGKILL remains for an operator who cannot wait.
"""
from __future__ import annotations

import asyncio
import logging
import signal
from typing import Mapping, Optional, Protocol

from router.doors.stop_request import STOP_SIGNALS, StopRequest


class Servable(Protocol):
    logger: logging.Logger

    def request_stop(self) -> None: ...

    async def load(self) -> None: ...

    async def stop(self) -> None: ...


async def serve_until_stopped(server: Servable, stopping: asyncio.Event, early_stop: Optional[StopRequest], *,
                              cancel_load: bool, what_was_loading: str,
                              drain_fields: Optional[Mapping[str, object]] = None) -> int:
    """Loads `server` and serves until `stopping` is set (by a signal or `request_stop`), then stops it;
    returns the process exit status: 0, or 1 when loading failed. `cancel_load`: a stop during loading
    cancels the load (False where it runs in a thread that cannot be interrupted; `stop` then closes
    what it opens). `what_was_loading` ends the log line of a stop during start-up; `drain_fields` go
    into the log line of a signal that comes during the drain (the budgets it runs under)."""
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, server.request_stop)
    if early_stop is not None and early_stop.requested:  # checked after ours are in place: none is lost
        server.request_stop()

    def already_stopping(signum: int) -> None:
        server.logger.warning("already shutting down; the drain goes on (SIGKILL stops at once)",
                              extra={"fields": {"signal": signal.Signals(signum).name, **(drain_fields or {})}})

    try:
        return await _load_then_wait(server, stopping, cancel_load, what_was_loading)
    finally:
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, already_stopping, signum)
        try:
            await server.stop()
        finally:
            for signum in STOP_SIGNALS:
                loop.remove_signal_handler(signum)  # which restores the default action: take it back
            if early_stop is not None:
                early_stop.install()


async def _load_then_wait(server: Servable, stopping: asyncio.Event, cancel_load: bool, what_was_loading: str) -> int:
    stopped_early = f"stopped during start-up: a stop was requested before {what_was_loading}"
    if stopping.is_set():
        server.logger.info(stopped_early)
        return 0
    loading = asyncio.create_task(server.load())
    waiting = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait({loading, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if not loading.done():
            if cancel_load:
                loading.cancel()
                await asyncio.gather(loading, return_exceptions=True)
            server.logger.info(stopped_early)
            return 0
        if loading.exception() is not None:
            exc = loading.exception()
            server.logger.error("start-up failed", extra={"fields": {"error": str(exc), "type": type(exc).__name__}})
            return 1
        await waiting
        return 0
    finally:
        waiting.cancel()
