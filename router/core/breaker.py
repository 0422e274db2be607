"""The cloud's circuit breaker: a dead cloud is asked once per cool-down, not by every request.

    closed ──(failures_to_open consecutive failed calls)──> open ──(cooldown_s)──> half-open
      ^                                                      ^                        │
      └──────────────(the trial call succeeds)───────────────┼────────────────────────┤
                                                             └──(the trial fails)─────┘

Half-open lets exactly one trial call through; the calls beside it are refused as while open. A call's
outcome is what its stream ended with (router/core/backends.py's BackendStream): its natural end is a
success; a backend failure (unreachable, 5xx, timeout, rate limit, refused credentials) is a failure; a
request the cloud rejected as invalid is a success (the cloud answered); a cancelled call, or an error that
is no backend's, says nothing about the cloud and counts as neither. Outcomes of calls let through before
the last change of state are not counted: they describe the cloud as it was.

Three parts: CloudBreaker (the state, read by health and `Info` through `snapshot()`),
BreakerGuardedBackend (the cloud backend that asks it and tells it how each call ended), and BreakerGate
(the CloudGate that keeps requests off the cloud while it is open, per breaker.when_open).
"""
from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence

from router.core.backends import Backend, BackendStream, Completion, Delta, translate_backend_error
from router.core.cloud_gate import CloudKeptOffError
from router.core.refused_stream import NothingSpent
from router.domain.config import BreakerSettings
from router.domain.errors import (BackendUnavailableError, BudgetExhaustedError, CancelledError, InvalidRequestError,
                                  LimitExceededError, RouterError)
from router.domain.types import GenerateRequest

Clock = Callable[[], float]  # monotonic seconds
LAST_ERROR_MAX_CHARS = 300


