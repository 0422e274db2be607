"""Fault injection: a backend that hangs before its first token, and says when a stream has begun to hang.

A test that must act on a request while it is certainly inside the backend (cancel it, reuse its id)
waits on `hanging` instead of guessing how many event-loop steps the request takes to get there.
"""
from __future__ import annotations

import asyncio
from typing import Mapping, Optional, Sequence

from router.core.fault_injection import FaultInjectionStream, FixedLatencyFaultInjectionBackend, InjectedDelta

HANG_S = 3600.0  # longer than any test: the hang ends when the test cancels the request


class HangingFaultInjectionStream:
    def __init__(self, inner: FaultInjectionStream, hanging: asyncio.Event) -> None:
        self._inner = inner
        self._hanging = hanging

    @property
    def completion(self) -> object:
        return self._inner.completion

    def __aiter__(self) -> "HangingFaultInjectionStream":
        return self

    async def __anext__(self) -> InjectedDelta:
        # set() only schedules the waiters: this task goes on, into the backend, until its hang begins.
        self._hanging.set()
        return await self._inner.__anext__()

    async def aclose(self) -> None:
        await self._inner.aclose()


class HangingFaultInjectionBackend(FixedLatencyFaultInjectionBackend):
    """Hangs for HANG_S before its first token; `hanging` is set once a stream is hanging."""

    def __init__(self) -> None:
        super().__init__(latency_s=HANG_S)
        self.hanging = asyncio.Event()

    def stream(self, messages: Sequence[Mapping[str, str]], *, max_tokens: int, temperature: float,
               stop: Sequence[str] = (), seed: Optional[int] = None) -> HangingFaultInjectionStream:
        return HangingFaultInjectionStream(super().stream(messages, max_tokens=max_tokens, temperature=temperature,
                                                          stop=stop, seed=seed), self.hanging)
