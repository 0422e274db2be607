"""The gRPC servicer: protobuf <-> core types, and router errors -> status codes, at this one boundary."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable, Optional, Protocol

import grpc

from router.assembly.in_flight import InFlightCalls
from router.doors import wire
from router.doors.grpc_credentials import credential_of
from router.core.auth import Guard
from router.core.engine import Router
from router.domain.access import Action, Principal
from router.doors.grpc_errors import RETRY_AFTER_METADATA_KEY, status_of
from router.domain.errors import ErrorKind, InvalidRequestError, NotFoundError, PermissionDeniedError, RouterError
from router.domain.types import DaemonInfo, GenerateRequest, StatsReport
from router.v1 import router_pb2 as pb
from router.v1 import router_pb2_grpc

MAX_UNIX_TIME_S = 253402300800.0  # 10000-01-01: beyond it datetime cannot represent a time


class LedgerAccess(Protocol):
    """What the service needs of the daemon's ledger; blocking calls, run in a thread."""

    def feedback(self, request_id: str, *, score: Optional[float], thumbs_up: Optional[bool],
                 corrected_answer: Optional[str]) -> None: ...

    def stats(self, since_unix_s: Optional[float]) -> StatsReport: ...

    def owner(self, request_id: str) -> Optional[str]:
        """The principal who made the request, or None when it is not recorded."""
        ...


