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
from typing import Any, AsyncIterator, Optional, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from router.assembly.in_flight import InFlightCalls
from router.core.auth import Credential, Guard
from router.core.engine import Router
from router.domain.access import Action, Principal
from router.domain.errors import BackendUnavailableError, ErrorKind, InternalError, RouterError
from router.domain.types import BackendKind, DraftDiscarded, GenerateResult, TextDelta
from router.doors.http.errors import HttpRequestError, error_body, error_headers, error_status
from router.doors.http.openai_request import MODEL_MODES, ChatCall, parse_chat_call
from router.doors.http.openai_response import (ChunkWriter, completion_body, error_event, hybrid_headers,
                                               logprob_entry)

# JSON framing around the texts the core measures (server.max_request_bytes): a body beyond the limit plus
# this is refused unread.
BODY_FRAMING_BYTES = 64 * 1024
SHUTTING_DOWN = "the daemon is shutting down; retry against a running one"


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
    accepting: bool = True


def build_app(state: HttpDoorState) -> Starlette:
    app = Starlette(routes=[Route("/v1/models", _handler(state, list_models), methods=["GET"]),
                            Route("/v1/chat/completions", _handler(state, chat_completions), methods=["POST"])])
    app.state.door = state
    return app


def _handler(state: HttpDoorState, endpoint):
    async def handle(request: Request) -> Response:
        try:
            if not state.accepting:
                raise BackendUnavailableError(SHUTTING_DOWN)
            return await endpoint(state, request)
        except RouterError as exc:
            return error_response(exc)
        except Exception:  # a bug: logged with its traceback, answered without it
            state.logger.exception("unexpected error while serving an HTTP request")
            return error_response(InternalError("internal error; see the daemon log"))
    return handle


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
    principal = _authorize(state, request, Action.GENERATE)
    body = await _read_json(request, state.max_request_bytes + BODY_FRAMING_BYTES)
    call = parse_chat_call(body, request.headers, principal_name=principal.name)
    call = dataclasses.replace(call, request=dataclasses.replace(
        call.request, caller=state.guard.caller_for(principal, call.request.caller)))
    models = {BackendKind.EDGE: "", BackendKind.CLOUD: ""}
    try:
        if call.stream:
            return await _streamed(state, request, call, models)
        return await _unary(state, request, call)
    except RouterError as exc:
        if state.metrics is not None and not isinstance(exc, HttpRequestError):
            state.metrics.refused(call.request.mode, exc.kind)
        raise


async def _read_json(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HttpRequestError(f"the body is {declared} bytes; the limit is {limit} (server.max_request_bytes plus "
                               "JSON framing)", code="request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpRequestError(f"the body is over {limit} bytes (server.max_request_bytes plus JSON framing)",
                                   code="request_too_large")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, UnicodeDecodeError) as exc:
        raise HttpRequestError(f"the body is not valid JSON: {exc}", code="invalid_json") from None


async def _until_disconnect(request: Request) -> None:
    """Returns when the client closes its connection (the body has been read: only a disconnect is left)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _or_disconnect(request: Request, work: asyncio.Task) -> Any:
    """Awaits `work`; cancels it (the router records the cancel) if the client goes first."""
    watcher = asyncio.create_task(_until_disconnect(request))
    try:
        await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not work.done():
            work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    return await work


async def _unary(state: HttpDoorState, request: Request, call: ChatCall) -> Response:
    with state.calls.track() as tracked:
        async def answer() -> tuple[GenerateResult, list[dict[str, Any]]]:
            pieces: list[dict[str, Any]] = []
            async with contextlib.aclosing(state.router.stream(call.request)) as events:
                async for event in events:
                    if isinstance(event, TextDelta) and call.logprobs:
                        pieces.append(logprob_entry(event))
                    elif isinstance(event, DraftDiscarded):
                        pieces.clear()
                    elif isinstance(event, GenerateResult):
                        return event, pieces
            raise InternalError("the mode ended without a result")

        work = asyncio.create_task(tracked.run(answer))
        try:
            result, pieces = await _or_disconnect(request, work)
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():
                raise
            return Response(status_code=499)  # the client is gone; the router recorded the cancel
    body = completion_body(result, logprobs=pieces if call.logprobs else None)
    return JSONResponse(body, headers=hybrid_headers(result))


async def _streamed(state: HttpDoorState, request: Request, call: ChatCall,
                    models: dict[BackendKind, str]) -> Response:
    events = state.router.stream(call.request)
    with state.calls.track() as tracked:
        work = asyncio.create_task(tracked.run(events.__anext__))
        try:
            first = await _or_disconnect(request, work)
        except asyncio.CancelledError:
            await events.aclose()
            if asyncio.current_task().cancelling():
                raise
            return Response(status_code=499)
        except BaseException:
            await events.aclose()
            raise
    # Every chunk carries one id, known before the request is; the request's own id is in `hybrid`.
    writer = ChunkWriter(call.request.request_id or uuid.uuid4().hex, models=models, include_usage=call.include_usage,
                         logprobs=call.logprobs)
    return StreamingResponse(_sse(state, events, first, writer), media_type="text/event-stream",
                             headers={"cache-control": "no-cache", "x-accel-buffering": "no"})


async def _sse(state: HttpDoorState, events: AsyncIterator[object], first: object,
               writer: ChunkWriter) -> AsyncIterator[str]:
    """The stream's events as SSE. Starlette cancels this when the client goes away: closing `events` then
    cancels every backend call, and the router records the request as cancelled."""
    async with contextlib.aclosing(events):
        with state.calls.track() as tracked:
            yield writer.first()
            event: Optional[object] = first
            while event is not None:
                for line in _render(writer, event):
                    yield line
                if isinstance(event, GenerateResult):
                    return
                try:
                    event = await tracked.run(events.__anext__)
                except StopAsyncIteration:
                    event = None
                except RouterError as exc:
                    yield error_event(error_body(exc))
                    return
            yield error_event(error_body(InternalError("the mode ended without a result")))


def _render(writer: ChunkWriter, event: object) -> list[str]:
    if isinstance(event, TextDelta):
        return [writer.text(event)] if event.text else []
    if isinstance(event, DraftDiscarded):
        return [writer.discard(event)]
    if isinstance(event, GenerateResult):
        return writer.last(event)
    return []
