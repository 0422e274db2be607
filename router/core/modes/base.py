"""What a mode is: given a validated request and the backends, stream text and end with an outcome.

A mode reaches the backends only through its ModeContext, one call at a time or several at once:

    async with ctx.call(BackendKind.EDGE, purpose=RunPurpose.SAMPLE, temperature=0.7, seed=1) as call:
        async for delta in call.deltas():
            ...

or, when the mode needs the whole answer before it acts, `run = await ctx.call(...).collect()`.

The context keeps every call's BackendRun, in the order the calls were opened, however each ended
(at its end, by `break`, by an exception, by cancellation), and the Router prices and records the
request from those runs. So a mode cannot lose a call's tokens or cost; its outcome only says which
text is the answer and who served it.
"""
from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Mapping, Optional, Protocol, Sequence, Union

from router.core.backends import COMPLETION_FIELDS, Backend, BackendStream, Completion, CompletionRecord, Delta
from router.core.info import InfoError, InfoSource
from router.domain.errors import BackendUnavailableError
from router.domain.pricing import CostModel
from router.domain.types import (FINISH_CANCELLED, FINISH_ERROR, BackendKind, BackendRun, ChatMessage, Decision,
                                 DraftDiscarded, GenerateRequest, GenerationParams, InfoCall, Mode, Passage,
                                 RunPurpose, TextDelta)

# What ctx.call() may override per call; everything else about a call is the request's.
OVERRIDABLE_PARAMS = frozenset(f.name for f in dataclasses.fields(GenerationParams))


class CallStateError(RuntimeError):
    """A BackendCall was used outside its `async with` block, or entered twice."""


class UnknownCallParameterError(TypeError):
    """ctx.call() got a keyword that is not a generation parameter."""


@dataclass(frozen=True)
class ModeOutcome:
    """A mode's answer: which text, from where, and why. The runs come from the ModeContext."""

    text: str
    served_by: BackendKind
    decision: Decision
    finish_reason: str
    citations: tuple[str, ...] = ()  # the passage ids the answer cites (EDGE_RAG_CLOUD_INFO)


# A mode streams TextDeltas, may send DraftDiscarded when text it streamed is no longer the answer, and
# ends with one ModeOutcome.
ModeEvent = Union[TextDelta, DraftDiscarded, ModeOutcome]


