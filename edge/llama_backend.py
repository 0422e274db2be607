"""The edge backend: a local GGUF model run by llama.cpp (llama-cpp-python 0.3.36).

One model instance serves one request at a time: llama.cpp's context is not re-entrant, so
requests queue on an asyncio.Lock (the wait is reported as `queue_s`) and run on a single worker
thread. The worker hands tokens to the event loop through edge/_handoff.py (one wake-up per
flush interval, not per token); a cancel flag is checked after every token, so closing a stream
stops generation within a token.

The prompt is tokenised so that only the chat template's markers become control tokens and every
message's content is plain text (edge/_prompt_tokens.py): `<|im_end|>` typed by a user or written in a
retrieved passage stays text and cannot end a turn.

Logprobs come from the logits row llama.cpp already computed to sample each token
(`llama_get_logits_ith(ctx, -1)`), so they cost one log-softmax per token and never need
`logits_all=True`, which makes prompt processing about 3.3x slower.
"""
from __future__ import annotations

import asyncio
import ctypes
import logging
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Union

import llama_cpp
import numpy as np
from llama_cpp import llama_chat_format

from edge._decode import StopStringFilter, Utf8StreamDecoder, token_logprob
from edge._handoff import TokenHandoff
from edge._hidden_states import (HiddenStates, extend_with_state, prefill_with_state, read_last_state,
                                 set_embeddings)
from edge._prompt_tokens import PromptTokenizer
from edge.errors import AdapterLoadError, EdgeError, EdgeGenerationError, PromptTooLongError
from edge.ggml_runtime import CpuBackend, ensure_cpu_backend
from edge.lora_adapter import AdapterInfo, LoadedAdapter, clear_adapters, file_sha256

logger = logging.getLogger(__name__)

# "cancelled": closed before its end; "error": failed after it started. Either way the completion holds
# what was generated so far, so the caller can price it.
FinishReason = Literal["stop", "length", "cancelled", "error"]

# llama.cpp's defaults; the router exposes temperature only.
_TOP_K = 40
_TOP_P = 0.95
_MIN_P = 0.05
_PIECE_BUFFER_BYTES = 64


@dataclass(frozen=True)
class TokenDelta:
    """The tokens generated since the previous delta: one, or several that were ready together
    (see edge/_handoff.py). `text` is "" while it may still be part of a stop string or of a
    multi-byte character; that text arrives with a later token."""

    text: str
    token_ids: tuple[int, ...]
    token_logprobs: tuple[float, ...]

    @property
    def logprob(self) -> float:
        """The delta's log probability: the sum over its tokens."""
        return math.fsum(self.token_logprobs)

    @staticmethod
    def merge(tokens: Sequence[tuple[str, float, int]]) -> TokenDelta:
        return TokenDelta(text="".join(t[0] for t in tokens), token_ids=tuple(t[2] for t in tokens),
                          token_logprobs=tuple(t[1] for t in tokens))


@dataclass(frozen=True)
class EdgeCompletion:
    """What a stream produced, however it ended: finished, cancelled, or failed (the tokens so far).

    Times are seconds from the first `__anext__`: `queue_s` waiting for the model, `ttft_s` to
    the first generated token (queue included), `total_s` to the end. `completion_tokens` counts
    every sampled token, the end-of-generation token included, so it equals the number of
    TokenDeltas the worker produced and `len(token_logprobs)`.
    """

    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    queue_s: float
    ttft_s: float
    total_s: float
    finish_reason: FinishReason
    token_logprobs: tuple[float, ...]
    usage_estimated: bool = False  # llama.cpp counts its own tokens: never an estimate
    states: HiddenStates | None = field(default=None, compare=False)  # asked for with capture_states


@dataclass(frozen=True)
class PromptState:
    """A prompt evaluated without generating: the final layer's state at its last token. The context
    keeps the prompt, so a stream of the same messages that comes next starts sampling at once."""

    state: np.ndarray = field(repr=False, compare=False)
    prompt_tokens: int
    reused_prompt_tokens: int  # already in the context from an earlier request: not evaluated again
    queue_s: float
    total_s: float
    model: str = ""            # the served model, its adapter included (LlamaBackend.served_model)
    adapter_sha256: str = ""   # the LoRA adapter the state was read with; "" for none


@dataclass(frozen=True)
class EdgeMetrics:
    requests: int = 0
    cancelled: int = 0
    tokens_generated: int = 0
    last_completion_tokens: int = 0


