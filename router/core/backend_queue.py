"""A bounded queue in front of a backend: a call beyond it is refused at once, never left to wait.

A backend runs `capacity` calls at a time (the edge one, behind its lock; the cloud cloud.max_concurrency,
behind its semaphore) and lets the rest wait there, without bound. QueuedBackend counts the calls in
flight, from the stream's opening to its end, and refuses a new one with LimitExceededError
(RESOURCE_EXHAUSTED) once `capacity + max_waiting` are in flight. It wraps the backend itself (innermost,
under any other decorator), so every call a mode makes is counted, whoever made it.

A call's place is given back exactly once, at the first of: the stream's natural end, an error that
ended it (its `completion` is set), `aclose()` (even one cut short), or the stream's garbage collection
(a stream dropped unclosed must not hold its place forever).

Every method runs on the event loop, without awaiting between the check and the count, so no lock is needed.
"""
from __future__ import annotations

from typing import Any, AsyncIterator, Mapping, Optional, Sequence

from router.core.backends import Backend, BackendStream, Completion, Delta
from router.domain.errors import LimitExceededError


class QueuedBackend:
    """`inner` with at most `capacity + max_waiting` calls in flight. Every other attribute is the inner
    backend's (n_ctx, count_tokens, n_params, close, ...), so the modes' duck typing sees the real one."""

    def __init__(self, inner: Backend, *, capacity: int, max_waiting: int, label: str) -> None:
        """`label`: the backend as the refusal names it ("edge", "cloud")."""
        if capacity < 1 or max_waiting < 0:
            raise ValueError("capacity must be at least 1 and max_waiting at least 0")
        self.inner = inner
        self.capacity = capacity
        self.max_waiting = max_waiting
        self.label = label
        self._in_flight = 0

    @property
    def name(self) -> str:
        return self.inner.name

    def __getattr__(self, attribute: str) -> Any:
        # Only called for what this class does not define itself.
        if attribute == "inner":  # not set yet (a failed __init__): no recursion through it
            raise AttributeError(attribute)
        return getattr(self.inner, attribute)

    def __repr__(self) -> str:
        return f"QueuedBackend({self.inner!r}, capacity={self.capacity}, max_waiting={self.max_waiting})"

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def stream(self, messages: Sequence[Mapping[str, str]], **options: Any) -> BackendStream:
        """The inner backend's stream, counted until it ends; LimitExceededError if the queue is full.
        `options` pass through as given (max_tokens, temperature, stop, seed, and a grammar for the edge)."""
        if self._in_flight >= self.capacity + self.max_waiting:
            raise LimitExceededError(
                f"the {self.label} backend is busy: {self._in_flight} calls are running or waiting for it, the "
                f"most it takes ({self.capacity} at a time, limits.max_queued_per_backend = {self.max_waiting} "
                f"waiting); retry when it is less busy")
        stream = self.inner.stream(messages, **options)  # a call refused here took no place
        self._in_flight += 1
        return CountedStream(stream, self)

    def _release(self) -> None:
        self._in_flight -= 1


class CountedStream:
    """The inner stream, holding its place in the queue until it ends."""

    def __init__(self, inner: BackendStream, queue: QueuedBackend) -> None:
        self._inner = inner
        self._deltas: Optional[AsyncIterator[Delta]] = None
        self._queue: Optional[QueuedBackend] = queue  # None once the place is given back

    @property
    def completion(self) -> Optional[Completion]:
        return self._inner.completion

    @property
    def holds_place(self) -> bool:
        return self._queue is not None

    def __aiter__(self) -> "CountedStream":
        return self

    async def __anext__(self) -> Delta:
        try:
            if self._deltas is None:
                self._deltas = self._inner.__aiter__()
            return await self._deltas.__anext__()
        except StopAsyncIteration:
            self._give_back()
            raise
        except BaseException:
            # An error that ended the stream sets its completion; a cancelled read of an edge stream
            # does not end it (the model runs on until aclose), so its place is kept until then.
            if self._inner.completion is not None:
                self._give_back()
            raise

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            # Even when closing is cut short: nobody closes a stream twice, so the place would be lost.
            self._give_back()

    def _give_back(self) -> None:
        queue, self._queue = self._queue, None
        if queue is not None:
            queue._release()

    def __del__(self) -> None:
        if getattr(self, "_queue", None) is not None:  # not after a failed __init__
            self._give_back()
