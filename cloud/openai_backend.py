"""Streaming chat completions from any OpenAI-compatible server, under the backend contract.

`OpenAIBackend.stream(...)` returns a `CloudStream`: an async iterator of `CloudDelta`s whose
`completion` is filled in when the stream ends, however it ends: normally; by `aclose()` or a
cancelled task (finish_reason "cancelled"; `aclose()` closes the HTTP stream so the provider stops
generating and no further tokens are paid for); or by an error ("error"). A stream cut short still
says what it cost: the tokens streamed so far, and the prompt (see `CloudStream._prompt_tokens_spent`).

Errors: every openai/httpx/decoding failure crosses into `cloud.errors` at one boundary,
`_openai_error_boundary` (built on `translate_openai_error`), by exception type and HTTP status,
never by matching message text. That includes the transport's own errors raised while a stream is
read (a stall past the read timeout, a connection cut mid-body): openai wraps those in its own
types only from 3.14 on (2.x and 3.0-3.13 let httpx's escape), so the boundary takes both.

Retries are openai's own (`max_retries`: capped exponential backoff that honours Retry-After) and
cover only the opening request. A stream that breaks after it started is not retried, because its
tokens were already delivered (and paid for): it raises CloudUnavailableError.

Timings, all measured from the moment iteration starts (the first `__anext__`):
`queue_s` is the wait for a `max_concurrency` permit; `ttft_s` and `total_s` include that wait,
because it is part of what the caller experiences.
"""
from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import math
import string
import sys
import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Iterator, Mapping, Optional, Sequence

import openai
from openai.types.chat import ChatCompletionChunk

from cloud.errors import (
    CloudBadResponseError,
    CloudError,
    CloudRateLimitError,
    CloudRejectedError,
    CloudTimeoutError,
    CloudUnavailableError,
)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# Servers without auth (the local stand-in) still get a bearer header; a fixed placeholder keeps the
# openai client from falling back to the OPENAI_API_KEY environment variable on its own.
NO_KEY_PLACEHOLDER = "no-key"
FINISH_CANCELLED = "cancelled"
FINISH_ERROR = "error"

# Prompt-token estimate used when a server streams no usage (llama-cpp-python's server never does):
# about 4 characters per token for English text, plus the ChatML-style framing each message gets
# (<|im_start|>role\n ... <|im_end|>\n, about 4 tokens) and the assistant turn's opening (3 tokens).
# It is the rule of thumb OpenAI documents for its own tokenizers; it is an estimate, and
# `usage_estimated` says so.
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
TOKENS_REPLY_PRIMING = 3

_PROVIDER_MESSAGE_MAX_CHARS = 500
_REDACTED = "[redacted]"
_SSE_CONTENT_TYPE = "text/event-stream"
# The HTTP libraries openai reads streams with: httpx2 from openai 3.0, httpx before.
_HTTP_TRANSPORT_MODULES = ("httpx2", "httpx")


def _transport_error_types() -> tuple[tuple[type[Exception], ...], tuple[type[Exception], ...]]:
    """(time-outs, all transport errors) of the HTTP libraries openai has loaded. `import openai`
    above loads the one it reads streams with, so looking in sys.modules finds it without importing
    a library nobody uses."""
    timeouts: list[type[Exception]] = []
    transport: list[type[Exception]] = []
    for name in _HTTP_TRANSPORT_MODULES:
        module = sys.modules.get(name)
        if module is not None:
            timeouts.append(module.TimeoutException)
            transport.append(module.TransportError)
    return tuple(timeouts), tuple(transport)


_TRANSPORT_TIMEOUTS, _TRANSPORT_ERRORS = _transport_error_types()
# Exceptions the boundary translates. StopAsyncIteration and CancelledError must pass through.
_TRANSLATABLE = (openai.OpenAIError, json.JSONDecodeError, UnicodeDecodeError, *_TRANSPORT_ERRORS)
_STATUS_NAMES = MappingProxyType({400: "bad request", 401: "authentication failed",
                                  403: "permission denied", 404: "not found",
                                  413: "request too large", 422: "unprocessable request"})