@dataclass
class _MetricsCounter:
    """Mutated on the event loop only; `EdgeMetrics` is the snapshot callers see."""

    requests: int = 0
    cancelled: int = 0
    tokens_generated: int = 0
    last_completion_tokens: int = 0

    def record(self, completion: EdgeCompletion) -> None:
        self.requests += 1
        self.tokens_generated += completion.completion_tokens
        self.last_completion_tokens = completion.completion_tokens
        if completion.finish_reason == "cancelled":
            self.cancelled += 1

    def snapshot(self) -> EdgeMetrics:
        return EdgeMetrics(
            self.requests, self.cancelled, self.tokens_generated, self.last_completion_tokens
        )


@dataclass(frozen=True)
class _Prompt:
    tokens: tuple[int, ...]
    stops: tuple[str, ...]


@dataclass(frozen=True)
class _Request:
    messages: tuple[dict[str, str], ...]
    max_tokens: int
    temperature: float
    stop: tuple[str, ...]
    seed: int | None
    grammar: str | None = None  # GBNF the output must follow (llama.cpp grammar sampling)
    capture_states: bool = False  # read the final layer's state at the prompt's end and the draft's


@dataclass
class _WorkerResult:
    finish_reason: FinishReason = "length"
    text_parts: list[str] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    first_token_at: float | None = None
    prompt_state: np.ndarray | None = None
    draft_state: np.ndarray | None = None


@dataclass(frozen=True)
class _Finished:
    """Queue sentinel: the request is over; `error` is set when it failed."""

    completion: EdgeCompletion | None
    error: BaseException | None = None


_Token = tuple[str, float, int]  # text, logprob, token id: what the worker hands over per token
_QueueItem = Union[_Token, _Finished]


