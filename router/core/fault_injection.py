"""A fault-injection backend: fixed latency, canned tokens, optional failures. Never a model.

It exists to take model time out of a measurement (the ledger and overhead benches) and to inject
backend faults in reliability tests; `edge.kind = "fault-injection"` selects it, and its model name
says what it is so that no result can be mistaken for a real answer.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from edge.errors import EdgeGenerationError
from router.core.backends import CompletionRecord

MODEL_NAME = "fault-injection-fixed-latency"


@dataclass(frozen=True)
class InjectedDelta:
    text: str
    logprob: Optional[float]

    @property
    def token_logprobs(self) -> tuple[float, ...]:
        return () if self.logprob is None else (self.logprob,)


class FaultInjectionStream:
    def __init__(self, backend: "FixedLatencyFaultInjectionBackend", max_tokens: int, prompt_tokens: int) -> None:
        self._backend = backend
        self._tokens = min(max_tokens, backend.tokens)
        self._prompt_tokens = prompt_tokens
        self._sent = 0
        self._started: Optional[float] = None
        self._first: Optional[float] = None
        self.completion: Optional[CompletionRecord] = None

    def __aiter__(self) -> "FaultInjectionStream":
        return self

    async def __anext__(self) -> InjectedDelta:
        if self.completion is not None:
            raise StopAsyncIteration
        if self._started is None:
            self._started = time.perf_counter()
            if self._backend.fail_after_tokens != 0:
                await asyncio.sleep(self._backend.latency_s)
        if self._sent == self._backend.fail_after_tokens:
            # Like a real backend, what was streamed so far is accounted for; a failure before the
            # first token is a refusal, which evaluated (and spent) nothing.
            self._finish("error", prompt_evaluated=self._sent > 0)
            raise EdgeGenerationError("injected fault")
        if self._sent >= self._tokens:
            self._finish("length" if self._tokens < self._backend.tokens else "stop")
            raise StopAsyncIteration
        self._sent += 1
        self._first = self._first or time.perf_counter()
        return InjectedDelta(text=" ok", logprob=-0.1)

    def _finish(self, reason: str, *, prompt_evaluated: bool = True) -> None:
        if self.completion is None:
            now = time.perf_counter()
            started = self._started or now
            evaluated = prompt_evaluated and self._started is not None  # closed before it began: nothing ran
            self.completion = CompletionRecord(
                text=" ok" * self._sent, model=MODEL_NAME, prompt_tokens=self._prompt_tokens if evaluated else 0,
                completion_tokens=self._sent, queue_s=0.0, ttft_s=(self._first or now) - started,
                total_s=now - started, finish_reason=reason)

    async def aclose(self) -> None:
        self._finish("cancelled")


class FixedLatencyFaultInjectionBackend:
    """Waits `latency_s`, then streams `tokens` tokens of " ok" at once. `fail=True` raises instead;
    `fail_after_tokens=n` raises after streaming n tokens (a backend that breaks mid-answer)."""

    def __init__(self, *, latency_s: float, tokens: int = 4, fail: bool = False,
                 fail_after_tokens: Optional[int] = None) -> None:
        self.name = MODEL_NAME
        self.latency_s = latency_s
        self.tokens = tokens
        self.fail_after_tokens = 0 if fail else fail_after_tokens
        self.n_params = 0

    def stream(self, messages: Sequence[Mapping[str, str]], *, max_tokens: int, temperature: float,
               stop: Sequence[str] = (), seed: Optional[int] = None) -> FaultInjectionStream:
        prompt_tokens = sum(len(m["content"].split()) + 4 for m in messages)
        return FaultInjectionStream(self, max_tokens, prompt_tokens)

    def close(self) -> None:
        pass


class SinkFaultInjectionError(RuntimeError):
    """Raised by FaultInjectionSink: a result sink with a bug."""


class FaultInjectionSink:
    """A result sink that raises on every record(): the router must serve on regardless."""

    def record(self, request: object, result: object) -> None:
        raise SinkFaultInjectionError("injected sink fault")