@dataclass(frozen=True)
class CloudDelta:
    text: str
    logprob: Optional[float] = None
    token_logprobs: tuple[float, ...] = ()  # providers stream no per-token logprobs here


@dataclass(frozen=True)
class CloudCompletion:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    queue_s: float
    ttft_s: float
    total_s: float
    finish_reason: str  # "stop" | "length" | "cancelled" | "error" (or the provider's own, passed through)
    usage_estimated: bool  # True when the server sent no usage and the counts are ours


def estimate_prompt_tokens(messages: Sequence[Mapping[str, str]]) -> int:
    """Rough prompt size in tokens; see CHARS_PER_TOKEN for the rule."""
    content_tokens = sum(math.ceil(len(message["content"]) / CHARS_PER_TOKEN) for message in messages)
    return content_tokens + TOKENS_PER_MESSAGE * len(messages) + TOKENS_REPLY_PRIMING


def parse_retry_after(headers: Mapping[str, str]) -> Optional[float]:
    """Seconds to wait from `retry-after-ms`, or `retry-after` (seconds or an HTTP date)."""
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    date_value = headers.get("retry-after")
    if date_value is None:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(date_value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, parsed.timestamp() - time.time())


def redact_secret(text: str, secret: Optional[str]) -> str:
    """Removes the key, and any word that starts like it (providers echo keys half-masked,
    e.g. 'sk-abc1***********wxyz')."""
    if not secret or secret == NO_KEY_PLACEHOLDER:
        return text
    text = text.replace(secret, _REDACTED)
    prefix = secret[:6]
    if len(secret) < 8:
        return text
    words = text.split(" ")
    return " ".join(_REDACTED if word.strip(string.punctuation).startswith(prefix) else word
                    for word in words)


def _provider_message(body: object) -> str:
    """The human-readable part of an error body: OpenAI's `message`, FastAPI's `detail`, or text."""
    if isinstance(body, Mapping):
        for field in ("message", "detail", "error"):
            value = body.get(field)
            if isinstance(value, str) and value:
                return value
            if value is not None and field == "detail":
                return json.dumps(value)[:_PROVIDER_MESSAGE_MAX_CHARS]
        return json.dumps(body, default=str)[:_PROVIDER_MESSAGE_MAX_CHARS]
    if isinstance(body, str):
        return body[:_PROVIDER_MESSAGE_MAX_CHARS]
    return ""


def translate_openai_error(exc: BaseException, *, api_key: Optional[str] = None) -> CloudError:
    """The one mapping from openai/httpx/decoding failures to cloud.errors, by type and status."""
    if isinstance(exc, CloudError):
        return exc
    # A transport error openai did not wrap (see the module docstring); time-outs subclass
    # TransportError: test them first.
    if isinstance(exc, _TRANSPORT_TIMEOUTS):
        return CloudTimeoutError(f"cloud request timed out ({type(exc).__name__})")
    if isinstance(exc, _TRANSPORT_ERRORS):
        return CloudUnavailableError(f"cloud connection failed ({type(exc).__name__}: "
                                     f"{redact_secret(str(exc), api_key)})")
    # APITimeoutError subclasses APIConnectionError: test it first.
    if isinstance(exc, openai.APITimeoutError):
        return CloudTimeoutError("cloud request timed out")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        detail = f" ({type(cause).__name__}: {redact_secret(str(cause), api_key)})" if cause else ""
        return CloudUnavailableError(f"cloud connection failed{detail}")
    if isinstance(exc, openai.APIResponseValidationError):
        return CloudBadResponseError(f"cloud response did not match the API schema "
                                     f"(HTTP {exc.status_code})")
    if isinstance(exc, openai.APIStatusError):
        return _translate_status_error(exc, api_key)
    if isinstance(exc, openai.APIError):
        # An `{"error": ...}` event inside a stream that had already started.
        message = redact_secret(_provider_message(exc.body) or exc.message, api_key)
        return CloudUnavailableError(f"cloud stream reported an error: {message}")
    if isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError)):
        return CloudBadResponseError(f"cloud stream is not valid JSON/UTF-8 SSE: {type(exc).__name__}")
    return CloudError(f"cloud client error: {type(exc).__name__}: {redact_secret(str(exc), api_key)}")


