"""What a mode is: given a validated request and the backends, stream text and end with an outcome."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Optional, Protocol, Sequence, Union

from router.backends import Backend, BackendStream
from router.pricing import CostModel
from router.types import (BackendKind, BackendRun, ChatMessage, Decision, GenerateRequest,
                          GenerationParams, Mode, TextDelta)


@dataclass(frozen=True)
class ModeOutcome:
    """A mode's answer: which text, from where, after which backend runs, and why."""

    text: str
    served_by: BackendKind
    runs: tuple[BackendRun, ...]
    decision: Decision
    finish_reason: str


ModeEvent = Union[TextDelta, ModeOutcome]


@dataclass
class ModeContext:
    request: GenerateRequest
    mode: Mode
    params: GenerationParams
    backends: dict[BackendKind, Backend]
    costs: CostModel
    backend_seconds: dict[BackendKind, float] = field(default_factory=dict)

    @property
    def messages(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.content} for m in self.request.messages]

    def backend(self, kind: BackendKind) -> Backend:
        return self.backends[kind]


class ModeHandler(Protocol):
    mode: Mode

    def run(self, ctx: ModeContext) -> AsyncIterator[ModeEvent]: ...


class BackendCall:
    """One streamed call to a backend: yields TextDeltas, then holds the finished BackendRun.

    Closing it early (the consumer stops iterating, or the task is cancelled) cancels the
    backend stream, so the edge stops generating and the cloud stops billing.
    """

    def __init__(self, ctx: ModeContext, kind: BackendKind,
                 messages: Optional[Sequence[ChatMessage]] = None) -> None:
        self._ctx = ctx
        self.kind = kind
        self._messages = ([{"role": m.role, "content": m.content} for m in messages]
                          if messages is not None else ctx.messages)
        self.run: Optional[BackendRun] = None
        self.token_logprobs: list[float] = []

    async def deltas(self) -> AsyncIterator[TextDelta]:
        backend = self._ctx.backend(self.kind)
        params = self._ctx.params
        started = time.perf_counter()
        stream: BackendStream = backend.stream(self._messages, max_tokens=params.max_tokens,
                                               temperature=params.temperature, stop=params.stop,
                                               seed=params.seed)
        pending_logprob: Optional[float] = None
        try:
            async for delta in stream:
                self.token_logprobs.extend(delta.token_logprobs)
                if delta.logprob is not None:
                    pending_logprob = (pending_logprob or 0.0) + delta.logprob
                if delta.text:
                    yield TextDelta(delta.text, self.kind, pending_logprob)
                    pending_logprob = None
        finally:
            await stream.aclose()
            elapsed = time.perf_counter() - started
            self._ctx.backend_seconds[self.kind] = self._ctx.backend_seconds.get(self.kind, 0.0) + elapsed
        self.run = self._to_run(stream)

    def _to_run(self, stream: BackendStream) -> BackendRun:
        done = stream.completion
        if done is None:
            raise RuntimeError(f"{self.kind.name.lower()} backend ended its stream without a completion")
        costs = self._ctx.costs
        if self.kind == BackendKind.EDGE:
            cost = costs.edge_cost(done.prompt_tokens, done.completion_tokens)
        else:
            cost = costs.cloud_cost(done.prompt_tokens, done.completion_tokens)
        mean_logprob = (sum(self.token_logprobs) / len(self.token_logprobs)
                        if self.token_logprobs else None)
        return BackendRun(backend=self.kind, model=done.model, text=done.text,
                          prompt_tokens=done.prompt_tokens, completion_tokens=done.completion_tokens,
                          queue_s=done.queue_s, ttft_s=done.ttft_s, total_s=done.total_s,
                          cost_usd=cost, finish_reason=done.finish_reason, mean_logprob=mean_logprob,
                          usage_estimated=done.usage_estimated)
