"""The HTTP door's routes, as a Starlette app over the daemon's core.

- `GET /v1/models`: the `hybrid/...` model ids of the modes this daemon serves (action `info`).
- `POST /v1/chat/completions`: unary, or SSE with `stream: true` (action `generate`).

Each call is authenticated (`Authorization: Bearer <token>`) and authorized by the daemon's guard, made as its
principal, tracked among the daemon's requests in flight (one drain for every door), and answered with
OpenAI's JSON or error body. A streamed call's refusals (a limit, a bad value the core finds) are still HTTP
errors: the stream's first event is awaited before any header is sent. A client that goes away cancels its
request in every backend, and the cancelled calls are priced and recorded as through gRPC.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import uuid
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, Optional, Protocol, TypeVar

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from router.assembly.in_flight import InFlightCalls
from router.core.auth import Credential, Guard
from router.core.engine import Router
from router.domain.access import Action, Principal
from router.domain.errors import BackendUnavailableError, ErrorKind, InternalError, RouterError
from router.domain.types import BackendKind, DraftDiscarded, GenerateResult, Mode, TextDelta
from router.doors.http.errors import HttpRequestError, error_body, error_headers, error_status
from router.doors.http.openai_request import MODEL_MODES, ChatCall, parse_chat_call
from router.doors.http.openai_response import (ChunkWriter, completion_body, error_event, hybrid_headers,
                                               logprob_entries)

# JSON framing around the texts the core measures (server.max_request_bytes): a body beyond the limit plus
# this is refused unread.
BODY_FRAMING_BYTES = 64 * 1024
SHUTTING_DOWN = "the daemon is shutting down; retry against a running one"
T = TypeVar("T")


class RefusalCounter(Protocol):
    def refused(self, mode: Any, kind: Any) -> None: ...


@dataclasses.dataclass
class HttpDoorState:
    """What the routes need from the daemon. `accepting` turns False when the daemon begins to stop: a
    request that arrives on a kept-alive connection after that is refused with 503."""

    router: Router
    guard: Guard
    calls: InFlightCalls
    max_request_bytes: int
    logger: logging.Logger
    metrics: Optional[RefusalCounter] = None
    # The loaded models' names, for a stream's chunks before the decision names the one that answered.
    models: Callable[[], Mapping[BackendKind, str]] = dict
    accepting: bool = True


def build_app(state: HttpDoorState) -> Starlette:
    app = Starlette(routes=[Route("/v1/models", _handler(state, list_models), methods=["GET"]),
                            Route("/v1/chat/completions", _handler(state, chat_completions), methods=["POST"])])
    app.state.door = state
    return app


def typed_errors(logger: logging.Logger, endpoint: Callable[[Request], Awaitable[Response]]
                 ) -> Callable[[Request], Awaitable[Response]]:
    """The endpoint with every error answered in OpenAI's error JSON: a RouterError with its kind's status, and
    anything else (a bug) logged with its traceback and answered without it."""
    async def handle(request: Request) -> Response:
        try:
            return await endpoint(request)
        except RouterError as exc:
            return error_response(exc)
        except Exception:
            logger.exception("unexpected error while serving an HTTP request")
            return error_response(InternalError("internal error; see the daemon log"))
    return handle


def _handler(state: HttpDoorState, endpoint):
    async def accepting(request: Request) -> Response:
        if not state.accepting:
            raise BackendUnavailableError(SHUTTING_DOWN)
        return await endpoint(state, request)
    return typed_errors(state.logger, accepting)


def error_response(error: RouterError) -> JSONResponse:
    headers = error_headers(error)
    if error.kind is ErrorKind.UNAUTHENTICATED:
        headers["www-authenticate"] = "Bearer"
    return JSONResponse(error_body(error), status_code=error_status(error), headers=headers)


def _authorize(state: HttpDoorState, request: Request, action: Action) -> Principal:
    return state.guard.authorize(Credential(authorization=request.headers.get("authorization")), action)


async def list_models(state: HttpDoorState, request: Request) -> Response:
    _authorize(state, request, Action.INFO)
    served = set(state.router.implemented_modes)
    ids = [model for model, mode in MODEL_MODES.items() if mode is None or mode in served]
    return JSONResponse({"object": "list", "data": [
        {"id": model, "object": "model", "created": 0, "owned_by": "hybrid-router",
         "mode": (MODEL_MODES[model] or state.router.default_mode).name} for model in ids]})


async def chat_completions(state: HttpDoorState, request: Request) -> Response:
    call: Optional[ChatCall] = None
    try:
        principal = _authorize(state, request, Action.GENERATE)
        body = await _read_json(request, state.max_request_bytes)
        call = parse_chat_call(body, request.headers, principal_name=principal.name)
        call = dataclasses.replace(call, request=dataclasses.replace(
            call.request, caller=state.guard.caller_for(principal, call.request.caller)))
    except RouterError as exc:  # refused at the door, before the core saw it (the core counts its own)
        if state.metrics is not None:
            state.metrics.refused(call.request.mode if call is not None else Mode.UNSPECIFIED, exc.kind)
        raise
    if call.stream:
        return await _streamed(state, request, call)
    return await _unary(state, request, call)


async def _read_json(request: Request, max_request_bytes: int) -> Any:
    # JSON may escape each character of the texts the core measures into six bytes (\uXXXX): the core's own
    # check (router/domain/validation.py) is the exact one; this only keeps a huge body from being read.
    limit = 6 * max_request_bytes + BODY_FRAMING_BYTES
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HttpRequestError(f"the body is {declared} bytes; the limit is {limit} (from server.max_request_bytes)",
                               code="request_too_large")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HttpRequestError(f"the body is over {limit} bytes (from server.max_request_bytes)",
                                       code="request_too_large")
            chunks.append(chunk)
    except ClientDisconnect:
        raise HttpRequestError("the client went away while sending the body", kind=ErrorKind.CANCELLED) from None
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise HttpRequestError(f"the body is not valid JSON: {reason}", code="invalid_json") from None


async def _until_disconnect(request: Request) -> None:
    """Returns when the client closes its connection (the body has been read: only a disconnect is left)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _or_disconnect(request: Request, work: "asyncio.Future[T]", on_disconnect: Callable[[], None]) -> T:
    """Awaits `work`. If the client goes first, `on_disconnect()` stops the work, which is then awaited to its
    end (the router records the cancel before this returns) and CancelledError is raised."""
    watcher = asyncio.create_task(_until_disconnect(request))
    try:
        await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not work.done():
            on_disconnect()
            await asyncio.wait({work})
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    return work.result()


