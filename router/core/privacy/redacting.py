"""privacy.cloud_egress = "redact": the cloud backend that sends placeholders and restores the answer.

Every cloud call passes through it (the daemon wraps its cloud backend once, so CLOUD_ONLY, PRE's cloud
pick, POST's escalations, the agent's ask_cloud and the judge all do): the personal data found in each
message, and in the stop strings, is replaced by the call's placeholders (placeholders.py) before the
inner backend sees it, and the answer is restored as it streams and in its completion, so a mode, the
client and the ledger see the values, the cloud only the placeholders. Token counts and prices stay the
cloud's: they are what was sent and paid for.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from router.core.backends import Backend, BackendStream, Completion, CompletionRecord, Delta
from router.core.privacy.placeholders import Placeholders, StreamRestorer


class RedactingCloudBackend:
    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name

    def stream(self, messages: Sequence[Mapping[str, str]], *, max_tokens: int, temperature: float,
               stop: Sequence[str] = (), seed: Optional[int] = None) -> BackendStream:
        placeholders = Placeholders([*(message["content"] for message in messages), *stop])
        sent = [{**message, "content": placeholders.redact(message["content"])} for message in messages]
        sent_stop = [placeholders.redact(text) for text in stop]
        inner = self.inner.stream(sent, max_tokens=max_tokens, temperature=temperature, stop=sent_stop, seed=seed)
        return RestoringStream(inner, placeholders) if placeholders else inner


@dataclass(frozen=True)
class RestoredDelta:
    text: str
    logprob: Optional[float]
    token_logprobs: tuple[float, ...]


class RestoringStream:
    """The inner stream with its answer restored. A delta whose text may end in the start of a placeholder
    keeps that tail for the next one (its text may be empty, its logprobs still pass on); the tail held at
    the stream's end comes as one last delta."""

    def __init__(self, inner: BackendStream, placeholders: Placeholders) -> None:
        self._inner = inner
        self._placeholders = placeholders
        self._restorer = StreamRestorer(placeholders)
        self._ended = False
        self._restored: Optional[tuple[Completion, CompletionRecord]] = None

    @property
    def completion(self) -> Optional[Completion]:
        done = self._inner.completion
        if done is None:
            return None
        if self._restored is None or self._restored[0] is not done:
            self._restored = (done, CompletionRecord.of(done, text=self._placeholders.restore(done.text)))
        return self._restored[1]

    def __aiter__(self) -> "RestoringStream":
        return self

    async def __anext__(self) -> Delta:
        if self._ended:
            raise StopAsyncIteration
        try:
            delta = await self._inner.__anext__()
        except StopAsyncIteration:
            self._ended = True
            held = self._restorer.flush()
            if held:
                return RestoredDelta(held, None, ())
            raise
        return RestoredDelta(self._restorer.feed(delta.text), delta.logprob, tuple(delta.token_logprobs))

    async def aclose(self) -> None:
        self._ended = True
        await self._inner.aclose()