@dataclass
class ModeContext:
    request: GenerateRequest
    mode: Mode
    params: GenerationParams
    backends: dict[BackendKind, Backend]
    costs: CostModel
    backend_seconds: dict[BackendKind, float] = field(default_factory=dict)  # summed over every call
    info: Optional[InfoSource] = None
    info_calls: list[InfoCall] = field(default_factory=list)  # every retrieval, however it ended
    _calls: list[Union["BackendCall", "PrefillCall"]] = field(default_factory=list, init=False, repr=False)

    async def retrieve(self, query: str, *, k: int, operation: str = "retrieve",
                       filters: Optional[Mapping[str, str]] = None,
                       timeout_s: Optional[float] = None) -> tuple[Passage, ...]:
        """The k best passages the request's caller may read, recorded as an InfoCall however the call
        ends (a failed call keeps the cost the client put on it). Raises InfoError: the mode decides
        whether to answer without passages."""
        if self.info is None:
            self.info_calls.append(InfoCall(operation, query, (), (), 0.0, 0.0, "no Info service is configured"))
            raise InfoError("no Info service is configured (info.service = off)")
        started = time.perf_counter()
        try:
            retrieval = await self.info.retrieve(query, k=k, caller=self.request.caller, filters=filters,
                                                 timeout_s=timeout_s)
        except BaseException as exc:  # cancelled or failed: the call was made, so it is recorded
            latency = getattr(exc, "latency_s", time.perf_counter() - started)
            reason = exc.reason if isinstance(exc, InfoError) else ("cancelled" if isinstance(
                exc, asyncio.CancelledError) else f"{type(exc).__name__}: {exc}")
            self.info_calls.append(InfoCall(operation, query, (), (), latency, getattr(exc, "cost_usd", 0.0), reason))
            raise
        self.info_calls.append(InfoCall(operation, query, tuple(p.passage_id for p in retrieval.passages),
                                        tuple(p.score for p in retrieval.passages), retrieval.latency_s,
                                        retrieval.cost_usd))
        return retrieval.passages

    @property
    def messages(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.content} for m in self.request.messages]

    def backend(self, kind: BackendKind) -> Backend:
        try:
            return self.backends[kind]
        except KeyError:
            raise BackendUnavailableError(f"the {kind.name.lower()} backend is not loaded") from None

    def call(self, kind: BackendKind, messages: Optional[Sequence[Union[ChatMessage, Mapping[str, str]]]] = None,
             purpose: str = RunPurpose.ANSWER, grammar: Optional[str] = None, capture_states: bool = False,
             **overrides: Any) -> "BackendCall":
        """A call to `kind`, to open with `async with`. `messages` default to the request's; `overrides`
        replace the request's max_tokens, temperature, seed or stop for this call only. `purpose` is a
        RunPurpose; a discarded answer becomes a draft by `call.mark_discarded()`, or by itself when
        another backend serves the request (see Router). `grammar`: a GBNF grammar the output must
        follow, for a backend that takes one (the edge). `capture_states`: the edge also reads its hidden
        states (call.hidden_states once the call has ended)."""
        call = BackendCall(self, kind, messages=self._as_dicts(messages), purpose=RunPurpose(purpose),
                           params=self._params_with(overrides), grammar=grammar, capture_states=capture_states)
        self._calls.append(call)
        return call

    async def read_prompt_state(self, messages: Optional[Sequence[Union[ChatMessage, Mapping[str, str]]]] = None) -> Any:
        """The edge's hidden state at the end of the prompt (the request's messages by default), read
        after its prefill and before any token is decoded (the edge's PromptState: `state`, and the
        `adapter_sha256` it was read with); an edge answer to the same messages that
        follows reuses the prefill. Recorded and priced as a `prefill` run however it ends (on the
        tokens it evaluated). Raises BackendUnavailableError for an edge that cannot read its states."""
        call = PrefillCall(self, self._as_dicts(messages))
        self._calls.append(call)
        return await call.read()

    @property
    def runs(self) -> tuple[BackendRun, ...]:
        """Every closed call's run, in the order the calls were opened."""
        return tuple(call.run for call in self._calls if call.run is not None)

    async def close_calls(self) -> None:
        """Closes any call still open, so that a call a mode left behind (in a task it abandoned, say)
        still stops its backend and leaves its run. A no-op for calls closed by their `async with`."""
        failures: list[BaseException] = []
        for call in self._calls:
            try:
                await call.aclose()
            except BaseException as exc:  # a second cancellation, say: the other calls still close
                failures.append(exc)
        if failures:
            raise failures[0]

    def _as_dicts(self, messages: Optional[Sequence[Union[ChatMessage, Mapping[str, str]]]]) -> list[dict[str, str]]:
        if messages is None:
            return self.messages
        return [{"role": m.role, "content": m.content} if isinstance(m, ChatMessage)
                else {"role": m["role"], "content": m["content"]} for m in messages]

    def _params_with(self, overrides: Mapping[str, Any]) -> GenerationParams:
        unknown = set(overrides) - OVERRIDABLE_PARAMS
        if unknown:
            raise UnknownCallParameterError(f"ctx.call() got {', '.join(sorted(unknown))}; it can override "
                                            f"{', '.join(sorted(OVERRIDABLE_PARAMS))}")
        if "stop" in overrides:
            overrides = {**overrides, "stop": tuple(overrides["stop"])}
        return dataclasses.replace(self.params, **overrides)


class ModeHandler(Protocol):
    mode: Mode

    def run(self, ctx: ModeContext) -> AsyncIterator[ModeEvent]: ...


