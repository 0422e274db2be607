"""A core result as OpenAI's chat-completions JSON and SSE chunks, with what served and why.

`model` is the model that answered (the edge's or the cloud's name), not the `hybrid/...` id asked for.
`usage` counts the serving run's tokens (the answer the client holds); every run, drafts and samples
included, is priced in `hybrid.cost_usd` and listed in `hybrid.runs`. The `hybrid` object is in the body
of a unary answer and in the last chunk of a stream (before the usage chunk); unary answers also carry
`x-hybrid-*` headers, which a stream cannot (its headers leave before the decision is made).
"""
from __future__ import annotations

import json
import time
from typing import Any, Mapping, Optional

from router.domain.types import BackendKind, DraftDiscarded, GenerateResult, TextDelta

# Finish reasons OpenAI's clients know; ours ("cancelled", "error") never reach a client that is still there.
_OPENAI_FINISH = frozenset({"stop", "length"})
DONE = "data: [DONE]\n\n"


def completion_id(request_id: str) -> str:
    return f"chatcmpl-{request_id}"


def served_model(result: GenerateResult) -> str:
    return result.cloud_model if result.served_by == BackendKind.CLOUD else result.edge_model


def hybrid_summary(result: GenerateResult) -> dict[str, Any]:
    decision = result.decision
    return {
        "request_id": result.request_id,
        "mode": decision.mode.name,
        "served_by": result.served_by.name.lower(),
        "escalated": decision.escalated,
        "degraded": decision.degraded,
        "cost_usd": {"total": result.cost_usd, "edge": result.edge_cost_usd, "cloud": result.cloud_cost_usd,
                     "info": result.info_cost_usd},
        "latency_s": {"ttft": result.latency.ttft_s, "total": result.latency.total_s, "edge": result.latency.edge_s,
                      "cloud": result.latency.cloud_s, "info": result.latency.info_s},
        "decision": {"arbiter": decision.arbiter, "scorer": decision.scorer, "score": decision.score,
                     "threshold": decision.threshold, "threshold_kind": decision.threshold_kind,
                     "reason": decision.reason},
        "runs": [{"backend": run.backend.name.lower(), "model": run.model, "purpose": str(run.purpose),
                  "prompt_tokens": run.prompt_tokens, "completion_tokens": run.completion_tokens,
                  "cost_usd": run.cost_usd, "finish_reason": run.finish_reason,
                  "usage_estimated": run.usage_estimated} for run in result.runs],
        "citations": list(result.citations),
    }


def hybrid_headers(result: GenerateResult) -> dict[str, str]:
    return {"x-hybrid-request-id": result.request_id, "x-hybrid-served-by": result.served_by.name.lower(),
            "x-hybrid-mode": result.decision.mode.name, "x-hybrid-cost-usd": f"{result.cost_usd:.10f}",
            "x-hybrid-escalated": "true" if result.decision.escalated else "false"}


def usage(result: GenerateResult) -> dict[str, int]:
    run = result.run_for(result.served_by)
    prompt, completion = (run.prompt_tokens, run.completion_tokens) if run is not None else (0, 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def finish_reason(result: GenerateResult) -> str:
    return result.finish_reason if result.finish_reason in _OPENAI_FINISH else "stop"


def completion_body(result: GenerateResult, *, logprobs: Optional[list[dict[str, Any]]] = None) -> dict[str, Any]:
    return {
        "id": completion_id(result.request_id), "object": "chat.completion", "created": int(time.time()),
        "model": served_model(result), "system_fingerprint": None,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text, "refusal": None},
                     "logprobs": None if logprobs is None else {"content": logprobs, "refusal": None},
                     "finish_reason": finish_reason(result)}],
        "usage": usage(result), "hybrid": hybrid_summary(result),
    }


def logprob_entry(delta: TextDelta) -> dict[str, Any]:
    """One streamed piece with its log-probability. A piece may hold more than one token when the edge
    flushed several at once; its logprob is then theirs summed."""
    return {"token": delta.text, "logprob": delta.logprob, "bytes": list(delta.text.encode("utf-8")),
            "top_logprobs": []}


def logprob_entries(pieces: list[TextDelta]) -> Optional[list[dict[str, Any]]]:
    """The answer's pieces with their log-probabilities; None when a piece has none (the cloud's, a draft
    held back and sent whole), since OpenAI's clients expect a number for every entry they are given."""
    if any(piece.logprob is None for piece in pieces if piece.text):
        return None
    return [logprob_entry(piece) for piece in pieces if piece.text]


class ChunkWriter:
    """The SSE events of one streamed completion, in OpenAI's chunk format."""

    def __init__(self, request_id: str, *, models: Mapping[BackendKind, str], include_usage: bool,
                 logprobs: bool) -> None:
        self._id = completion_id(request_id)
        self._created = int(time.time())
        self._models = models
        self._include_usage = include_usage
        self._logprobs = logprobs
        self._model = models.get(BackendKind.EDGE, "")

    def _event(self, choices: list[dict[str, Any]], **extra: Any) -> str:
        chunk = {"id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self._model,
                 "system_fingerprint": None, "choices": choices, **extra}
        if self._include_usage and "usage" not in chunk:
            chunk["usage"] = None
        return f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n"

    def first(self) -> str:
        return self._event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                             "finish_reason": None}])

    def text(self, delta: TextDelta) -> str:
        self._model = self._models.get(delta.backend, self._model)
        logprobs = ({"content": [logprob_entry(delta)], "refusal": None}
                    if self._logprobs and delta.logprob is not None else None)
        return self._event([{"index": 0, "delta": {"content": delta.text}, "logprobs": logprobs,
                             "finish_reason": None}])

    def discard(self, event: DraftDiscarded) -> str:
        """The draft streamed so far is not the answer: a client that honours `hybrid.discard_draft` drops
        it; a plain OpenAI client sees an empty delta and keeps it."""
        return self._event([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": None}],
                           hybrid={"discard_draft": True, "discarded": event.discarded.name.lower(),
                                   "next": event.next.name.lower(), "reason": event.reason})

    def last(self, result: GenerateResult) -> list[str]:
        self._model = served_model(result)
        events = [self._event([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish_reason(result)}],
                              hybrid=hybrid_summary(result))]
        if self._include_usage:
            events.append(self._event([], usage=usage(result)))
        events.append(DONE)
        return events


def error_event(body: dict[str, Any]) -> str:
    """An error after the stream began: OpenAI's clients raise it from the stream."""
    return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"