class RouterService(router_pb2_grpc.RouterServicer):
    def __init__(self, router: Router, info: Callable[[], DaemonInfo], ledger: LedgerAccess, *,
                 guard: Guard, max_request_bytes: int, logger: logging.Logger, calls: Optional[InFlightCalls] = None,
                 reload: Optional[Callable[[Optional[Path]], Awaitable[tuple[str, str]]]] = None,
                 use_adapter: Optional[Callable[[str], Awaitable[tuple[str, str]]]] = None,
                 refused: Optional[Callable[[int, ErrorKind], None]] = None) -> None:
        """`reload`: loads PRE_ARBITRATION's router from a directory (None: the configured one) and
        returns (previous name, new name); see Daemon.reload_router. `guard`: who each call is, and
        whether its role allows the RPC (router/domain/access.py's table). `use_adapter`: swaps the
        edge's LoRA adapter to a version of the daemon's store and returns the edge's name before and after;
        see Daemon.use_adapter."""
        self._router = router
        self._use_adapter = use_adapter
        self._guard = guard
        self._reload = reload
        self._refused = refused  # counts the refusals made here (the metrics)
        self.calls = calls if calls is not None else InFlightCalls()
        self._info = info
        self._ledger = ledger
        self._max_request_bytes = max_request_bytes
        self._logger = logger

    def _admit(self, message: pb.GenerateRequest, context: grpc.aio.ServicerContext) -> GenerateRequest:
        """The Generate request as the core sees it, made as its principal; a refusal here (no credential,
        no right, a group not held) is counted, as the core counts its own."""
        try:
            return self._decode(message, self._authorize(context, Action.GENERATE))
        except RouterError as exc:
            if self._refused is not None:
                self._refused(message.mode, exc.kind)
            raise

    def _authorize(self, context: grpc.aio.ServicerContext, action: Action) -> Principal:
        return self._guard.authorize(credential_of(context), action)

    def _decode(self, message: pb.GenerateRequest, principal: Principal) -> GenerateRequest:
        """The request as the core sees it, its caller replaced by the principal: the name is the
        principal's, and the groups those of the principal's that the request named (all when none)."""
        # Its size is checked in the core (router/domain/validation.py), as every door's request is.
        request = wire.request_from_proto(message)
        return dataclasses.replace(request, caller=self._guard.caller_for(principal, request.caller))

    async def _abort(self, context: grpc.aio.ServicerContext, exc: BaseException) -> None:
        if isinstance(exc, RouterError):
            if exc.retry_after_s is not None:
                context.set_trailing_metadata(((RETRY_AFTER_METADATA_KEY, f"{exc.retry_after_s:g}"),))
            await context.abort(status_of(exc), exc.message)
        self._logger.exception("unexpected error while serving a request", exc_info=exc)
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the daemon log")

    async def Generate(self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext) -> pb.GenerateResult:
        with self.calls.track() as call:
            try:
                decoded = self._admit(request, context)
                result = await call.run(lambda: self._router.generate(decoded))
            except Exception as exc:  # every error leaves through _abort, typed
                await self._abort(context, exc)
                raise  # unreachable: abort raises
        return wire.result_to_proto(result)

    async def GenerateStream(self, request: pb.GenerateRequest,
                             context: grpc.aio.ServicerContext) -> AsyncIterator[pb.GenerateStreamResponse]:
        with self.calls.track() as call:
            try:
                decoded = self._admit(request, context)
                async with contextlib.aclosing(self._router.stream(decoded)) as events:
                    while (event := await call.run(lambda: anext(events, None))) is not None:
                        yield wire.stream_event_to_proto(event)  # text, a discarded draft, the result
            except Exception as exc:
                await self._abort(context, exc)

    async def Info(self, request: pb.InfoRequest, context: grpc.aio.ServicerContext) -> pb.InfoResponse:
        try:
            self._authorize(context, Action.INFO)
        except Exception as exc:
            await self._abort(context, exc)
        return wire.info_to_proto(self._info())

    async def Feedback(self, request: pb.FeedbackRequest, context: grpc.aio.ServicerContext) -> pb.FeedbackResponse:
        def optional(field: str) -> Optional[object]:
            return getattr(request, field) if request.HasField(field) else None

        try:
            principal = self._authorize(context, Action.FEEDBACK)
            if not request.request_id:
                raise InvalidRequestError("request_id is empty; give the id from the result you are rating")
            size = request.ByteSize()
            if size > self._max_request_bytes:
                raise InvalidRequestError(f"the feedback is {size} bytes; the limit is {self._max_request_bytes} "
                                          "bytes (server.max_request_bytes); send a shorter corrected_answer")
            await self._refuse_unless_owner(principal, request.request_id)
            await asyncio.to_thread(self._ledger.feedback, request.request_id, score=optional("score"),
                                    thumbs_up=optional("thumbs_up"), corrected_answer=optional("corrected_answer"))
        except Exception as exc:
            await self._abort(context, exc)
        return pb.FeedbackResponse(request_id=request.request_id)

    async def _refuse_unless_owner(self, principal: Principal, request_id: str) -> None:
        """A label becomes training data: only the request's own principal, or an admin, may give one."""
        if principal.may(Action.STATS):  # an admin: labels any request (the ledger says if it exists)
            return
        owner = await asyncio.to_thread(self._ledger.owner, request_id)
        if owner is None:
            raise NotFoundError(f"no request {request_id!r} is recorded; give the id from your result")
        if owner != principal.name:
            raise PermissionDeniedError(f"request {request_id!r} was made by another principal; only its own "
                                        "principal or an admin may label it")

    async def Reload(self, request: pb.ReloadRequest, context: grpc.aio.ServicerContext) -> pb.ReloadResponse:
        try:
            self._authorize(context, Action.RELOAD)
            if self._reload is None:
                raise InvalidRequestError("this daemon cannot reload its router")
            previous, current = await self._reload(Path(request.model_dir) if request.model_dir else None)
        except Exception as exc:
            await self._abort(context, exc)
        return pb.ReloadResponse(previous=previous, current=current)

    async def UseAdapter(self, request: pb.UseAdapterRequest,
                         context: grpc.aio.ServicerContext) -> pb.UseAdapterResponse:
        try:
            # Like Reload: it loads a file from the daemon's disk, and changes what every caller is served.
            self._authorize(context, Action.RELOAD)
            if self._use_adapter is None:
                raise InvalidRequestError("this daemon cannot swap its edge adapter")
            if len(request.version) > 32:
                raise InvalidRequestError("version is a store version such as v0003, \"none\" or empty")
            previous, current = await self._use_adapter(request.version)
        except Exception as exc:
            await self._abort(context, exc)
        return pb.UseAdapterResponse(previous=previous, current=current)

    async def Stats(self, request: pb.StatsRequest, context: grpc.aio.ServicerContext) -> pb.StatsResponse:
        since = request.since_unix_s if request.HasField("since_unix_s") else None
        try:
            self._authorize(context, Action.STATS)
            if since is not None and not 0 <= since < MAX_UNIX_TIME_S:
                raise InvalidRequestError(f"since_unix_s must be a Unix time between 0 and {MAX_UNIX_TIME_S:.0f} "
                                          f"(got {since})")
            report = await asyncio.to_thread(self._ledger.stats, since)
        except Exception as exc:
            await self._abort(context, exc)
        return wire.stats_to_proto(report)