class LlamaBackend:
    """A loaded GGUF model. Construction loads the model and blocks: run it in a thread."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        model_name: str | None = None,
        n_ctx: int = 4096,
        n_threads: int = 2,
        n_batch: int = 512,
        chat_template: str | None = None,
        stream_flush_interval_s: float = 0.0,
    ) -> None:
        """`stream_flush_interval_s`: after the first token, hand tokens to the event loop at most this
        often; tokens in between travel together as one delta (edge/_handoff.py). 0: every token."""
        if stream_flush_interval_s < 0:
            raise ValueError(f"stream_flush_interval_s must be >= 0, got {stream_flush_interval_s}")
        path = Path(model_path)
        self.stream_flush_interval_s = stream_flush_interval_s
        self.name = model_name or path.stem
        self.n_ctx = n_ctx
        self.model_path = path
        self._closed = False
        self._adapter: LoadedAdapter | None = None
        self._model_sha256: str | None = None  # hashed when an adapter is first checked against it
        self.cpu: CpuBackend = ensure_cpu_backend()  # a dispatch build picks its CPU code here
        try:
            self._llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                # Prompt evaluation too: llama-cpp-python's default for it is every core, which on a machine
                # shared with other work (the stand-in, a second model) makes threads wait on each other.
                n_threads=n_threads,
                n_threads_batch=n_threads,
                n_batch=n_batch,
                logits_all=False,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise EdgeGenerationError(f"llama.cpp could not load {path}: {exc}") from exc
        self._vocab = self._llm._model.vocab
        self.n_params: int = self._llm._model.n_params()  # for the router's energy-cost estimate
        self._n_vocab = self._llm.n_vocab()
        self.n_embd: int = self._llm.n_embd()  # the length of a hidden state
        self._prompt_tokenizer = PromptTokenizer(self._vocab, self._make_formatter(chat_template), self.name)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"edge-{self.name}")
        self._counter = _MetricsCounter()
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._active_cancel: threading.Event | None = None

    # -- public ---------------------------------------------------------------------------------

    @property
    def metrics(self) -> EdgeMetrics:
        return self._counter.snapshot()

    @property
    def served_model(self) -> str:
        """What completions name as their model: the model's name, and its adapter's when one is in use
        ("qwen2.5-coder-0.5b+lora:v0003"), so every run records what really generated it."""
        adapter = self.adapter
        return f"{self.name}+lora:{adapter.name}" if adapter is not None else self.name

    @property
    def adapter(self) -> AdapterInfo | None:
        """The LoRA adapter every generation from now on runs with; None: the base model alone."""
        return self._adapter.info if self._adapter is not None else None

    async def use_adapter(self, path: str | Path | None, *, name: str | None = None,
                          scale: float = 1.0) -> AdapterInfo | None:
        """Swaps the LoRA adapter without reloading the model: `path` a GGUF LoRA (edge/lora_gguf.py
        writes them), None for the base model alone. Waits for the generation in progress to end, like
        any request, so no generation sees two adapters. An adapter that cannot be used raises
        AdapterLoadError naming the file, and the one in use stays. Returns the adapter now in use."""
        if self._closed:
            raise EdgeGenerationError(f"edge backend {self.name} is closed")
        if path is not None and self._model_sha256 is None:  # hashed outside the lock: it reads the whole file
            self._model_sha256 = await asyncio.to_thread(file_sha256, self.model_path)
        loop = asyncio.get_running_loop()
        async with self._lock_for_running_loop():
            swap = loop.run_in_executor(self._executor, self._swap_adapter,
                                        None if path is None else Path(path), name, scale)
            try:
                return await asyncio.shield(swap)
            except asyncio.CancelledError:
                # The worker cannot be stopped mid-swap: keep the model until it is done, so that no
                # generation starts between the old adapter and the new one.
                await asyncio.wait([swap])
                raise

    def stream(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        stop: Sequence[str] = (),
        seed: int | None = None,
        grammar: str | None = None,
        capture_states: bool = False,
    ) -> EdgeStream:
        """`grammar`: a GBNF grammar the completion must follow (llama.cpp's grammar sampler), for
        callers that need parseable output (the agent's tool calls); None samples freely.
        `capture_states`: the completion carries the final layer's hidden states at the prompt's last
        token and at the draft's end (edge/_hidden_states.py); costs one single-token decode."""
        if self._closed:
            raise EdgeGenerationError(f"edge backend {self.name} is closed")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        request = _Request(
            messages=tuple(dict(m) for m in messages),
            max_tokens=max_tokens,
            temperature=temperature,
            stop=tuple(stop),
            seed=seed,
            grammar=grammar or None,
            capture_states=capture_states,
        )
        return EdgeStream(self, request)

    async def read_prompt_state(self, messages: Sequence[Mapping[str, str]]) -> PromptState:
        """Evaluates the prompt these messages render to, without generating, and returns the final
        layer's state at its last token (a decision made after the prefill, before any decode). Queues on
        the model like a stream; a stream of the same messages that follows reuses the evaluated prompt."""
        if self._closed:
            raise EdgeGenerationError(f"edge backend {self.name} is closed")
        request = _Request(messages=tuple(dict(m) for m in messages), max_tokens=1, temperature=0.0, stop=(),
                           seed=None)
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        async with self._lock_for_running_loop():
            queue_s = time.monotonic() - started
            prompt = await loop.run_in_executor(self._executor, self._prepare, request)
            if len(prompt.tokens) + 1 > self.n_ctx:
                raise PromptTooLongError(len(prompt.tokens), 1, self.n_ctx)
            try:
                state, reused = await loop.run_in_executor(
                    self._executor, prefill_with_state, self._llm, prompt.tokens, self.n_embd)
            except EdgeError:
                raise
            except Exception as exc:
                raise _as_edge_error(exc) from exc
        return PromptState(state=state, prompt_tokens=len(prompt.tokens), reused_prompt_tokens=reused,
                           queue_s=queue_s, total_s=time.monotonic() - started, model=self.served_model,
                           adapter_sha256=self._adapter_sha256())

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` alone, as a message's content is tokenised inside a prompt: as plain text, so
        control-token text counts as the text it is. Reads only the vocabulary, so it is safe beside a
        running generation."""
        return len(self._prompt_tokenizer.tokenize(text, special=False))

    def count_prompt_tokens(self, messages: Sequence[Mapping[str, str]]) -> int:
        """Tokens of the whole prompt these messages render to (chat template included)."""
        return len(self.prompt_token_ids(messages))

    def prompt_token_ids(self, messages: Sequence[Mapping[str, str]]) -> tuple[int, ...]:
        """The prompt these messages render to, as the model sees it (contents as plain text)."""
        return self._prepare(_Request(messages=tuple(dict(m) for m in messages), max_tokens=1,
                                      temperature=0.0, stop=(), seed=None)).tokens

    def answer_token_ids(self, answer: str) -> tuple[int, ...]:
        """The tokens a generation that writes `answer` and ends its turn produces: the text as plain text,
        then the end-of-generation token the model stops on (fine-tuning's targets)."""
        return (*self._prompt_tokenizer.tokenize(answer, special=False), self._llm.token_eos())

    def hidden_states_of(self, messages: Sequence[Mapping[str, str]], draft: str, *,
                         finished: bool = True) -> HiddenStates:
        """The states a stream with `capture_states` would have read, for a draft already written: the
        prompt is evaluated as a stream evaluates it, then the draft's tokens in one batch, so it costs a
        prefill and no generation (relabelling logged answers). A draft cut by its token budget
        (`finished` False) ends one token earlier, as a captured stream's does. Blocking, and not for a
        backend that is serving streams: it uses the model without queueing."""
        if self._closed:
            raise EdgeGenerationError(f"edge backend {self.name} is closed")
        prompt = list(self.prompt_token_ids(messages))
        tokens = self._llm.tokenize(draft.encode("utf-8"), add_bos=False, special=False)
        tokens = tokens if finished else tokens[:-1]
        if len(prompt) + len(tokens) > self.n_ctx:
            raise PromptTooLongError(len(prompt), len(tokens), self.n_ctx)
        prompt_state, _ = prefill_with_state(self._llm, prompt, self.n_embd)
        if not tokens:  # nothing was generated after the prompt: its last state chose the end
            return HiddenStates(prompt=prompt_state, draft=prompt_state, adapter_sha256=self._adapter_sha256())
        return HiddenStates(prompt=prompt_state, draft=extend_with_state(self._llm, tokens, self.n_embd),
                            adapter_sha256=self._adapter_sha256())

    def close(self) -> None:
        """Stop any running generation, then free the model."""
        if self._closed:
            return
        self._closed = True
        if self._active_cancel is not None:
            self._active_cancel.set()
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._llm.close()

    def _adapter_sha256(self) -> str:
        return self._adapter.info.sha256 if self._adapter is not None else ""

    def _swap_adapter(self, path: Path | None, name: str | None, scale: float) -> AdapterInfo | None:
        context = self._llm._ctx.ctx
        if path is None:
            clear_adapters(context)
            loaded = None
        else:
            assert self._model_sha256 is not None  # use_adapter hashed it
            loaded = LoadedAdapter(self._llm._model.model, path, name=name, scale=scale,
                                   base_sha256=self._model_sha256)
            try:
                loaded.set_on(context)
            except AdapterLoadError:  # llama.cpp 0.3.36's setter always succeeds; a later one may not
                loaded.free()
                if self._adapter is not None:
                    self._adapter.set_on(context)
                raise
        # The cached prompt was evaluated with the old weights: nothing may reuse it.
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(context), True)
        self._llm.reset()
        previous, self._adapter = self._adapter, loaded
        if previous is not None:
            previous.free()
        logger.info("edge %s: LoRA adapter %s", self.name, loaded.info.label if loaded else "none (base model)")
        return self.adapter

    # -- used by EdgeStream ---------------------------------------------------------------------

    def _lock_for_running_loop(self) -> asyncio.Lock:
        # An asyncio.Lock binds to the first loop that waits on it; a backend that outlives a loop
        # (tests, a restarted daemon) gets a fresh lock, which is safe only while none is held.
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            if self._lock is not None and self._lock.locked():
                raise EdgeGenerationError(
                    f"edge backend {self.name} is busy with a request from another event loop"
                )
            self._lock = asyncio.Lock()
            self._lock_loop = loop
        return self._lock

    def _prepare(self, request: _Request) -> _Prompt:
        """Render the chat template and tokenise, contents as plain text (worker thread). A template that
        fails on these messages raises PromptTemplateError."""
        try:
            prompt = self._prompt_tokenizer.prompt(request.messages)
        except EdgeError:
            raise
        except Exception as exc:  # the tokenizer failed: the model's fault, not the request's
            raise EdgeGenerationError(f"could not build the prompt for {self.name}: {exc}") from exc
        stops = tuple(s for s in (*request.stop, *prompt.stops) if s)
        return _Prompt(tokens=tuple(prompt.tokens), stops=stops)

    def _generate(
        self,
        prompt: _Prompt,
        request: _Request,
        cancel: threading.Event,
        emit: Callable[[_Token], None],
        result: _WorkerResult,
    ) -> _WorkerResult:
        """The token loop (worker thread). Every sampled token is emitted exactly once, and recorded in
        `result`, which the caller owns so that it still knows what was generated when this raises."""
        llm = self._llm
        llm.set_seed(request.seed if request.seed is not None else secrets.randbits(31))
        decoder = Utf8StreamDecoder()
        stop_filter = StopStringFilter(prompt.stops)
        scratch = np.empty(self._n_vocab, dtype=np.float32)
        piece_buffer = ctypes.create_string_buffer(_PIECE_BUFFER_BYTES)

        def send(token: int, logprob: float, text: str) -> None:
            result.text_parts.append(text)
            result.logprobs.append(logprob)
            emit((text, logprob, token))

        if cancel.is_set():  # cancelled while queued: skip the prompt's evaluation altogether
            result.finish_reason = "cancelled"
            return result
        if request.capture_states:
            try:
                result.prompt_state, _ = prefill_with_state(llm, prompt.tokens, self.n_embd)
            except EdgeError:
                raise
            except Exception as exc:
                raise EdgeGenerationError(f"llama.cpp failed while evaluating the prompt: {exc}") from exc
        else:
            set_embeddings(llm, False)  # an earlier request's capture left them on: keep prefill lean
        tokens = llm.generate(
            list(prompt.tokens),
            temp=request.temperature,
            top_k=_TOP_K,
            top_p=_TOP_P,
            min_p=_MIN_P,
            repeat_penalty=1.0,
            reset=True,
            grammar=llama_cpp.LlamaGrammar.from_string(request.grammar, verbose=False) if request.grammar else None,
        )
        try:
            for token in tokens:
                if result.first_token_at is None:
                    result.first_token_at = time.monotonic()
                logprob = self._logprob_of_last_sample(token, scratch)
                if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                    self._keep_draft_state(request, result)
                    send(token, logprob, stop_filter.feed(decoder.flush()) + stop_filter.flush())
                    result.finish_reason = "stop"
                    return result
                text = stop_filter.feed(decoder.feed(self._piece(token, piece_buffer)))
                if stop_filter.stopped:
                    self._keep_draft_state(request, result)
                    send(token, logprob, text)
                    result.finish_reason = "stop"
                    return result
                if len(result.logprobs) + 1 >= request.max_tokens:
                    self._keep_draft_state(request, result)
                    send(token, logprob, text + stop_filter.feed(decoder.flush()) + stop_filter.flush())
                    result.finish_reason = "length"
                    return result
                send(token, logprob, text)
                # Checked before the generator decodes the next token: that decode is the cost.
                if cancel.is_set():
                    result.finish_reason = "cancelled"
                    return result
            return result
        except Exception as exc:
            raise EdgeGenerationError(f"llama.cpp failed while generating: {exc}") from exc
        finally:
            tokens.close()

    def _keep_draft_state(self, request: _Request, result: _WorkerResult) -> None:
        # Inside generate(), the last evaluated token is the one before the token just sampled: its
        # state chose that token. The sampled token itself is never evaluated (no decode is spent on it).
        if request.capture_states:
            result.draft_state = read_last_state(self._llm, self.n_embd)

    def _logprob_of_last_sample(self, token: int, scratch: np.ndarray) -> float:
        # Inside generate(), logits row -1 is the one the sampler just drew `token` from.
        pointer = llama_cpp.llama_get_logits_ith(self._llm._ctx.ctx, -1)
        if not pointer:
            raise EdgeGenerationError("llama.cpp returned no logits for the sampled token")
        logits = np.ctypeslib.as_array(pointer, shape=(self._n_vocab,))
        return token_logprob(logits, token, scratch)

    def _piece(self, token: int, buffer: ctypes.Array[ctypes.c_char]) -> bytes:
        # Llama.detokenize uses a fixed 32-byte buffer and silently garbles longer pieces.
        size = llama_cpp.llama_token_to_piece(self._vocab, token, buffer, len(buffer), 0, False)
        if size < 0:
            bigger = ctypes.create_string_buffer(-size)
            size = llama_cpp.llama_token_to_piece(self._vocab, token, bigger, -size, 0, False)
            return bigger.raw[:size]
        return buffer.raw[:size]

    def _make_formatter(self, override: str | None) -> llama_chat_format.Jinja2ChatFormatter:
        llm = self._llm
        eos_id, bos_id = llm.token_eos(), llm.token_bos()
        eos = llm._model.token_get_text(eos_id) if eos_id != -1 else ""
        bos = llm._model.token_get_text(bos_id) if bos_id != -1 else ""
        template = override or llm.metadata.get("tokenizer.chat_template")
        if template is None:
            logger.warning("model %s has no chat template in its GGUF; using ChatML", self.name)
            template = llama_chat_format.CHATML_CHAT_TEMPLATE
            eos = llama_chat_format.CHATML_EOS_TOKEN
        return llama_chat_format.Jinja2ChatFormatter(
            template=template, eos_token=eos, bos_token=bos, stop_token_ids=[eos_id]
        )


class EdgeStream:
    """Async iterator of TokenDelta for one request; `completion` is set once it has ended, however it
    ended: at its end, closed early ("cancelled"), or failed ("error", and the error is raised too);
    it holds what was generated so far, so every stream can be priced.

    The request starts on the first `__anext__`. Close it (`aclose()`, or `async with
    contextlib.aclosing(stream)`) to cancel: generation stops within a token and the model is
    free for the next request when `aclose` returns. A stream dropped without `aclose()` runs
    to its end (up to max_tokens) before the model is free again.
    """

    def __init__(self, backend: LlamaBackend, request: _Request) -> None:
        self._backend = backend
        self._request = request
        self._cancel = threading.Event()
        self._queue: TokenHandoff[_QueueItem] | None = None
        self._ready: deque[_QueueItem] = deque()  # taken from the handoff, not yet returned
        self._producer: asyncio.Task[None] | None = None
        self._waiting_for_lock = False
        self._model, self._adapter_sha256 = backend.served_model, ""  # set again once the model is ours
        self._started_at = 0.0
        self._ended = False
        self.completion: EdgeCompletion | None = None

    def __aiter__(self) -> EdgeStream:
        return self

    async def __anext__(self) -> TokenDelta:
        if self._ended:
            raise StopAsyncIteration
        if self._queue is None:
            self._start()
        assert self._queue is not None
        if not self._ready:
            self._ready.extend(await self._queue.take())
        tokens: list[_Token] = []
        while self._ready and not isinstance(self._ready[0], _Finished):
            tokens.append(self._ready.popleft())  # type: ignore[arg-type]
        if tokens:
            return TokenDelta.merge(tokens)
        item = self._ready.popleft()
        assert isinstance(item, _Finished)
        self._ended = True
        self.completion = item.completion
        if item.error is not None:
            raise item.error
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Cancel the request (if it is still running) and wait until the worker has stopped."""
        self._ended = True
        self._cancel.set()
        producer = self._producer
        if producer is None:
            if self.completion is None:  # never iterated: nothing ran and nothing was spent
                self.completion = self._unrun_completion(0.0, "cancelled")
            return
        if self._waiting_for_lock:
            producer.cancel()
        try:
            await asyncio.shield(producer)
        except asyncio.CancelledError:
            if not producer.cancelled():
                raise  # the caller itself was cancelled
            # Cancelled before its first step, so it could not report; report for it. (A producer
            # cancelled mid-generation has reported its tokens already: keep that completion.)
            assert self._queue is not None
            if self.completion is None:
                self._finish_unrun(self._queue, self._started_at)

    # -- internals ------------------------------------------------------------------------------

    def _start(self) -> None:
        self._queue = TokenHandoff(asyncio.get_running_loop(), self._backend.stream_flush_interval_s)
        self._started_at = time.monotonic()
        self._waiting_for_lock = True  # the producer's first step is to wait for the model
        self._producer = asyncio.get_running_loop().create_task(
            self._produce(self._queue), name=f"edge-{self._backend.name}-request"
        )

    def _finish(self, queue: TokenHandoff[_QueueItem], finished: _Finished) -> None:
        # Set here, not only when a consumer reads the sentinel: aclose() may have ended the
        # iteration while another task still waits on the queue for that sentinel.
        self.completion = finished.completion
        queue.put_final(finished)

    def _finish_unrun(self, queue: TokenHandoff[_QueueItem], started: float) -> None:
        completion = self._unrun_completion(time.monotonic() - started, "cancelled")
        self._backend._counter.record(completion)
        self._finish(queue, _Finished(completion=completion))

    def _unrun_completion(self, waited_s: float, finish_reason: FinishReason) -> EdgeCompletion:
        """A request that ended before the model evaluated anything: no tokens, no energy."""
        return EdgeCompletion(
            text="",
            model=self._model,
            prompt_tokens=0,
            completion_tokens=0,
            queue_s=waited_s,
            ttft_s=waited_s,
            total_s=waited_s,
            finish_reason=finish_reason,
            token_logprobs=(),
        )

    def _completion(
        self, progress: _WorkerResult, prompt_tokens: int, queue_s: float, finish_reason: FinishReason
    ) -> EdgeCompletion:
        """What the request generated so far. After a cancel the worker may still be appending its
        last token while this copies the lists: the copy may miss that one token, never corrupt."""
        ended = time.monotonic()
        first = progress.first_token_at if progress.first_token_at is not None else ended
        return EdgeCompletion(
            text="".join(progress.text_parts),
            model=self._model,
            prompt_tokens=prompt_tokens,
            completion_tokens=len(progress.logprobs),
            queue_s=queue_s,
            ttft_s=first - self._started_at,
            total_s=ended - self._started_at,
            finish_reason=finish_reason,
            token_logprobs=tuple(progress.logprobs),
            states=(HiddenStates(prompt=progress.prompt_state, draft=progress.draft_state,
                                 adapter_sha256=self._adapter_sha256)
                    if progress.prompt_state is not None else None),
        )

    async def _produce(self, queue: TokenHandoff[_QueueItem]) -> None:
        backend, request = self._backend, self._request
        loop = asyncio.get_running_loop()
        started = self._started_at
        try:
            lock = backend._lock_for_running_loop()
            try:
                await lock.acquire()
            finally:
                self._waiting_for_lock = False
        except asyncio.CancelledError:
            # aclose() while queued: nothing ran, but a consumer may be waiting on the queue.
            self._finish_unrun(queue, started)
            return
        except Exception as exc:  # another event loop holds the model
            self._finish(queue, _Finished(completion=self._unrun_completion(0.0, "error"), error=exc))
            return
        # Under the model lock the adapter cannot change: this is the one the generation runs with.
        self._model, self._adapter_sha256 = backend.served_model, backend._adapter_sha256()
        if self._cancel.is_set():  # closed before the model was free
            lock.release()
            self._finish_unrun(queue, started)
            return
        queue_s = time.monotonic() - started
        backend._active_cancel = self._cancel
        progress = _WorkerResult()
        evaluated_prompt_tokens = 0  # until the prompt goes to the model, it has cost nothing
        try:
            prompt = await loop.run_in_executor(backend._executor, backend._prepare, request)
            if len(prompt.tokens) + request.max_tokens > backend.n_ctx:
                raise PromptTooLongError(len(prompt.tokens), request.max_tokens, backend.n_ctx)
            evaluated_prompt_tokens = len(prompt.tokens)
            await loop.run_in_executor(
                backend._executor, backend._generate, prompt, request, self._cancel, queue.put, progress
            )
            completion = self._completion(progress, evaluated_prompt_tokens, queue_s, progress.finish_reason)
            backend._counter.record(completion)
            self._finish(queue, _Finished(completion=completion))
        except asyncio.CancelledError:
            # The loop is shutting down; the worker sees the flag and stops on its own.
            self._cancel.set()
            completion = self._completion(progress, evaluated_prompt_tokens, queue_s, "cancelled")
            self._finish(queue, _Finished(completion=completion, error=EdgeGenerationError("request cancelled")))
            raise
        except Exception as exc:  # an EdgeError (prompt too long, template refused, llama.cpp failed), executor shut down
            completion = self._completion(progress, evaluated_prompt_tokens, queue_s, "error")
            self._finish(queue, _Finished(completion=completion, error=_as_edge_error(exc)))
        finally:
            backend._active_cancel = None
            lock.release()


def _as_edge_error(exc: Exception) -> Exception:
    if isinstance(exc, EdgeError):  # already typed: the prompt's fault or the model's, as raised
        return exc
    if isinstance(exc, RuntimeError) and "shutdown" in str(exc):
        return EdgeGenerationError("edge backend was closed during the request")
    return EdgeGenerationError(f"edge request failed: {exc!r}")


__all__ = [
    "EdgeCompletion",
    "EdgeMetrics",
    "EdgeStream",
    "FinishReason",
    "LlamaBackend",
    "PromptState",
    "TokenDelta",
]
