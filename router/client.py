"""The SDK: `RouterClient` and `AsyncRouterClient`, with the same methods.

gRPC status codes become the typed exceptions of router/domain/errors.py, so callers catch, for example,
`InvalidRequestError` or `RateLimitedError` instead of inspecting status codes.

`stream()` yields the answer's TextDeltas and ends with `stream.result`, the final answer. A mode may
stream a draft and then discard it for another backend's answer (a cascade); `stream.events()` yields
that DraftDiscarded among the TextDeltas, and `stream.text` is the answer so far without the draft
(see GenerateStream). A caller that ignores it still gets the final answer in `stream.result`.
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import AsyncIterator, Iterator, Mapping, Optional, Sequence, Union

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from router.assembly.grpc_channels import ChannelTrust, InsecureCredentialError, is_local_address, read_token_file
from router.doors import wire
from router.domain.config import AuthSettings
from router.doors.grpc_errors import RETRY_AFTER_METADATA_KEY, error_from_status
from router.domain.errors import InvalidRequestError, NotReadyError, RouterError
from router.domain.types import (Caller, ChatMessage, DaemonInfo, DraftDiscarded, GenerateRequest, GenerateResult, Mode,
                          StatsReport, TextDelta)
from router.v1 import router_pb2 as pb
from router.v1 import router_pb2_grpc

MessagesLike = Sequence[Union[ChatMessage, Mapping[str, str]]]
# Where a daemon on this machine writes its local admin token on first start (auth.local_token_file's
# default): read when the client is given no token, as Jupyter's clients find its server's token.
DEFAULT_TOKEN_FILE = AuthSettings.model_fields["local_token_file"].default


def client_trust(token: Optional[str], token_file: Optional[Path], ca_file: Optional[Path],
                 client_cert_file: Optional[Path], client_key_file: Optional[Path],
                 target: Optional[str] = None) -> ChannelTrust:
    """`token`, else the one in `token_file`; with neither, this machine's local admin token, but only for
    a daemon on this machine (`target` local): it reads every group, and must not reach another host."""
    if token is None and token_file is not None:
        token = read_token_file(token_file)
    elif token is None and target is not None and is_local_address(target):
        token = read_token_file(DEFAULT_TOKEN_FILE)
    return ChannelTrust(token=token, ca_file=ca_file, client_cert_file=client_cert_file,
                        client_key_file=client_key_file)


def build_request(request: Optional[GenerateRequest] = None, *, prompt: Optional[str] = None,
                  messages: Optional[MessagesLike] = None, mode: Union[Mode, str, int] = Mode.UNSPECIFIED,
                  max_tokens: Optional[int] = None, temperature: Optional[float] = None,
                  stop: Sequence[str] = (), request_id: str = "", metadata: Optional[Mapping[str, str]] = None,
                  reference_answer: Optional[str] = None, seed: Optional[int] = None,
                  caller: Optional[Caller] = None, stream_draft: Optional[bool] = None) -> GenerateRequest:
    """One request from either a ready GenerateRequest, a prompt, or chat messages. `caller`: whose
    documents retrieval may read (EDGE_RAG_CLOUD_INFO, the agent's search); unset, public ones only.
    `stream_draft`: whether a cascade streams the edge's draft before it is judged; unset, the daemon's
    arbitration.stream_draft."""
    if request is not None:
        return request
    if (prompt is None) == (messages is None):
        raise TypeError("give exactly one of prompt= or messages=")
    if isinstance(mode, str):
        try:
            mode = Mode.parse(mode)
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from None
    chat = ((ChatMessage("user", prompt),) if prompt is not None else
            tuple(m if isinstance(m, ChatMessage) else ChatMessage(m["role"], m["content"]) for m in messages))
    return GenerateRequest(messages=chat, max_tokens=max_tokens, temperature=temperature, stop=tuple(stop),
                           mode=mode, request_id=request_id,
                           metadata=dict(metadata or {}), reference_answer=reference_answer, seed=seed,
                           caller=caller or Caller(), stream_draft=stream_draft)


def encode_request(request: Optional[GenerateRequest], fields: Mapping[str, object]) -> pb.GenerateRequest:
    """The wire request; a value the wire cannot carry (a missing key, a wrong type, an out-of-range
    integer) is an InvalidRequestError here, before anything is sent."""
    try:
        return wire.request_to_proto(build_request(request, **fields))
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidRequestError(f"the request cannot be encoded: {type(exc).__name__}: {exc}") from None


def _translate(exc: grpc.RpcError) -> RouterError:
    details = exc.details() or ""
    if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details:
        # gRPC's own message-size cap, not a rate limit: retrying the same request cannot help.
        return InvalidRequestError(f"the request is too large for the daemon (its server.max_request_bytes): "
                                   f"{details}; send a shorter conversation")
    retry_after = None
    trailing = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    for key, value in trailing or ():
        if key == RETRY_AFTER_METADATA_KEY:
            retry_after = float(value)
    return error_from_status(exc.code(), exc.details() or "", retry_after)


def _channel_options() -> list[tuple[str, int]]:
    return [("grpc.max_receive_message_length", 64 * 2**20), ("grpc.max_send_message_length", 64 * 2**20)]


def _feedback_request(request_id: str, score: Optional[float], thumbs_up: Optional[bool],
                      corrected_answer: Optional[str]) -> pb.FeedbackRequest:
    message = pb.FeedbackRequest(request_id=request_id)
    if score is not None:
        message.score = score
    if thumbs_up is not None:
        message.thumbs_up = thumbs_up
    if corrected_answer is not None:
        message.corrected_answer = corrected_answer
    return message


def _stats_request(since_unix_s: Optional[float]) -> pb.StatsRequest:
    return pb.StatsRequest(since_unix_s=since_unix_s) if since_unix_s is not None else pb.StatsRequest()


# What a stream's events() yields: the answer's text, or word that text streamed so far is discarded.
AnswerEvent = Union[TextDelta, DraftDiscarded]


class _StreamedAnswer:
    """What both stream classes keep as messages arrive: the answer's text so far, and the final result."""

    def __init__(self) -> None:
        self.result: Optional[GenerateResult] = None
        self._deltas: list[TextDelta] = []

    @property
    def text(self) -> str:
        """The answer so far: the text streamed, less the drafts the daemon discarded."""
        return "".join(delta.text for delta in self._deltas)

    def _take(self, message: pb.GenerateStreamResponse) -> Optional[AnswerEvent]:
        """Records one message; returns the event to hand the caller, or None for the result and for an
        event this SDK does not know (a newer daemon's), which it skips."""
        event = wire.stream_event_from_proto(message)
        if isinstance(event, GenerateResult):
            self.result = event
            return None
        if isinstance(event, DraftDiscarded):
            self._deltas = [delta for delta in self._deltas if delta.backend != event.discarded]
        elif isinstance(event, TextDelta):
            self._deltas.append(event)
        return event


class GenerateStream(_StreamedAnswer):
    """A streamed answer: iterate it for TextDeltas; `result` holds the GenerateResult (always the final
    answer) once the stream ends; `text` is the answer so far; `cancel()` stops it.

    A mode may stream a draft and then replace it: a cascade streams the edge's draft, then decides that
    the cloud answers. The daemon then sends a DraftDiscarded(discarded, next, reason), and the text
    that follows is the answer. Iterating the stream yields every TextDelta, the discarded draft's too;
    iterate `events()` instead to see TextDeltas and DraftDiscarded in the order sent (to take a draft
    off the screen, say). Either way `text` drops the discarded draft and `result` is the final answer.
    A stream is read once, through one of the two.
    """

    def __init__(self, call: grpc.Call) -> None:
        super().__init__()
        self._call = call
        self._cancelled = False

    def __iter__(self) -> Iterator[TextDelta]:
        for event in self.events():
            if isinstance(event, TextDelta):
                yield event

    def events(self) -> Iterator[AnswerEvent]:
        try:
            for message in self._call:
                event = self._take(message)
                if event is not None:
                    yield event
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED and self._cancelled:
                return  # our own cancel(): the stream simply ends
            raise _translate(exc) from None

    def cancel(self) -> None:
        self._cancelled = True
        self._call.cancel()

    def __enter__(self) -> "GenerateStream":
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.result is None:
            self.cancel()


class AsyncGenerateStream(_StreamedAnswer):
    """The async mirror of GenerateStream: `async for` yields TextDeltas, `events()` also DraftDiscarded."""

    def __init__(self, call: grpc.aio.UnaryStreamCall) -> None:
        super().__init__()
        self._call = call
        self._cancelled = False

    async def __aiter__(self) -> AsyncIterator[TextDelta]:
        async for event in self.events():
            if isinstance(event, TextDelta):
                yield event

    async def events(self) -> AsyncIterator[AnswerEvent]:
        try:
            async for message in self._call:
                event = self._take(message)
                if event is not None:
                    yield event
        except grpc.RpcError as exc:
            raise _translate(exc) from None
        except asyncio.CancelledError:
            # grpc.aio cancels the call whenever the reading task is cancelled, so only our own flag
            # tells cancel() apart from asyncio.timeout, wait_for or task.cancel(), which must propagate.
            if not self._cancelled:
                raise
            # our own cancel(): the stream simply ends, as the sync stream does

    def cancel(self) -> None:
        self._cancelled = True
        self._call.cancel()

    async def __aenter__(self) -> "AsyncGenerateStream":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self.result is None:
            self.cancel()


class RouterClient:
    def __init__(self, target: str, *, timeout_s: Optional[float] = None, token: Optional[str] = None,
                 token_file: Optional[Path] = None, ca_file: Optional[Path] = None,
                 client_cert_file: Optional[Path] = None, client_key_file: Optional[Path] = None) -> None:
        """`token`: the bearer token; unset, the one in `token_file` (default: the local admin token a
        daemon on this machine wrote). `ca_file`: PEM of the CA that signed the daemon's certificate
        (TLS); `client_cert_file` and `client_key_file`: a client certificate (mTLS)."""
        self.target = target
        self.timeout_s = timeout_s
        trust = client_trust(token, token_file, ca_file, client_cert_file, client_key_file, target)
        self._metadata = trust.metadata
        try:
            self._channel = trust.channel(target, _channel_options())
        except InsecureCredentialError as exc:
            raise InvalidRequestError(str(exc)) from None
        self._stub = router_pb2_grpc.RouterStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def generate(self, request: Optional[GenerateRequest] = None, *, timeout_s: Optional[float] = None,
                 **fields: object) -> GenerateResult:
        message = encode_request(request, fields)
        try:
            reply = self._stub.Generate(message, metadata=self._metadata, timeout=timeout_s or self.timeout_s)
        except grpc.RpcError as exc:
            raise _translate(exc) from None
        return wire.result_from_proto(reply)

    def stream(self, request: Optional[GenerateRequest] = None, *, timeout_s: Optional[float] = None,
               **fields: object) -> GenerateStream:
        message = encode_request(request, fields)
        return GenerateStream(self._stub.GenerateStream(message, metadata=self._metadata, timeout=timeout_s or self.timeout_s))

    def info(self) -> DaemonInfo:
        try:
            return wire.info_from_proto(self._stub.Info(pb.InfoRequest(), metadata=self._metadata, timeout=self.timeout_s))
        except grpc.RpcError as exc:
            raise _translate(exc) from None

    def feedback(self, request_id: str, *, score: Optional[float] = None, thumbs_up: Optional[bool] = None,
                 corrected_answer: Optional[str] = None) -> None:
        """Rate an answer by its result's request_id; raises NotFoundError for an unknown id."""
        try:
            self._stub.Feedback(_feedback_request(request_id, score, thumbs_up, corrected_answer),
                                metadata=self._metadata, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise _translate(exc) from None

    def reload(self, model_dir: Optional[str] = None) -> tuple[str, str]:
        """Loads PRE_ARBITRATION's router from `model_dir` (default: the daemon's routing.model_dir);
        returns (previous, current) as decisions name them. InvalidRequestError for a model the
        daemon refused; the router in use then stays."""
        try:
            reply = self._stub.Reload(pb.ReloadRequest(model_dir=model_dir or ""), metadata=self._metadata, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise _translate(exc) from None
        return reply.previous, reply.current

    def use_adapter(self, version: str = "") -> tuple[str, str]:
        """Swaps the edge's LoRA adapter to `version` of the daemon's adapter store ("v0003"; "none": the
        base model alone; "": the store's active version); returns the edge's name before and after, as
        results name it. InvalidRequestError for an adapter the daemon refused; the one in use then stays."""
        try:
            reply = self._stub.UseAdapter(pb.UseAdapterRequest(version=version), metadata=self._metadata,
                                          timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise _translate(exc) from None
        return reply.previous, reply.current

    def stats(self, since_unix_s: Optional[float] = None) -> StatsReport:
        try:
            return wire.stats_from_proto(self._stub.Stats(_stats_request(since_unix_s), metadata=self._metadata, timeout=self.timeout_s))
        except grpc.RpcError as exc:
            raise _translate(exc) from None

    def is_serving(self) -> bool:
        try:
            reply = self._health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def wait_ready(self, timeout_s: float = 600.0, poll_s: float = 0.25) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.is_serving():
            if time.monotonic() > deadline:
                raise NotReadyError(f"the daemon at {self.target} did not report SERVING within {timeout_s:g} s")
            time.sleep(poll_s)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "RouterClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncRouterClient:
    def __init__(self, target: str, *, timeout_s: Optional[float] = None, token: Optional[str] = None,
                 token_file: Optional[Path] = None, ca_file: Optional[Path] = None,
                 client_cert_file: Optional[Path] = None, client_key_file: Optional[Path] = None) -> None:
        """`token`: the bearer token; unset, the one in `token_file` (default: the local admin token a
        daemon on this machine wrote). `ca_file`: PEM of the CA that signed the daemon's certificate
        (TLS); `client_cert_file` and `client_key_file`: a client certificate (mTLS)."""
        self.target = target
        self.timeout_s = timeout_s
        trust = client_trust(token, token_file, ca_file, client_cert_file, client_key_file, target)
        self._metadata = trust.metadata
        try:
            self._channel = trust.aio_channel(target, _channel_options())
        except InsecureCredentialError as exc:
            raise InvalidRequestError(str(exc)) from None
        self._stub = router_pb2_grpc.RouterStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    async def generate(self, request: Optional[GenerateRequest] = None, *, timeout_s: Optional[float] = None,
                       **fields: object) -> GenerateResult:
        message = encode_request(request, fields)
        try:
            reply = await self._stub.Generate(message, metadata=self._metadata, timeout=timeout_s or self.timeout_s)
        except grpc.RpcError as exc:
            raise _translate(exc) from None
        return wire.result_from_proto(reply)

    def stream(self, request: Optional[GenerateRequest] = None, *, timeout_s: Optional[float] = None,
               **fields: object) -> AsyncGenerateStream:
        message = encode_request(request, fields)
        return AsyncGenerateStream(self._stub.GenerateStream(message, metadata=self._metadata, timeout=timeout_s or self.timeout_s))

    async def info(self) -> DaemonInfo:
        try:
            return wire.info_from_proto(await self._stub.Info(pb.InfoRequest(), metadata=self._metadata, timeout=self.timeout_s))
        except grpc.RpcError as exc:
            raise _translate(exc) from None

    async def feedback(self, request_id: str, *, score: Optional[float] = None, thumbs_up: Optional[bool] = None,
                       corrected_answer: Optional[str] = None) -> None:
        try:
            await self._stub.Feedback(_feedback_request(request_id, score, thumbs_up, corrected_answer),
                                      metadata=self._metadata, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise _translate(exc) from None

    async def reload(self, model_dir: Optional[str] = None) -> tuple[str, str]:
        try:
            reply = await self._stub.Reload(pb.ReloadRequest(model_dir=model_dir or ""), metadata=self._metadata, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise _translate(exc) from None
        return reply.previous, reply.current

    async def use_adapter(self, version: str = "") -> tuple[str, str]:
        try:
            reply = await self._stub.UseAdapter(pb.UseAdapterRequest(version=version), metadata=self._metadata,
                                                timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise _translate(exc) from None
        return reply.previous, reply.current

    async def stats(self, since_unix_s: Optional[float] = None) -> StatsReport:
        try:
            return wire.stats_from_proto(await self._stub.Stats(_stats_request(since_unix_s), metadata=self._metadata, timeout=self.timeout_s))
        except grpc.RpcError as exc:
            raise _translate(exc) from None

    async def is_serving(self) -> bool:
        try:
            reply = await self._health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    async def wait_ready(self, timeout_s: float = 600.0, poll_s: float = 0.25) -> None:
        deadline = time.monotonic() + timeout_s
        while not await self.is_serving():
            if time.monotonic() > deadline:
                raise NotReadyError(f"the daemon at {self.target} did not report SERVING within {timeout_s:g} s")
            await asyncio.sleep(poll_s)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncRouterClient":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