def _translate_status_error(exc: openai.APIStatusError, api_key: Optional[str]) -> CloudError:
    status = exc.status_code
    message = redact_secret(_provider_message(exc.body), api_key)
    suffix = f": {message}" if message else ""
    if status == 429:
        return CloudRateLimitError(f"cloud rate limit (HTTP 429){suffix}",
                                   retry_after_s=parse_retry_after(exc.response.headers))
    if status == 408:
        return CloudTimeoutError(f"cloud request timed out (HTTP 408){suffix}")
    if status >= 500:
        return CloudUnavailableError(f"cloud server error (HTTP {status}){suffix}", status=status)
    name = _STATUS_NAMES.get(status, "rejected")
    return CloudRejectedError(f"cloud request {name} (HTTP {status}){suffix}", status=status,
                              code=exc.code)


@contextlib.contextmanager
def _openai_error_boundary(api_key: Optional[str]) -> Iterator[None]:
    try:
        yield
    except _TRANSLATABLE as exc:
        translated = translate_openai_error(exc, api_key=api_key)
        if isinstance(exc, openai.APIError) and not isinstance(exc, openai.APIConnectionError):
            # Provider-written text (possibly echoing credentials) stays out of the chain.
            raise translated from None
        raise translated from exc


# How far below the known context window an estimated prompt may fall and still explain an empty stream.
_CONTEXT_ESTIMATE_SLACK = 0.5


