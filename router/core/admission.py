"""Admission: whether a Generate call may start now, answered at once.

Three limits, checked in this order: the calls running in all (limits.max_concurrent_requests), the calls one
principal is running (limits.per_principal_concurrency), and the principal's rate, a token bucket that
refills at limits.per_principal_rate_per_s up to limits.per_principal_burst. A call within all three takes a
slot (and one token); one beyond any is refused with LimitExceededError (RESOURCE_EXHAUSTED) and takes
nothing. Nothing waits: a request that cannot start now is told so, and a rate refusal says when to retry.

Every method runs on the event loop, without blocking and without awaiting, so no lock is needed.

The state kept per principal is bounded. A principal's running count is dropped when it reaches zero, and
its bucket once it would be full again (a full bucket is what an unseen principal gets). Buckets are kept
in the order they were last drawn from, and a bucket drawn from `burst / rate` seconds ago is full by now,
so pruning from the oldest end leaves only the principals seen in the last `burst / rate` seconds.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from router.domain.errors import LimitExceededError


@dataclass
class _Bucket:
    tokens: float
    updated_at: float


class AdmissionSlot:
    """A running call's place; `release()` gives it back, once, however often it is called."""

    def __init__(self, admission: "Admission", principal: str) -> None:
        self._admission = admission
        self.principal = principal
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._admission._release(self.principal)


class Admission:
    def __init__(self, *, max_concurrent: int, per_principal_concurrency: int, rate_per_s: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`clock`: seconds, monotonic; the bucket refills by it."""
        if max_concurrent < 1 or per_principal_concurrency < 1 or burst < 1 or not rate_per_s > 0:
            raise ValueError("admission limits must be positive")
        self.max_concurrent = max_concurrent
        self.per_principal_concurrency = per_principal_concurrency
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._running = 0
        self._running_by_principal: dict[str, int] = {}
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()  # least recently drawn from first

    @property
    def running(self) -> int:
        return self._running

    def running_for(self, principal: str) -> int:
        return self._running_by_principal.get(principal, 0)

    @property
    def tracked_principals(self) -> int:
        """Principals with state kept (a running call, or a bucket not yet full again)."""
        return len(self._buckets.keys() | self._running_by_principal.keys())

    def acquire(self, principal: str) -> AdmissionSlot:
        """A slot for one call of `principal`, or LimitExceededError naming the limit and its key."""
        now = self._clock()
        self._prune(now)
        if self._running >= self.max_concurrent:
            raise LimitExceededError(
                f"too many requests at once: {self._running} Generate calls are running, the most the daemon "
                f"runs at once (limits.max_concurrent_requests = {self.max_concurrent}); retry when fewer run")
        running_for = self.running_for(principal)
        if running_for >= self.per_principal_concurrency:
            raise LimitExceededError(
                f"{_who(principal)} is running {running_for} Generate calls, the most one principal may run at "
                f"once (limits.per_principal_concurrency = {self.per_principal_concurrency}); retry when one ends")
        bucket = self._refilled(principal, now)
        if bucket.tokens < 1.0:
            retry_after_s = (1.0 - bucket.tokens) / self.rate_per_s
            raise LimitExceededError(
                f"{_who(principal)} is over its rate of {self.rate_per_s:g} Generate calls a second with bursts "
                f"of {self.burst} (limits.per_principal_rate_per_s, limits.per_principal_burst); retry in "
                f"{retry_after_s:.3g} s", retry_after_s=retry_after_s)
        bucket.tokens -= 1.0
        self._buckets[principal] = bucket
        self._buckets.move_to_end(principal)
        self._running += 1
        self._running_by_principal[principal] = running_for + 1
        return AdmissionSlot(self, principal)

    def _release(self, principal: str) -> None:
        self._running -= 1
        left = self._running_by_principal[principal] - 1
        if left:
            self._running_by_principal[principal] = left
        else:
            del self._running_by_principal[principal]

    def _refilled(self, principal: str, now: float) -> _Bucket:
        """The principal's bucket as of `now` (not stored: a refused call changes nothing)."""
        bucket = self._buckets.get(principal)
        if bucket is None:
            return _Bucket(tokens=float(self.burst), updated_at=now)
        tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated_at) * self.rate_per_s)
        return _Bucket(tokens=tokens, updated_at=now)

    def _prune(self, now: float) -> None:
        refill_s = self.burst / self.rate_per_s
        while self._buckets:
            principal, bucket = next(iter(self._buckets.items()))
            if now - bucket.updated_at < refill_s:
                return  # this bucket and every later one were drawn from too recently to be full for sure
            del self._buckets[principal]


def _who(principal: str) -> str:
    return f"principal {principal!r}" if principal else "the anonymous principal"
