"""A stop asked for by SIGTERM or SIGINT before the daemon's event loop can take signals itself.

`hybrid-router serve` and `hybrid-router info serve` install it first (router/doors/entry.py), before
their slow imports and before the server is built, so that a signal during start-up is remembered
instead of killing the process with default action (a stand-in half started, the ledger open); the
shared serve loop (serve_loop.py) honours it once the server's own handlers are in place. Standard library only: it must be importable before anything slow.
"""
from __future__ import annotations

import signal
from types import FrameType
from typing import Optional

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    def __init__(self) -> None:
        self.signal: Optional[signal.Signals] = None

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def install(self) -> None:
        """Takes SIGTERM and SIGINT from now on, in place of their default actions (main thread only)."""
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._record)

    def _record(self, signum: int, frame: Optional[FrameType]) -> None:
        # Only remember it: Python runs this between any two bytecodes, in the middle of an import too.
        if self.signal is None:
            self.signal = signal.Signals(signum)
