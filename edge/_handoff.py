"""Tokens from the decode thread to the event loop, with as few wake-ups as the stream allows.

On a small CPU the decode threads use every core; each wake-up of the event loop (and each gRPC
message it then sends) takes a slice of a core from them, and llama.cpp's threads wait for each
other, so one preempted thread stalls the step. The handoff therefore wakes the loop at once for
the first token (time to first token is unchanged) and for the end, and otherwise at most once per
`flush_interval_s`: tokens that arrive in between wait in the buffer and leave together, as one
delta. A consumer that comes back for more takes whatever is buffered without waiting.

`flush_interval_s = 0` wakes the loop for every token.
"""
from __future__ import annotations

import asyncio
import threading
import time
from typing import Generic, TypeVar

T = TypeVar("T")


class TokenHandoff(Generic[T]):
    def __init__(self, loop: asyncio.AbstractEventLoop, flush_interval_s: float) -> None:
        if flush_interval_s < 0:
            raise ValueError(f"flush_interval_s must be >= 0, got {flush_interval_s}")
        self._loop = loop
        self._interval = flush_interval_s
        self._lock = threading.Lock()
        self._items: list[T] = []
        self._wake_scheduled = False
        self._last_wake: float | None = None  # None: nothing handed over yet, so the next item is the first
        self._ready = asyncio.Event()  # touched on the loop's thread only

    def put(self, item: T) -> None:
        """From the worker thread."""
        with self._lock:
            self._items.append(item)
            if self._wake_scheduled:
                return
            now = time.monotonic()
            if self._last_wake is not None and now - self._last_wake < self._interval:
                return  # the next token, or the end, carries this one
            self._wake_scheduled = True
            self._last_wake = now
        self._loop.call_soon_threadsafe(self._ready.set)

    def put_final(self, item: T) -> None:
        """From the loop's thread: the last item, handed over at once with everything still buffered."""
        with self._lock:
            self._items.append(item)
        self._ready.set()

    async def take(self) -> list[T]:
        """Everything buffered, waiting for a wake-up when nothing is."""
        while True:
            self._ready.clear()
            with self._lock:
                if self._items:
                    items, self._items = self._items, []
                    self._wake_scheduled = False
                    return items
                self._wake_scheduled = False
            await self._ready.wait()
