"""A cloud backend that injects what a test needs at the stream level, never a model: chunk boundaries
anywhere (a placeholder split across two deltas), an error after n chunks, a stream left open.

It keeps the BackendStream contract (router/core/backends.py) as the cloud backend does: nothing happens
before the first iteration; `completion` is set however the stream ends. Each call's messages and stop
strings are kept in `calls`, which is what a real cloud would have received.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from router.core.backends import CompletionRecord

MODEL_NAME = "scripted-cloud-fault-injection"


@dataclass(frozen=True)
class ScriptedDelta:
    text: str
    logprob: Optional[float] = None
    token_logprobs: tuple[float, ...] = ()


@dataclass(frozen=True)
class ReceivedCall:
    messages: tuple[dict[str, str], ...]
    stop: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join([*(message["content"] for message in self.messages), *self.stop])


class ScriptedStream:
    def __init__(self, backend: "ScriptedCloudFaultInjection") -> None:
        self._chunks = backend.chunks
        self._error = backend.error
        self._error_after = backend.error_after
        self._sent = 0
        self.started = False
        self.completion: Optional[CompletionRecord] = None

    def __aiter__(self) -> "ScriptedStream":
        return self

    async def __anext__(self) -> ScriptedDelta:
        if self.completion is not None:
            raise StopAsyncIteration
        self.started = True
        if self._error is not None and self._sent == self._error_after:
            self._finish("error")
            raise self._error
        if self._sent == len(self._chunks):
            self._finish("stop")
            raise StopAsyncIteration
        self._sent += 1
        return ScriptedDelta(self._chunks[self._sent - 1], logprob=-0.5, token_logprobs=(-0.5,))

    async def aclose(self) -> None:
        self._finish("cancelled")

    def _finish(self, reason: str) -> None:
        if self.completion is None:
            self.completion = CompletionRecord(text="".join(self._chunks[:self._sent]), model=MODEL_NAME,
                                                 prompt_tokens=10 if self.started else 0,
                                                 completion_tokens=self._sent, queue_s=0.0, ttft_s=0.0,
                                                 total_s=0.0, finish_reason=reason)


class ScriptedCloudFaultInjection:
    """Streams `chunks`, one delta each; with `error`, raises it once `error_after` chunks were streamed."""

    def __init__(self, chunks: Sequence[str] = ("ok",), *, error: Optional[BaseException] = None,
                 error_after: int = 0) -> None:
        self.name = MODEL_NAME
        self.chunks = tuple(chunks)
        self.error = error
        self.error_after = error_after
        self.calls: list[ReceivedCall] = []
        self.streams: list[ScriptedStream] = []

    def stream(self, messages: Sequence[Mapping[str, str]], *, max_tokens: int, temperature: float,
               stop: Sequence[str] = (), seed: Optional[int] = None) -> ScriptedStream:
        self.calls.append(ReceivedCall(tuple(dict(message) for message in messages), tuple(stop)))
        stream = ScriptedStream(self)
        self.streams.append(stream)
        return stream

    @property
    def started_calls(self) -> int:
        """Calls whose stream was iterated: those a real cloud would have received."""
        return sum(stream.started for stream in self.streams)