class CloudStream:
    """One streamed chat completion. Iterate it; `aclose()` (or `async with`) cancels it."""

    def __init__(self, *, client: openai.AsyncOpenAI, permits: asyncio.Semaphore, model: str,
                 api_key: Optional[str], request: Mapping[str, Any], prompt_estimate: int,
                 context_tokens: Optional[int] = None) -> None:
        self.completion: Optional[CloudCompletion] = None
        self._context_tokens = context_tokens
        self._client = client
        self._permits = permits
        self._model = model
        self._api_key = api_key
        self._request = request
        self._prompt_estimate = prompt_estimate
        self._chunks: Optional[openai.AsyncStream[ChatCompletionChunk]] = None
        self._permit_held = False
        self._request_sent = False
        self._done = False
        self._started_at: Optional[float] = None
        self._queue_s = 0.0
        self._first_text_at: Optional[float] = None
        self._text_parts: list[str] = []
        self._text_chunks = 0
        self._chunks_seen = 0
        self._finish_reason: Optional[str] = None
        self._usage: Optional[tuple[int, int]] = None
        self._served_model: Optional[str] = None

    def __repr__(self) -> str:
        return f"CloudStream(model={self._model!r}, done={self._done})"

    def __aiter__(self) -> "CloudStream":
        return self

    async def __aenter__(self) -> "CloudStream":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def __anext__(self) -> CloudDelta:
        if self._done:
            raise StopAsyncIteration
        try:
            if self._chunks is None:
                await self._open()
            while True:
                chunk = await self._next_chunk()
                if chunk is None:
                    self._check_ended_well()
                    await self._finish(self._finish_reason)
                    raise StopAsyncIteration
                delta = self._absorb(chunk)
                if delta is not None:
                    return delta
        except StopAsyncIteration:
            raise
        except asyncio.CancelledError:
            await self._finish(FINISH_CANCELLED)
            raise
        except BaseException:
            if self._done:
                # aclose() from another task closed the response under our read: that is a cancel.
                raise StopAsyncIteration from None
            await self._finish(FINISH_ERROR)
            raise

    async def aclose(self) -> None:
        """Stops the stream: closes the HTTP response so the provider stops generating."""
        if not self._done:
            await self._finish(FINISH_CANCELLED)

    async def _open(self) -> None:
        self._started_at = time.perf_counter()
        await self._permits.acquire()
        self._permit_held = True
        self._queue_s = time.perf_counter() - self._started_at
        with _openai_error_boundary(self._api_key):
            self._request_sent = True
            self._chunks = await self._client.chat.completions.create(**self._request)
        content_type = self._chunks.response.headers.get("content-type", _SSE_CONTENT_TYPE)
        if content_type.split(";")[0].strip().lower() != _SSE_CONTENT_TYPE:
            raise CloudBadResponseError(
                f"cloud answered a streaming request with content type {content_type!r}")

    async def _next_chunk(self) -> Optional[ChatCompletionChunk]:
        assert self._chunks is not None
        with _openai_error_boundary(self._api_key):
            try:
                return await self._chunks.__anext__()
            except StopAsyncIteration:
                return None

    def _check_ended_well(self) -> None:
        if self._chunks_seen == 0:
            # llama-cpp-python's server answers 200 and then sends nothing at all when the prompt
            # exceeds n_ctx (the error happens after the headers went out): not a completion.
            if self._may_overflow_context():
                raise CloudRejectedError(
                    f"the prompt (about {self._prompt_estimate} tokens) does not fit the cloud model's context "
                    f"of {self._context_tokens} tokens (the server sent an empty stream); shorten the conversation",
                    status=400, code="context_length_exceeded")
            raise CloudBadResponseError("cloud stream ended without a single chunk")
        if self._finish_reason is None:
            raise CloudUnavailableError("cloud stream ended before the model finished (no finish_reason)")

    def _may_overflow_context(self) -> bool:
        # llama-cpp-python's server fails only when the prompt alone fills the window (it trims max_tokens
        # to fit otherwise). The prompt size is an estimate (characters / 4): an overflow is assumed from half.
        return (self._context_tokens is not None and
                self._prompt_estimate > self._context_tokens * _CONTEXT_ESTIMATE_SLACK)

    def _absorb(self, chunk: object) -> Optional[CloudDelta]:
        """Takes what a chunk carries (text, finish reason, usage, model); the text, if any."""
        if not isinstance(chunk, ChatCompletionChunk):
            raise CloudBadResponseError(f"cloud stream chunk is a {type(chunk).__name__}, not an object")
        self._chunks_seen += 1
        # openai builds chunks without validation: absent fields are absent attributes.
        self._take_usage(getattr(chunk, "usage", None))
        served_model = getattr(chunk, "model", None)
        if isinstance(served_model, str) and served_model:
            self._served_model = served_model
        choices = getattr(chunk, "choices", None)
        if not isinstance(choices, list):
            raise CloudBadResponseError("cloud stream chunk has no choices list")
        if not choices:
            return None  # the usage-only chunk that include_usage adds at the end
        choice = choices[0]
        delta = getattr(choice, "delta", None)
        finish_reason = getattr(choice, "finish_reason", None)
        if delta is None and finish_reason is None:
            raise CloudBadResponseError("cloud stream choice has neither delta nor finish_reason")
        if finish_reason is not None:
            self._finish_reason = str(finish_reason)
        text = getattr(delta, "content", None) if delta is not None else None
        if text is None or text == "":
            return None
        if not isinstance(text, str):
            raise CloudBadResponseError("cloud stream delta content is not a string")
        if self._first_text_at is None:
            self._first_text_at = time.perf_counter()
        self._text_parts.append(text)
        self._text_chunks += 1
        return CloudDelta(text=text)

    def _take_usage(self, usage: object) -> None:
        if usage is None:
            return
        prompt_tokens = getattr(usage, "prompt_tokens", None)
        completion_tokens = getattr(usage, "completion_tokens", None)
        if not isinstance(prompt_tokens, int) or not isinstance(completion_tokens, int):
            raise CloudBadResponseError("cloud stream usage lacks integer token counts")
        self._usage = (prompt_tokens, completion_tokens)

    async def _finish(self, finish_reason: str) -> None:
        """Ends the stream and sets `completion`, once: the first way the stream ended is the one it keeps."""
        ended_at = time.perf_counter()
        started_at = self._started_at if self._started_at is not None else ended_at
        await self._release()
        if self.completion is not None:
            return
        if self._usage is not None:  # the provider's own count: it comes last, so the answer was whole
            prompt_tokens, completion_tokens = self._usage
            estimated = False
        else:
            # Each content chunk carries about one token (llama.cpp sends one per token, merging a
            # few only around stop-sequence and multi-byte boundaries).
            prompt_tokens, completion_tokens = self._prompt_tokens_spent(finish_reason), self._text_chunks
            estimated = True
        total_s = ended_at - started_at
        first_text_at = self._first_text_at if self._first_text_at is not None else ended_at
        self.completion = CloudCompletion(
            text="".join(self._text_parts), model=self._served_model or self._model,
            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
            queue_s=self._queue_s, ttft_s=first_text_at - started_at, total_s=total_s,
            finish_reason=finish_reason, usage_estimated=estimated)

    def _prompt_tokens_spent(self, finish_reason: str) -> int:
        """The estimated prompt, where it was (or may have been) paid for. A provider bills the prompt once
        it starts answering (a chunk arrived); a request we cancel after sending it may already be under
        way, and we cannot know, so it is counted too (an overstatement, never a missed spend). A request
        refused or broken before any chunk (a 429, a 5xx, a connection error) was not answered: 0."""
        if self._chunks_seen > 0 or (finish_reason == FINISH_CANCELLED and self._request_sent):
            return self._prompt_estimate
        return 0

    async def _release(self) -> None:
        """Closes the HTTP response and gives the concurrency permit back; safe to call twice."""
        self._done = True
        chunks, self._chunks = self._chunks, None
        try:
            if chunks is not None:
                with contextlib.suppress(*_TRANSLATABLE, OSError):
                    await chunks.close()
        finally:
            if self._permit_held:
                self._permit_held = False
                self._permits.release()

    def __del__(self) -> None:
        # A stream dropped without aclose() must not keep its permit forever.
        if self._permit_held:
            self._permit_held = False
            with contextlib.suppress(Exception):
                self._permits.release()