class BackendCall:
    """One call to a backend; open it with `async with ctx.call(...) as call`, read `call.deltas()`.

    Leaving the block, however it is left, closes the backend stream at once: the edge stops within a
    token and frees the model before the block is left, the cloud closes its HTTP stream. The call's
    BackendRun (`run`) is then set and kept by the context; at the stream's natural end it is set
    already, inside the block, right after the last delta.
    """

    def __init__(self, ctx: ModeContext, kind: BackendKind, *, messages: list[dict[str, str]],
                 purpose: RunPurpose, params: GenerationParams, grammar: Optional[str] = None,
                 capture_states: bool = False) -> None:
        self._ctx = ctx
        self.grammar = grammar
        self.capture_states = capture_states
        self.hidden_states: Optional[Any] = None  # the completion's `states`, when capture_states was asked
        self.kind = kind
        self.purpose = purpose
        self.params = params
        self._messages = messages
        self._stream: Optional[BackendStream] = None
        self._deltas: Optional[AsyncIterator[Delta]] = None
        self._opened_at = 0.0
        self._first_text_at: Optional[float] = None
        self._closed = False
        self._failed = False
        self._pending_logprob: Optional[float] = None
        self._text_parts: list[str] = []
        self.token_logprobs: list[float] = []
        self.run: Optional[BackendRun] = None

    async def __aenter__(self) -> "BackendCall":
        if self._stream is not None or self._closed:
            raise CallStateError("a BackendCall is entered once; open another with ctx.call()")
        backend = self._ctx.backend(self.kind)
        params = self.params
        self._opened_at = time.perf_counter()
        # Only a call that needs a grammar (or states) passes one, so other backends keep their contract.
        extra: dict[str, Any] = {"grammar": self.grammar} if self.grammar else {}
        if self.capture_states:
            extra["capture_states"] = True
        self._stream = backend.stream(self._messages, max_tokens=params.max_tokens,
                                      temperature=params.temperature, stop=params.stop, seed=params.seed, **extra)
        self._deltas = self._stream.__aiter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def deltas(self) -> AsyncIterator[TextDelta]:
        """The call's text, delta by delta; ends at the stream's end (then `run` is set)."""
        if self._stream is None:
            raise CallStateError("open the call first: async with ctx.call(...) as call")
        return _CallDeltas(self)

    async def collect(self) -> BackendRun:
        """Opens the call, reads it to its end, closes it and returns its run: for a mode that needs the
        whole answer before it acts (a scorer's sample, an agent step, a tool). A failure propagates;
        whatever the call generated and spent until then is still in `run` and in the context."""
        async with self:
            async for _delta in self.deltas():
                pass
        assert self.run is not None  # the stream's natural end sets it inside the block
        return self.run

    def mark_discarded(self) -> None:
        """This call's answer was set aside for another: its run is a draft."""
        self.purpose = RunPurpose.DRAFT
        if self.run is not None:
            self.run = dataclasses.replace(self.run, purpose=RunPurpose.DRAFT)

    async def aclose(self) -> None:
        """Closes the backend stream (a no-op once closed) and records the run, even if closing is cut short."""
        if self._closed:
            return
        self._closed = True
        stream = self._stream
        if stream is None:  # never entered: no backend was called
            return
        try:
            await stream.aclose()
        finally:
            self._record(stream.completion)

    async def _next_delta(self) -> TextDelta:
        if self._closed or self._deltas is None:
            raise StopAsyncIteration
        while True:
            try:
                delta = await self._deltas.__anext__()
            except StopAsyncIteration:
                await self.aclose()  # the natural end: the run is ready inside the block
                raise
            except Exception:
                self._failed = True
                raise
            text_delta = self._absorb(delta)
            if text_delta is not None:
                return text_delta

    def _absorb(self, delta: Delta) -> Optional[TextDelta]:
        """Keeps the delta's logprobs; a delta without text (held back by the backend) passes its
        logprob on to the next one that has text."""
        self.token_logprobs.extend(delta.token_logprobs)
        if delta.logprob is not None:
            self._pending_logprob = (self._pending_logprob or 0.0) + delta.logprob
        if not delta.text:
            return None
        if self._first_text_at is None:
            self._first_text_at = time.perf_counter()
        self._text_parts.append(delta.text)
        text_delta = TextDelta(delta.text, self.kind, self._pending_logprob)
        self._pending_logprob = None
        return text_delta

    def _record(self, completion: Optional[Completion]) -> None:
        elapsed = time.perf_counter() - self._opened_at
        seconds = self._ctx.backend_seconds
        seconds[self.kind] = seconds.get(self.kind, 0.0) + elapsed
        self.run = self._to_run(completion if completion is not None else self._observed(elapsed))
        self.hidden_states = getattr(completion, "states", None)

    def _observed(self, elapsed: float) -> CompletionRecord:
        """A run built from what the call itself saw, for a stream that ended without a completion (a
        backend breaking its contract, or a second cancellation while the stream was closing). Its counts
        are the call's own, so they are flagged as estimates."""
        first = (self._first_text_at - self._opened_at) if self._first_text_at is not None else elapsed
        return CompletionRecord(
            text="".join(self._text_parts), model=self._ctx.backend(self.kind).name, prompt_tokens=0,
            completion_tokens=len(self.token_logprobs) or len(self._text_parts), queue_s=0.0, ttft_s=first,
            total_s=elapsed, finish_reason=FINISH_ERROR if self._failed else FINISH_CANCELLED, usage_estimated=True)

    def _to_run(self, done: Completion) -> BackendRun:
        costs = self._ctx.costs
        if self.kind == BackendKind.EDGE:
            cost = costs.edge_cost(done.prompt_tokens, done.completion_tokens)
        else:
            cost = costs.cloud_cost(done.prompt_tokens, done.completion_tokens)
        mean_logprob = (sum(self.token_logprobs) / len(self.token_logprobs)
                        if self.token_logprobs else None)
        # Every completion field carries over as it is (tests/unit/test_completion_fields.py keeps the lists
        # equal), so a new one needs no edit here.
        carried = {name: getattr(done, name) for name in COMPLETION_FIELDS}
        return BackendRun(**carried, backend=self.kind, cost_usd=cost, mean_logprob=mean_logprob, purpose=self.purpose)


