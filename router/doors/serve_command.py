"""`hybrid-router serve` and `hybrid-router info serve`: from the command line to the server's exit status.

Both take SIGTERM from their first moment: router/doors/entry.py installs a StopRequest before the slow
imports (pydantic, grpc, llama.cpp, onnxruntime), and a command called some other way installs one here.
From then on a signal is kept and honoured once the server can stop cleanly (serve_loop.py), instead of
killing a half-started process. Standard library only at import, to stay quick.
"""
from __future__ import annotations

import asyncio
import os
import sys
from typing import TYPE_CHECKING, Callable, Optional, Protocol

from router.doors.stop_request import StopRequest

if TYPE_CHECKING:
    import logging

    from router.domain.config import Settings

EXIT_CANNOT_LISTEN = 1


class Server(Protocol):
    async def start(self, listen: Optional[str] = None) -> str: ...

    async def run(self, early_stop: Optional[StopRequest] = None) -> int: ...


def take_stop_signals(early_stop: Optional[StopRequest]) -> StopRequest:
    """The StopRequest entry.py installed, or a new one installed now."""
    early_stop = early_stop or StopRequest()
    early_stop.install()
    return early_stop


def serve(early_stop: StopRequest, settings: "Settings", listen: Optional[str], *,
          build: Callable[["Settings", "logging.Logger"], Server], logger_name: str, default_address: str) -> int:
    """Configures logging, binds `listen` (or the server's own default), and serves until stopped.
    A server that says it did not stop in time (`stopped_in_time` False: a part overran the shutdown
    budget) ends the process without joining its threads."""
    import logging

    from router.doors.logs import configure_logging

    configure_logging(settings.logging)
    logger = logging.getLogger(logger_name)

    async def run() -> int:
        server = build(settings, logger)
        try:
            await server.start(listen)
        except RuntimeError as exc:  # no address, or grpc cannot bind it
            logger.error("cannot listen", extra={"fields": {"address": listen or default_address, "error": str(exc)}})
            return EXIT_CANNOT_LISTEN
        status = await server.run(early_stop)
        if not getattr(server, "stopped_in_time", True):
            _exit_without_waiting(status)
        return status

    return asyncio.run(run())


def _exit_without_waiting(status: int) -> None:
    """Ends the process without joining its threads: a part that overran the shutdown budget (the edge
    model in an evaluation llama.cpp cannot interrupt) would otherwise hold it past the documented
    bound, grace_period_s + shutdown_flush_s. The log says which part it was."""
    import logging

    logging.shutdown()  # flushes the log first
    sys.stdout.flush()
    os._exit(status)
