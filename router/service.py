"""The gRPC servicer: protobuf <-> core types, and router errors -> status codes, at this one boundary."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import AsyncIterator, Callable, Optional, Protocol

import grpc

from router import wire
from router.core import Router
from router.errors import RETRY_AFTER_METADATA_KEY, InvalidRequestError, RouterError
from router.types import DaemonInfo, GenerateRequest, GenerateResult, StatsReport
from router.v1 import router_pb2 as pb
from router.v1 import router_pb2_grpc

MAX_UNIX_TIME_S = 253402300800.0  # 10000-01-01: beyond it datetime cannot represent a time

class LedgerAccess(Protocol):
    """What the service needs of the daemon's ledger; blocking calls, run in a thread."""

    def feedback(self, request_id: str, *, score: Optional[float], thumbs_up: Optional[bool],
                 corrected_answer: Optional[str]) -> None: ...

    def stats(self, since_unix_s: Optional[float]) -> StatsReport: ...


class RouterService(router_pb2_grpc.RouterServicer):
    def __init__(self, router: Router, info: Callable[[], DaemonInfo], ledger: LedgerAccess, *,
                 max_request_bytes: int, logger: logging.Logger) -> None:
        self._router = router
        self._info = info
        self._ledger = ledger
        self._max_request_bytes = max_request_bytes
        self._logger = logger

    def _decode(self, message: pb.GenerateRequest) -> GenerateRequest:
        size = message.ByteSize()
        if size > self._max_request_bytes:
            raise InvalidRequestError(f"the request is {size} bytes; the limit is {self._max_request_bytes} "
                                      "bytes (server.max_request_bytes); send a shorter conversation")
        return wire.request_from_proto(message)

    async def _abort(self, context: grpc.aio.ServicerContext, exc: BaseException) -> None:
        if isinstance(exc, RouterError):
            if exc.retry_after_s is not None:
                context.set_trailing_metadata(((RETRY_AFTER_METADATA_KEY, f"{exc.retry_after_s:g}"),))
            await context.abort(exc.code, exc.message)
        self._logger.exception("unexpected error while serving a request", exc_info=exc)
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the daemon log")

    async def Generate(self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext) -> pb.GenerateResult:
        try:
            result = await self._router.generate(self._decode(request))
        except Exception as exc:  # every error leaves through _abort, typed
            await self._abort(context, exc)
            raise  # unreachable: abort raises
        return wire.result_to_proto(result)

    async def GenerateStream(self, request: pb.GenerateRequest,
                             context: grpc.aio.ServicerContext) -> AsyncIterator[pb.GenerateStreamResponse]:
        try:
            async with contextlib.aclosing(self._router.stream(self._decode(request))) as events:
                async for event in events:
                    if isinstance(event, GenerateResult):
                        yield pb.GenerateStreamResponse(result=wire.result_to_proto(event))
                    else:
                        yield wire.delta_to_proto(event)
        except Exception as exc:
            await self._abort(context, exc)

    async def Info(self, request: pb.InfoRequest, context: grpc.aio.ServicerContext) -> pb.InfoResponse:
        return wire.info_to_proto(self._info())

    async def Feedback(self, request: pb.FeedbackRequest, context: grpc.aio.ServicerContext) -> pb.FeedbackResponse:
        def optional(field: str) -> Optional[object]:
            return getattr(request, field) if request.HasField(field) else None

        try:
            if not request.request_id:
                raise InvalidRequestError("request_id is empty; give the id from the result you are rating")
            await asyncio.to_thread(self._ledger.feedback, request.request_id, score=optional("score"),
                                    thumbs_up=optional("thumbs_up"), corrected_answer=optional("corrected_answer"))
        except Exception as exc:
            await self._abort(context, exc)
        return pb.FeedbackResponse(request_id=request.request_id)

    async def Stats(self, request: pb.StatsRequest, context: grpc.aio.ServicerContext) -> pb.StatsResponse:
        since = request.since_unix_s if request.HasField("since_unix_s") else None
        try:
            if since is not None and not 0 <= since < MAX_UNIX_TIME_S:
                raise InvalidRequestError(f"since_unix_s must be a Unix time between 0 and {MAX_UNIX_TIME_S:.0f} "
                                          f"(got {since})")
            report = await asyncio.to_thread(self._ledger.stats, since)
        except Exception as exc:
            await self._abort(context, exc)
        return wire.stats_to_proto(report)
