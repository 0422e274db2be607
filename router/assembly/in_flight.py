"""The requests in flight across every door, and the one drain they share on shutdown.

Each door tracks each request it serves (`InFlightCalls.track`); at shutdown the daemon's host stops its
transports taking new ones, then `drain` gives the requests running the grace period and stops those
still running with an error that says why. A `Deadline` is the one point in time the shutdown's steps share.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterator, Optional, TypeVar

from router.domain.errors import BackendUnavailableError, RouterError

T = TypeVar("T")


@dataclass(frozen=True)
class Deadline:
    """One point in time (time.monotonic) that several steps share: each gets what the ones before left."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> "Deadline":
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())


class InFlightCall:
    """One request a door is serving, as a shutdown sees it.

    A shutdown stops a call by cancelling its task, but only while the task awaits the router: there
    the cancellation runs the router's own clean-up (the edge stops within a token, the cloud stream
    closes) and comes back to the handler, which answers with `cut_error`. A task cancelled inside its
    transport's write of a message might never come back to the handler (gRPC swallows the cancellation
    and sends no status), so a call caught there is only marked and stops before its next step.
    """

    def __init__(self, task: "asyncio.Task[object]", cut_error: Optional[RouterError]) -> None:
        self.task = task
        self.cut_error = cut_error
        self._awaiting_router = False

    async def run(self, step: Callable[[], Awaitable[T]]) -> T:
        """Awaits one step of router work; raises `cut_error` if the call is cut before or during it."""
        if self.cut_error is not None:
            raise self.cut_error
        self._awaiting_router = True
        try:
            return await step()
        except asyncio.CancelledError:
            if self.cut_error is None:
                raise  # the client went away, or gRPC itself cancels: nothing to answer
            self.task.uncancel()  # this cancellation was ours, and it is handled here
            raise self.cut_error from None
        finally:
            self._awaiting_router = False

    def cut(self, error: RouterError) -> None:
        self.cut_error = error
        if self._awaiting_router:
            self.task.cancel()


class InFlightCalls:
    """The requests every door is now serving, so that one shutdown can wait for them all and then stop
    the rest with an error that says why (a transport's own cut says only "Cancelling all calls")."""

    def __init__(self) -> None:
        self._calls: set[InFlightCall] = set()
        self._cut_error: Optional[RouterError] = None

    @contextlib.contextmanager
    def track(self) -> Iterator[InFlightCall]:
        task = asyncio.current_task()
        assert task is not None
        call = InFlightCall(task, self._cut_error)  # a call that starts after the cut stops at once
        self._calls.add(call)
        try:
            yield call
        finally:
            self._calls.discard(call)

    def __len__(self) -> int:
        return len(self._calls)

    async def wait(self, timeout_s: float) -> bool:
        """Waits until every call has ended (its status sent), at most timeout_s. True when none is left."""
        tasks = {call.task for call in self._calls}
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)
        return not self._calls

    def cut(self, error: RouterError) -> int:
        """Stops every call with `error`; returns how many there were."""
        self._cut_error = error
        for call in tuple(self._calls):
            call.cut(error)
        return len(self._calls)


async def drain(calls: InFlightCalls, grace_s: float, logger: logging.Logger) -> int:
    """Waits up to `grace_s` for the requests in flight to end, then stops those still running with
    UNAVAILABLE, saying why and that a retry is safe. Returns how many were stopped."""
    if await calls.wait(grace_s):
        return 0
    stopped = calls.cut(BackendUnavailableError(
        f"the daemon is shutting down: the request was still running when the grace period "
        f"(server.grace_period_s = {grace_s:g} s) ended, so it was stopped; retry it"))
    logger.warning("grace period over: stopping the requests still running", extra={"fields": {"requests": stopped}})
    return stopped
