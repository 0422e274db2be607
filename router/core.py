"""The request's life: validate, pick the mode, run it, record the result.

The core speaks plain dataclasses (router/types.py); gRPC is one adapter over it.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import AsyncIterator, Mapping, Optional, Protocol, Sequence

from router.backends import Backend, translate_backend_error
from router.config import ServerSettings
from router.errors import InternalError, NotReadyError, RequestIdInUseError, RouterError
from router.modes.base import ModeContext, ModeHandler, ModeOutcome
from router.pricing import CostModel
from router.types import (BackendKind, Decision, GenerateRequest, GenerateResult, Latency, Mode,
                          StreamEvent, TextDelta)
from router.validation import resolve_mode, validate_request


class ResultSink(Protocol):
    """Receives every finished result; must not block (the ledger queues it)."""

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
    sinks: Sequence[ResultSink] = ()
    # A client-supplied request_id must be new: in flight here or recorded there, it is refused, so
    # that no answer (and no cloud spend) is left out of the ledger as a duplicate.
    recorded_ids: Optional[RecordedIds] = None
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("hybrid_router.requests"))
    ready: bool = False
    _in_flight_ids: set[str] = field(default_factory=set, init=False, repr=False)

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
        claimed_id = False
        try:
            mode = resolve_mode(request, self.default_mode, self.modes)
            params = validate_request(request, self.settings)
            if not self.ready:
                raise NotReadyError("the daemon is still loading its models; retry when health reports SERVING")
            if request.request_id:  # the router's own uuid4 ids need no check
                self._refuse_if_in_flight(request_id)
                # Claimed before the first await, so a concurrent twin is refused by the check above.
                self._in_flight_ids.add(request_id)
                claimed_id = True
                await self._refuse_if_recorded(request_id)
            ctx = ModeContext(request=request, mode=mode, params=params,
                              backends=self.backends.as_dict(), costs=self.costs)
            first_text_at: Optional[float] = None
            outcome: Optional[ModeOutcome] = None
            async with contextlib.aclosing(self.modes[mode].run(ctx)) as events:
                async for event in events:
                    if isinstance(event, TextDelta):
                        if first_text_at is None:
                            first_text_at = time.perf_counter()
                        yield event
                    else:
                        outcome = event
            if outcome is None:
                raise InternalError(f"mode {mode.name} ended without an outcome")
            done = time.perf_counter()
            result = self._result(request_id, outcome, ctx, received, first_text_at, done)
            for sink in self.sinks:
                sink.record(request, result)
            yield result
        except RouterError as exc:
            status = type(exc).__name__
            raise
        except (GeneratorExit, asyncio.CancelledError):
            if result is None:  # closing the stream after its result is the normal end
                status = "cancelled"
            raise
        except Exception as exc:
            translated = translate_backend_error(exc)
            if translated is None:
                status = "internal_error"
                raise
            status = type(translated).__name__
            raise translated from exc
        finally:
            if claimed_id:
                # By now a result has reached the ledger's queue (if any), where contains() finds it.
                self._in_flight_ids.discard(request_id)
            self._log(request_id, mode, status, result, time.perf_counter() - received)

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
        edge_cost = sum(r.cost_usd for r in outcome.runs if r.backend == BackendKind.EDGE)
        cloud_cost = sum(r.cost_usd for r in outcome.runs if r.backend == BackendKind.CLOUD)
        total = done - received
        edge = self.backends.edge
        cloud = self.backends.cloud
        return GenerateResult(
            request_id=request_id, text=outcome.text, served_by=outcome.served_by,
            edge_model=edge.name if edge else "", cloud_model=cloud.name if cloud else "",
            runs=outcome.runs, cost_usd=edge_cost + cloud_cost, edge_cost_usd=edge_cost,
            cloud_cost_usd=cloud_cost,
            latency=Latency(ttft_s=(first_text_at - received) if first_text_at else total, total_s=total,
                            edge_s=ctx.backend_seconds.get(BackendKind.EDGE, 0.0),
                            cloud_s=ctx.backend_seconds.get(BackendKind.CLOUD, 0.0)),
            decision=outcome.decision, finish_reason=outcome.finish_reason)

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