class BreakerState(str, enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CallOutcome(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    NEUTRAL = "neutral"  # cancelled, or failed for a reason that is not the cloud's


class CloudBreakerOpenError(CloudKeptOffError):
    """The breaker refuses the call (UNAVAILABLE); `retry_after_s` says when a trial call is let through."""


@dataclass(frozen=True)
class BreakerSnapshot:
    """The breaker as health and `Info` show it."""

    state: BreakerState
    consecutive_failures: int
    failures_to_open: int
    cooldown_s: float
    opened_at: Optional[float]   # the clock's seconds (monotonic) when it last opened; None while closed
    retry_in_s: Optional[float]  # open: seconds until a trial call is let through; otherwise None
    trial_in_flight: bool        # half-open: the one trial call is running
    last_error: str              # the last failure's message, "" before any
    times_opened: int            # since the daemon started
    times_closed: int            # recoveries: a trial call that succeeded


@dataclass(frozen=True)
class Admission:
    """A call let through: the state's generation it was let through in, and whether it is the trial."""

    generation: int
    trial: bool


def outcome_of(exc: BaseException) -> CallOutcome:
    """What an exception raised by a cloud stream says about the cloud."""
    if isinstance(exc, (asyncio.CancelledError, CancelledError)):
        return CallOutcome.NEUTRAL
    error = exc if isinstance(exc, RouterError) else translate_backend_error(exc)
    if error is None or isinstance(error, (LimitExceededError, BudgetExhaustedError)):
        return CallOutcome.NEUTRAL  # a bug here, or the daemon's own limit: not the cloud's health
    if isinstance(error, InvalidRequestError):
        return CallOutcome.SUCCESS  # the cloud answered; the request was the problem
    return CallOutcome.FAILURE


def describe_failure(exc: BaseException) -> str:
    error = exc if isinstance(exc, RouterError) else translate_backend_error(exc)
    return error.message if error is not None else f"{type(exc).__name__}: {exc}"


class CloudBreaker:
    """The breaker's state. Safe to read from any thread; calls come from the event loop."""

    def __init__(self, settings: BreakerSettings, *, clock: Clock = time.monotonic,
                 logger: Optional[logging.Logger] = None) -> None:
        self.settings = settings
        self._clock = clock
        self._logger = logger or logging.getLogger("hybrid_router.breaker")
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._generation = 0
        self._consecutive_failures = 0
        self._opened_at: Optional[float] = None
        self._trial_started: Optional[float] = None
        self._last_error = ""
        self._times_opened = 0
        self._times_closed = 0

    def admit(self) -> Admission:
        """Lets one call through, or raises CloudBreakerOpenError."""
        with self._lock:
            now = self._clock()
            state = self._advance(now)
            if state is BreakerState.CLOSED:
                return Admission(self._generation, trial=False)
            if state is BreakerState.HALF_OPEN and self._trial_free(now):
                self._trial_started = now
                return Admission(self._generation, trial=True)
            why, retry_in = self._refusal(now)
        degrade = f"cloud circuit breaker open: {why}" if self.settings.when_open == "degrade" else None
        raise CloudBreakerOpenError(f"the cloud circuit breaker is open: {why}", retry_after_s=retry_in,
                                    degrade_reason=degrade)

    def record(self, admission: Admission, outcome: CallOutcome, error: str = "") -> None:
        """How a call let through by `admit` ended."""
        with self._lock:
            now = self._clock()
            if admission.generation != self._generation:
                return  # let through before the last change of state
            if outcome is CallOutcome.FAILURE:
                self._consecutive_failures += 1
                self._last_error = error[:LAST_ERROR_MAX_CHARS]
                if admission.trial or self._consecutive_failures >= self.settings.failures_to_open:
                    self._open(now)
            elif outcome is CallOutcome.SUCCESS:
                self._consecutive_failures = 0
                if admission.trial:
                    self._close()
            elif admission.trial:
                self._trial_started = None  # a cancelled trial proves nothing: the next call is the trial

    def refusal(self) -> Optional[tuple[str, Optional[float]]]:
        """(why, seconds until a trial call) when a call made now would be refused; None when it would
        be let through. Changes nothing."""
        with self._lock:
            now = self._clock()
            state = self._advance(now)
            if state is BreakerState.CLOSED or (state is BreakerState.HALF_OPEN and self._trial_free(now)):
                return None
            return self._refusal(now)

    def snapshot(self) -> BreakerSnapshot:
        with self._lock:
            now = self._clock()
            state = self._advance(now)
            retry_in = (max(0.0, self._opened_at + self.settings.cooldown_s - now)
                        if state is BreakerState.OPEN and self._opened_at is not None else None)
            return BreakerSnapshot(
                state=state, consecutive_failures=self._consecutive_failures,
                failures_to_open=self.settings.failures_to_open, cooldown_s=self.settings.cooldown_s,
                opened_at=self._opened_at, retry_in_s=retry_in,
                trial_in_flight=state is BreakerState.HALF_OPEN and not self._trial_free(now),
                last_error=self._last_error, times_opened=self._times_opened, times_closed=self._times_closed)

    # -- under the lock ------------------------------------------------------------------------------

    def _advance(self, now: float) -> BreakerState:
        """The state now: an open breaker whose cool-down has passed is half-open."""
        if (self._state is BreakerState.OPEN and self._opened_at is not None
                and now - self._opened_at >= self.settings.cooldown_s):
            self._state = BreakerState.HALF_OPEN
            self._generation += 1
            self._trial_started = None
            self._logger.info("cloud circuit breaker half-open: the next cloud call is a trial")
        return self._state

    def _trial_free(self, now: float) -> bool:
        # A trial whose stream was dropped without being closed never reports; after a cool-down of its
        # own, another call may try.
        return self._trial_started is None or now - self._trial_started >= self.settings.cooldown_s

    def _refusal(self, now: float) -> tuple[str, Optional[float]]:
        failures = f"{self._consecutive_failures} consecutive cloud failures (last: {self._last_error})"
        if self._state is BreakerState.HALF_OPEN:
            return f"{failures}; a trial call is in flight", None
        assert self._opened_at is not None
        retry_in = max(0.0, self._opened_at + self.settings.cooldown_s - now)
        return f"{failures}; the next trial call in {retry_in:.1f} s", retry_in

    def _open(self, now: float) -> None:
        self._state = BreakerState.OPEN
        self._generation += 1
        self._opened_at = now
        self._trial_started = None
        self._times_opened += 1
        self._logger.warning("cloud circuit breaker opened", extra={"fields": {
            "consecutive_failures": self._consecutive_failures, "cooldown_s": self.settings.cooldown_s,
            "last_error": self._last_error}})

    def _close(self) -> None:
        self._state = BreakerState.CLOSED
        self._generation += 1
        self._opened_at = None
        self._trial_started = None
        self._times_closed += 1
        self._logger.info("cloud circuit breaker closed: the trial call succeeded")


class BreakerGuardedBackend:
    """The cloud backend behind the breaker. The breaker is asked when the stream is first iterated (the
    cloud backend sends nothing before), and told how the call ended when its stream ends."""

    def __init__(self, inner: Backend, breaker: CloudBreaker) -> None:
        self.inner = inner
        self.name = inner.name
        self.breaker = breaker

    def stream(self, messages: Sequence[Mapping[str, str]], *, max_tokens: int, temperature: float,
               stop: Sequence[str] = (), seed: Optional[int] = None) -> "GuardedStream":
        return GuardedStream(self.inner.stream(messages, max_tokens=max_tokens, temperature=temperature,
                                               stop=stop, seed=seed), self.breaker, self.name)


class GuardedStream:
    def __init__(self, inner: BackendStream, breaker: CloudBreaker, model: str) -> None:
        self._inner = inner
        self._breaker = breaker
        self._model = model
        self._admission: Optional[Admission] = None
        self._refused: Optional[NothingSpent] = None
        self._reported = False

    @property
    def completion(self) -> Optional[Completion]:
        return self._refused if self._refused is not None else self._inner.completion

    def __aiter__(self) -> "GuardedStream":
        return self

    async def __anext__(self) -> Delta:
        if self._refused is not None:
            raise StopAsyncIteration
        if self._admission is None:
            try:
                self._admission = self._breaker.admit()
            except CloudBreakerOpenError:
                self._refused = NothingSpent(self._model, "error")
                await self._inner.aclose()  # never iterated: nothing was sent
                raise
        try:
            return await self._inner.__anext__()
        except StopAsyncIteration:
            done = self._inner.completion
            # The cloud backend also ends a stream that another task closed under its read: a cancel.
            cancelled = done is not None and done.finish_reason == "cancelled"
            self._report(CallOutcome.NEUTRAL if cancelled else CallOutcome.SUCCESS)
            raise
        except BaseException as exc:
            self._report(outcome_of(exc), describe_failure(exc))
            raise

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._report(CallOutcome.NEUTRAL)  # closed before its end: a cancel (a no-op once reported)

    def _report(self, outcome: CallOutcome, error: str = "") -> None:
        if self._reported or self._admission is None:
            return
        self._reported = True
        self._breaker.record(self._admission, outcome, error)


class BreakerGate:
    """Keeps cloud-capable requests off the cloud while the breaker is open: the edge answers, marked
    degraded (when_open = "degrade"), or the request fails fast with UNAVAILABLE ("fail")."""

    def __init__(self, breaker: CloudBreaker, when_open: str) -> None:
        self.breaker = breaker
        self.when_open = when_open

    def keep_off_cloud(self, request: GenerateRequest) -> Optional[str]:
        refusal = self.breaker.refusal()
        if refusal is None:
            return None
        why, retry_in = refusal
        if self.when_open == "fail":
            raise CloudBreakerOpenError(f"the cloud circuit breaker is open: {why}", retry_after_s=retry_in)
        return f"cloud circuit breaker open: {why}"