class PrefillCall:
    """The edge reading a prompt without generating (ModeContext.read_prompt_state): one run, no text."""

    def __init__(self, ctx: ModeContext, messages: list[dict[str, str]]) -> None:
        self._ctx = ctx
        self._messages = messages
        self.run: Optional[BackendRun] = None

    async def read(self) -> Any:
        backend = self._ctx.backend(BackendKind.EDGE)
        reader = getattr(backend, "read_prompt_state", None)
        if reader is None:
            raise BackendUnavailableError(f"the edge backend {backend.name} cannot read its hidden states")
        started = time.perf_counter()
        try:
            found = await reader(self._messages)
        except BaseException as exc:  # cancelled or failed: the prefill may have run, so it is recorded
            elapsed = time.perf_counter() - started
            self._record(backend.name, 0, elapsed, elapsed,
                         FINISH_CANCELLED if isinstance(exc, asyncio.CancelledError) else FINISH_ERROR, estimated=True)
            raise
        self._record(getattr(found, "model", "") or backend.name, found.prompt_tokens - found.reused_prompt_tokens,
                     found.queue_s, found.total_s, "stop")
        return found

    def _record(self, model: str, evaluated: int, queue_s: float, total_s: float, finish_reason: str, *,
                estimated: bool = False) -> None:
        seconds = self._ctx.backend_seconds
        seconds[BackendKind.EDGE] = seconds.get(BackendKind.EDGE, 0.0) + total_s
        self.run = BackendRun(backend=BackendKind.EDGE, model=model, text="", prompt_tokens=evaluated,
                              completion_tokens=0, queue_s=queue_s, ttft_s=total_s, total_s=total_s,
                              cost_usd=self._ctx.costs.edge_cost(evaluated, 0), finish_reason=finish_reason,
                              usage_estimated=estimated, purpose=RunPurpose.PREFILL)

    async def aclose(self) -> None:
        """Nothing stays open: the read is over when `read` returns or raises."""


class _CallDeltas:
    """A call's TextDeltas. A plain iterator, not an async generator: a loop left early leaves nothing
    for a finaliser to close later, since the call's block closes the stream itself."""

    def __init__(self, call: BackendCall) -> None:
        self._call = call

    def __aiter__(self) -> "_CallDeltas":
        return self

    async def __anext__(self) -> TextDelta:
        return await self._call._next_delta()