class OpenAIBackend:
    """An OpenAI-compatible chat model as a streaming backend."""

    def __init__(self, *, base_url: Optional[str], api_key: Optional[str], model: str,
                 timeout_s: float = 60.0, max_retries: int = 2, max_concurrency: int = 8,
                 context_tokens: Optional[int] = None) -> None:
        """`context_tokens`: the server's context window, where it is known (the local stand-in). A server
        that answers an over-long prompt with an empty stream then gets a rejected request, not an outage."""
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.name = model
        self.base_url = base_url or DEFAULT_BASE_URL
        self._api_key = api_key
        self._permits = asyncio.Semaphore(max_concurrency)
        self._context_tokens = context_tokens
        # timeout_s bounds each phase (connect, each read, each write), so a stream stalls for at
        # most timeout_s between chunks; a long answer may take longer in total.
        self._client = openai.AsyncOpenAI(api_key=api_key or NO_KEY_PLACEHOLDER, base_url=self.base_url,
                                          timeout=timeout_s, max_retries=max_retries)

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.name!r}, base_url={self.base_url!r})"

    def stream(self, messages: Sequence[Mapping[str, str]], *, max_tokens: int, temperature: float,
               stop: Sequence[str] = (), seed: Optional[int] = None) -> CloudStream:
        """A stream that sends its request when first iterated."""
        wire_messages = [_wire_message(message) for message in messages]
        if not wire_messages:
            raise ValueError("messages must not be empty")
        request: dict[str, Any] = {
            "model": self.name, "messages": wire_messages, "max_tokens": max_tokens,
            "temperature": temperature, "stream": True,
            "stream_options": {"include_usage": True},
        }
        if stop:
            request["stop"] = list(stop)
        if seed is not None:
            request["seed"] = seed
        return CloudStream(client=self._client, permits=self._permits, model=self.name,
                           api_key=self._api_key, request=MappingProxyType(request),
                           prompt_estimate=estimate_prompt_tokens(wire_messages),
                           context_tokens=self._context_tokens)

    async def close(self) -> None:
        await self._client.close()


def _wire_message(message: Mapping[str, str]) -> dict[str, str]:
    role, content = message.get("role"), message.get("content")
    if not isinstance(role, str) or not isinstance(content, str):
        raise ValueError("each message needs a string 'role' and 'content'")
    return {"role": role, "content": content}
