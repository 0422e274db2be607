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

MODEL_NAME = "fault-injection-fixed-latency"


@dataclass(frozen=True)
class InjectedDelta:
    text: str
    logprob: Optional[float]

    @property
    def token_logprobs(self) -> tuple[float, ...]:
        return () if self.logprob is None else (self.logprob,)


@dataclass(frozen=True)
class InjectedCompletion:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    queue_s: float
    ttft_s: float
    total_s: float
    finish_reason: str
    usage_estimated: bool = False


class FaultInjectionStream:
    def __init__(self, backend: "FixedLatencyFaultInjectionBackend", max_tokens: int, prompt_tokens: int) -> None:
        self._backend = backend
        self._tokens = min(max_tokens, backend.tokens)
        self._prompt_tokens = prompt_tokens
        self._sent = 0
        self._started: Optional[float] = None
        self._first: Optional[float] = None
        self.completion: Optional[InjectedCompletion] = None

    def __aiter__(self) -> "FaultInjectionStream":
        return self

    async def __anext__(self) -> InjectedDelta:
        if self._started is None:
            self._started = time.perf_counter()
            if self._backend.fail:
                raise EdgeGenerationError("injected fault")
            await asyncio.sleep(self._backend.latency_s)
        if self._sent >= self._tokens:
            self._finish("length" if self._tokens < self._backend.tokens else "stop")
            raise StopAsyncIteration
        self._sent += 1
        self._first = self._first or time.perf_counter()
        return InjectedDelta(text=" ok", logprob=-0.1)

    def _finish(self, reason: str) -> None:
        if self.completion is None:
            now = time.perf_counter()
            started = self._started or now
            self.completion = InjectedCompletion(
                text=" ok" * self._sent, model=MODEL_NAME, prompt_tokens=self._prompt_tokens,
                completion_tokens=self._sent, queue_s=0.0, ttft_s=(self._first or now) - started,
                total_s=now - started, finish_reason=reason)

    async def aclose(self) -> None:
        self._finish("cancelled")


class FixedLatencyFaultInjectionBackend:
    """Waits `latency_s`, then streams `tokens` tokens of " ok" at once; `fail=True` raises instead."""

    def __init__(self, *, latency_s: float, tokens: int = 4, fail: bool = False) -> None:
        self.name = MODEL_NAME
        self.latency_s = latency_s
        self.tokens = tokens
        self.fail = fail
        self.n_params = 0

    def stream(self, messages: Sequence[Mapping[str, str]], *, max_tokens: int, temperature: float,
               stop: Sequence[str] = (), seed: Optional[int] = None) -> FaultInjectionStream:
        prompt_tokens = sum(len(m["content"].split()) + 4 for m in messages)
        return FaultInjectionStream(self, max_tokens, prompt_tokens)

    def close(self) -> None:
        pass