async def _tracked(calls: InFlightCalls, step: Callable[[], Awaitable[T]]) -> T:
    """One step of router work, as a task of its own that the daemon's drain sees: a shutdown that cuts it
    makes it raise the cut's error (a 503 that says why), a client that goes away cancels it."""
    with calls.track() as tracked:
        return await tracked.run(step)


async def _unary(state: HttpDoorState, request: Request, call: ChatCall) -> Response:
    async def answer() -> tuple[GenerateResult, list[TextDelta]]:
        pieces: list[TextDelta] = []
        async with contextlib.aclosing(state.router.stream(call.request)) as events:
            async for event in events:
                if isinstance(event, TextDelta):
                    pieces.append(event)
                elif isinstance(event, DraftDiscarded):
                    pieces.clear()
                elif isinstance(event, GenerateResult):
                    return event, pieces
        raise InternalError("the mode ended without a result")

    work = asyncio.create_task(_tracked(state.calls, answer))
    try:
        result, pieces = await _or_disconnect(request, work, work.cancel)
    except asyncio.CancelledError:
        if asyncio.current_task().cancelling():
            raise
        return Response(status_code=499)  # the client is gone; the router recorded the cancel
    body = completion_body(result, logprobs=logprob_entries(pieces) if call.logprobs else None)
    return JSONResponse(body, headers=hybrid_headers(result))


class StreamPump:
    """Drives one router stream in a task of its own, tracked by the daemon's drain from its first event to
    its last, and hands the events over through a queue.

    The SSE body that reads the queue runs in Starlette's task group, which cancels it again and again once
    the client has gone: router clean-up run there would be cut at every await (a cancelled call would be
    recorded with an estimated price). So that body only reads; the pump, cancelled once, cleans up in full.
    """

    _END = object()

    def __init__(self, calls: InFlightCalls, events: AsyncIterator[object]) -> None:
        self._events = events
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self.task = asyncio.create_task(self._drive(calls))

    async def _drive(self, calls: InFlightCalls) -> None:
        async with contextlib.aclosing(self._events) as events:
            with calls.track() as tracked:
                while True:
                    try:
                        event = await tracked.run(events.__anext__)
                    except StopAsyncIteration:
                        self._queue.put_nowait(self._END)
                        return
                    except RouterError as exc:
                        self._queue.put_nowait(exc)
                        return
                    self._queue.put_nowait(event)
                    if isinstance(event, GenerateResult):
                        return

    async def next(self) -> object:
        """The next event; a RouterError the stream ended with is raised; None at an end without a result."""
        getter = asyncio.ensure_future(self._queue.get())
        await asyncio.wait({getter, self.task}, return_when=asyncio.FIRST_COMPLETED)
        if not getter.done():  # the pump ended (or failed) without a word for us
            getter.cancel()
            if self.task.exception() is not None:
                raise self.task.exception()
            return None
        item = getter.result()
        if isinstance(item, RouterError):
            raise item
        return None if item is self._END else item


async def _streamed(state: HttpDoorState, request: Request, call: ChatCall) -> Response:
    pump = StreamPump(state.calls, state.router.stream(call.request))
    first_event = asyncio.ensure_future(pump.next())
    try:
        first = await _or_disconnect(request, first_event, pump.task.cancel)
    except asyncio.CancelledError:
        if not pump.task.done():
            pump.task.cancel()
            await asyncio.wait({pump.task})
        if asyncio.current_task().cancelling():
            raise
        return Response(status_code=499)
    # Every chunk carries one id, known before the request is; the request's own id is in `hybrid`.
    writer = ChunkWriter(call.request.request_id or uuid.uuid4().hex, models=state.models(),
                         include_usage=call.include_usage, logprobs=call.logprobs)
    return StreamingResponse(_sse(pump, first, writer), media_type="text/event-stream",
                             headers={"cache-control": "no-cache", "x-accel-buffering": "no"})


async def _sse(pump: StreamPump, first: object, writer: ChunkWriter) -> AsyncIterator[str]:
    """The stream's events as SSE. When the client goes away Starlette cancels this, and the pump is cancelled
    once: it cancels every backend call, and the router records the request as cancelled, priced."""
    try:
        yield writer.first()
        event: Optional[object] = first
        while event is not None:
            for line in _render(writer, event):
                yield line
            if isinstance(event, GenerateResult):
                return
            try:
                event = await pump.next()
            except RouterError as exc:
                yield error_event(error_body(exc))
                return
        yield error_event(error_body(InternalError("the mode ended without a result")))
    finally:
        if not pump.task.done():
            pump.task.cancel()


def _render(writer: ChunkWriter, event: object) -> list[str]:
    if isinstance(event, TextDelta):
        return [writer.text(event)] if event.text else []
    if isinstance(event, DraftDiscarded):
        return [writer.discard(event)]
    if isinstance(event, GenerateResult):
        return writer.last(event)
    return []
