"""The request's life: validate, pick the mode, run it, record the result.

The core speaks plain dataclasses (router/domain/types.py); gRPC is one adapter over it.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable, Mapping, Optional, Protocol, Sequence, Union

from router.core.admission import Admission, AdmissionSlot
from router.core.backends import Backend, translate_backend_error
from router.core.cloud_gate import CLOUD_CAPABLE_MODES, CloudGate, CloudKeptOffError
from router.core.modes.degraded import EdgeInsteadOfCloud
from router.core.info import InfoSource
from router.domain.config import ServerSettings
from router.domain.errors import ErrorKind, InternalError, NotReadyError, RequestIdInUseError, RouterError
from router.core.modes.base import ModeContext, ModeEvent, ModeHandler, ModeOutcome
from router.domain.pricing import CostModel
from router.domain.types import (FINISH_CANCELLED, FINISH_ERROR, BackendKind, BackendRun, Decision, DraftDiscarded,
                                 GenerateRequest, GenerateResult, Latency, Mode, RunPurpose, StreamEvent, TextDelta)
from router.domain.validation import resolve_mode, validate_request


def with_discarded_answers_as_drafts(runs: tuple[BackendRun, ...], served_by: BackendKind) -> tuple[BackendRun, ...]:
    """An answer from a backend that did not serve the request was discarded (an escalated edge answer,
    the loser of a race): it is a draft, whether or not the mode said so with `call.mark_discarded()`."""
    return tuple(dataclasses.replace(run, purpose=RunPurpose.DRAFT)
                 if run.purpose == RunPurpose.ANSWER and run.backend != served_by else run
                 for run in runs)


class ResultSink(Protocol):
    """Receives every result: answered ones, and those that ended without an answer after spending
    tokens (`GenerateResult.answered` tells them apart). Called on the request path, so it must not
    block (the ledger only queues); an exception it raises is logged and never fails the request."""

    def record(self, request: GenerateRequest, result: GenerateResult) -> None: ...


class RecordedIds(Protocol):
    """Where finished requests are kept by id (the ledger)."""

    def contains(self, request_id: str) -> bool:
        """Whether a request with this id is recorded; may block on disk (called in a thread)."""
        ...


@dataclass
class Backends:
    """The loaded backends; empty until the daemon has loaded its models."""

    edge: Optional[Backend] = None
    cloud: Optional[Backend] = None

    def as_dict(self) -> dict[BackendKind, Backend]:
        found = {BackendKind.EDGE: self.edge, BackendKind.CLOUD: self.cloud}
        return {kind: backend for kind, backend in found.items() if backend is not None}


@dataclass
class Router:
    settings: ServerSettings
    costs: CostModel
    modes: Mapping[Mode, ModeHandler]
    backends: Backends = field(default_factory=Backends)
    info: Optional[InfoSource] = None  # the Info service, for the modes that retrieve
    sinks: Sequence[ResultSink] = ()
    # A client-supplied request_id must be new: in flight here or recorded there, it is refused, so
    # that no answer (and no cloud spend) is left out of the ledger as a duplicate.
    recorded_ids: Optional[RecordedIds] = None
    # Asked in order before a cloud-capable mode runs (budgets, the breaker, privacy): the first reason
    # given sends the request to the edge alone, marked degraded.
    cloud_gates: Sequence[CloudGate] = ()
    # Whether a request may start now (concurrency, a principal's rate): refused at once, never queued.
    admission: Optional[Admission] = None
    # Told of every request the core refused without spending anything (a limit, a bad value, a reused id):
    # those never reach the sinks, which see every request that spent (the metrics count both).
    on_refused: Optional[Callable[[Union[Mode, int], ErrorKind], None]] = None
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("hybrid_router.requests"))
    ready: bool = False
    _in_flight_ids: set[str] = field(default_factory=set, init=False, repr=False)

    def go_live(self, *, backends: Backends, costs: CostModel, sinks: Sequence[ResultSink],
                cloud_gates: Sequence[CloudGate], info: Optional[InfoSource]) -> None:
        """What loading brings (the backends, the costs of the loaded edge model, the sinks and gates that
        need the cloud, the Info service), set at once; the router takes requests from then on."""
        self.backends, self.costs, self.sinks, self.cloud_gates, self.info = backends, costs, tuple(sinks), \
            tuple(cloud_gates), info
        self.ready = True

    @property
    def default_mode(self) -> Mode:
        return Mode.parse(self.settings.default_mode)

    @property
    def implemented_modes(self) -> tuple[Mode, ...]:
        return tuple(sorted(self.modes))

    async def generate(self, request: GenerateRequest) -> GenerateResult:
        async with contextlib.aclosing(self.stream(request)) as events:
            async for event in events:
                if isinstance(event, GenerateResult):
                    return event
        raise InternalError("the mode ended without a result")

    async def stream(self, request: GenerateRequest) -> AsyncIterator[StreamEvent]:
        received = time.perf_counter()
        request_id = request.request_id or uuid.uuid4().hex
        mode: Optional[Mode] = None
        status = "ok"
        result: Optional[GenerateResult] = None
        unanswered: Optional[GenerateResult] = None
        ctx: Optional[ModeContext] = None
        first_text_at: Optional[float] = None
        claimed_id = False
        slot: Optional[AdmissionSlot] = None
        try:
            mode = resolve_mode(request, self.default_mode, self.modes)
            params = validate_request(request, self.settings)
            if not self.ready:
                raise NotReadyError("the daemon is still loading its models; retry when health reports SERVING")
            if self.admission is not None:
                slot = self.admission.acquire(request.caller.user)  # the caller is the principal
            if request.request_id:  # the router's own uuid4 ids need no check
                self._refuse_if_in_flight(request_id)
                # Claimed before the first await, so a concurrent twin is refused by the check above.
                self._in_flight_ids.add(request_id)
                claimed_id = True
                await self._refuse_if_recorded(request_id)
            handler = self._handler(request, mode)
            ctx = ModeContext(request=request, mode=mode, params=params,
                              backends=self.backends.as_dict(), costs=self.costs, info=self.info)
            outcome: Optional[ModeOutcome] = None
            async with contextlib.aclosing(self._events(handler, ctx, mode)) as events:
                async for event in events:
                    if isinstance(event, ModeOutcome):
                        outcome = event
                    else:  # a TextDelta or a DraftDiscarded: the client sees both, in order
                        if isinstance(event, TextDelta) and first_text_at is None:
                            first_text_at = time.perf_counter()  # ttft counts to text, not to any event
                        elif isinstance(event, DraftDiscarded):
                            # ttft is to the first text of the answer served: a discarded draft's text
                            # was no answer, so an escalated request's ttft includes the edge's turn.
                            first_text_at = None
                        yield event
            await ctx.close_calls()  # a call the mode left open still stops, and its run counts
            if outcome is None:
                raise InternalError(f"mode {mode.name} ended without an outcome")
            done = time.perf_counter()
            result = self._result(request_id, outcome, ctx, received, first_text_at, done)
            self._hand_to_sinks(request, result)
            yield result
        except RouterError as exc:
            status = type(exc).__name__
            unanswered = await self._end_unanswered(request, request_id, ctx, FINISH_ERROR, f"failed: {exc.message}",
                                                    received, first_text_at)
            if unanswered is None and self.on_refused is not None:  # nothing spent: no sink heard of it
                self.on_refused(mode if mode is not None else request.mode, exc.kind)
            raise
        except (GeneratorExit, asyncio.CancelledError):
            if result is None:  # closing the stream after its result is the normal end
                status = "cancelled"
                unanswered = await self._end_unanswered(
                    request, request_id, ctx, FINISH_CANCELLED,
                    "cancelled before it was answered (its client went away, or the daemon stopped it)",
                    received, first_text_at)
            raise
        except Exception as exc:
            translated = translate_backend_error(exc)
            if translated is None:
                status = "internal_error"
                unanswered = await self._end_unanswered(request, request_id, ctx, FINISH_ERROR,
                                                        f"failed: internal error ({type(exc).__name__})",
                                                        received, first_text_at)
                raise
            status = type(translated).__name__
            unanswered = await self._end_unanswered(request, request_id, ctx, FINISH_ERROR,
                                                    f"failed: {translated.message}", received, first_text_at)
            raise translated from exc
        finally:
            if slot is not None:
                slot.release()
            if claimed_id:
                # By now a result has reached the ledger's queue (if any), where contains() finds it.
                self._in_flight_ids.discard(request_id)
            self._log(request_id, mode, status, result or unanswered, time.perf_counter() - received)

    async def _events(self, handler: ModeHandler, ctx: ModeContext, mode: Mode) -> AsyncIterator[ModeEvent]:
        """The mode's events. A cloud call a guard refused before anything was sent, whose policy is to
        degrade, hands a request that has sent its client nothing yet to the edge, marked degraded: the
        gates let it through a moment before (another request took the breaker's one trial)."""
        fallback: Optional[ModeHandler] = None
        sent = False
        try:
            async with contextlib.aclosing(handler.run(ctx)) as events:
                async for event in events:
                    sent = True
                    yield event
        except CloudKeptOffError as exc:
            if sent or exc.degrade_reason is None:
                raise
            fallback = EdgeInsteadOfCloud(mode, exc.degrade_reason)
        if fallback is not None:
            async with contextlib.aclosing(fallback.run(ctx)) as events:
                async for event in events:
                    yield event

    def _handler(self, request: GenerateRequest, mode: Mode) -> ModeHandler:
        """The mode's handler, or the edge alone when a gate keeps this request off the cloud."""
        if mode in CLOUD_CAPABLE_MODES:
            for gate in self.cloud_gates:
                reason = gate.keep_off_cloud(request)  # a gate that refuses raises a RouterError here
                if reason is not None:
                    return EdgeInsteadOfCloud(mode, reason)
        return self.modes[mode]

    def _hand_to_sinks(self, request: GenerateRequest, result: GenerateResult) -> None:
        for sink in self.sinks:
            try:
                sink.record(request, result)
            except Exception:  # a sink's bug must not fail (or, on the cancel path, mask) the request
                self.logger.exception("a result sink failed", extra={"fields": {
                    "request_id": result.request_id, "sink": type(sink).__name__}})

    async def _end_unanswered(self, request: GenerateRequest, request_id: str, ctx: Optional[ModeContext],
                              finish_reason: str, reason: str, received: float,
                              first_text_at: Optional[float]) -> Optional[GenerateResult]:
        """A request that ended without an answer still hands its spend to the sinks (the ledger, Stats),
        when its backend calls used tokens. One that spent nothing (refused before any backend call, or
        by the backend before any token: a 429, a prompt too long) stays in the log only, and its
        request_id stays free for a retry. Returns the result it recorded, if any."""
        if ctx is None:
            return None
        try:
            await ctx.close_calls()
        finally:
            runs = ctx.runs
            spent = (any(run.prompt_tokens + run.completion_tokens > 0 for run in runs)
                     or any(call.cost_usd > 0 for call in ctx.info_calls))
            result = self._unanswered_result(request_id, ctx, finish_reason, reason, received, first_text_at)
            if spent:
                self._hand_to_sinks(request, result)
        return result if spent else None

    def _refuse_if_in_flight(self, request_id: str) -> None:
        if request_id in self._in_flight_ids:
            raise RequestIdInUseError(f"request_id {request_id!r} belongs to a request in flight; send a new "
                                      "request_id, or omit it and the router assigns one")

    async def _refuse_if_recorded(self, request_id: str) -> None:
        if self.recorded_ids is not None and await asyncio.to_thread(self.recorded_ids.contains, request_id):
            raise RequestIdInUseError(f"request_id {request_id!r} is already recorded in the ledger; send a new "
                                      "request_id, or omit it and the router assigns one")

    def _result(self, request_id: str, outcome: ModeOutcome, ctx: ModeContext, received: float,
                first_text_at: Optional[float], done: float) -> GenerateResult:
        runs = with_discarded_answers_as_drafts(ctx.runs, outcome.served_by)
        return self._assemble(request_id, ctx, runs, text=outcome.text, served_by=outcome.served_by,
                              decision=outcome.decision, finish_reason=outcome.finish_reason,
                              received=received, first_text_at=first_text_at, done=done,
                              citations=outcome.citations)

    def _unanswered_result(self, request_id: str, ctx: ModeContext, finish_reason: str, reason: str,
                           received: float, first_text_at: Optional[float]) -> GenerateResult:
        runs = ctx.runs
        # What its answer had so far: the latest answer call's text (a sample or a check is no answer).
        answers = [run for run in runs if run.purpose == RunPurpose.ANSWER]
        text = answers[-1].text if answers else ""
        return self._assemble(request_id, ctx, runs, text=text, served_by=BackendKind.UNSPECIFIED,
                              decision=Decision(mode=ctx.mode, reason=reason), finish_reason=finish_reason,
                              received=received, first_text_at=first_text_at, done=time.perf_counter())

    def _assemble(self, request_id: str, ctx: ModeContext, runs: tuple[BackendRun, ...], *, text: str,
                  served_by: BackendKind, decision: Decision, finish_reason: str, received: float,
                  first_text_at: Optional[float], done: float, citations: tuple[str, ...] = ()) -> GenerateResult:
        """A result priced from every run the request made, whatever each was for and however it ended."""
        edge_cost = sum(r.cost_usd for r in runs if r.backend == BackendKind.EDGE)
        cloud_cost = sum(r.cost_usd for r in runs if r.backend == BackendKind.CLOUD)
        info_calls = tuple(ctx.info_calls)
        info_cost = sum(call.cost_usd for call in info_calls)
        total = done - received
        edge = self.backends.edge
        cloud = self.backends.cloud
        return GenerateResult(
            request_id=request_id, text=text, served_by=served_by,
            # The edge's own runs name what generated them (its adapter too, which a swap may change).
            edge_model=next((r.model for r in runs if r.backend == BackendKind.EDGE), edge.name if edge else ""),
            cloud_model=cloud.name if cloud else "",
            runs=runs, cost_usd=edge_cost + cloud_cost + info_cost, edge_cost_usd=edge_cost,
            cloud_cost_usd=cloud_cost,
            latency=Latency(ttft_s=(first_text_at - received) if first_text_at else total, total_s=total,
                            edge_s=ctx.backend_seconds.get(BackendKind.EDGE, 0.0),
                            cloud_s=ctx.backend_seconds.get(BackendKind.CLOUD, 0.0),
                            info_s=sum(call.latency_s for call in info_calls)),
            decision=decision, finish_reason=finish_reason, info_calls=info_calls, info_cost_usd=info_cost,
            citations=citations)

    def _log(self, request_id: str, mode: Optional[Mode], status: str,
             result: Optional[GenerateResult], elapsed_s: float) -> None:
        fields: dict[str, object] = {"event": "request", "request_id": request_id,
                                     "mode": mode.name if mode else None, "status": status,
                                     "elapsed_s": round(elapsed_s, 4)}
        if result is not None:
            fields.update(served_by=result.served_by.name, cost_usd=result.cost_usd,
                          ttft_s=round(result.latency.ttft_s, 4),
                          tokens_in=sum(r.prompt_tokens for r in result.runs),
                          tokens_out=sum(r.completion_tokens for r in result.runs),
                          finish_reason=result.finish_reason)
        self.logger.info("request", extra={"fields": fields})
