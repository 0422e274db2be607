"""A backend stream that refuses: what a cloud decorator returns for a call it will not make (an open
circuit breaker, personal data that may not leave the device).

It keeps the BackendStream contract (router/core/backends.py): the refusal is raised when the stream is
first iterated, not when it is made, so a caller that iterates inside its `try` (the judge, a mode's
call) handles it like any backend failure; and `completion` is set however the stream ends, spending
nothing, since nothing was sent.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn, Optional

from router.domain.errors import RouterError


@dataclass(frozen=True)
class NothingSpent:
    """The completion of a call that was never sent."""

    model: str
    finish_reason: str
    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    queue_s: float = 0.0
    ttft_s: float = 0.0
    total_s: float = 0.0
    usage_estimated: bool = False


class RefusedStream:
    def __init__(self, model: str, refusal: RouterError) -> None:
        self.completion: Optional[NothingSpent] = None
        self._model = model
        self._refusal = refusal

    def __aiter__(self) -> "RefusedStream":
        return self

    async def __anext__(self) -> NoReturn:
        if self.completion is not None:
            raise StopAsyncIteration
        self.completion = NothingSpent(self._model, "error")
        raise self._refusal

    async def aclose(self) -> None:
        if self.completion is None:
            self.completion = NothingSpent(self._model, "cancelled")
