"""The Info service's gRPC client: `GrpcInfoClient` (async: the router's InfoSource, router/core/info.py) and
`InfoClient` (sync: the CLI and scripts), with the same methods.

The same client serves both ways of running the service: info.service = in_process (the daemon hosts it
on its own port) and remote (`hybrid-router info serve` on another host). Status codes become
router/core/info.py's errors here, once: UNAVAILABLE -> InfoUnavailableError, DEADLINE_EXCEEDED ->
InfoTimeoutError, INVALID_ARGUMENT (and a message too large for the transport) -> InfoRejectedError,
anything else -> InfoError; each keeps the service's message.

Pricing: every Retrieve sent costs `price_per_retrieval_usd`, answered or not (the service may have done
the work, and an unanswered call is counted rather than lost). An error raised by `retrieve` carries
`cost_usd` and `latency_s` so that its caller can record the call: the price and the time until the
failure when the call was sent, 0 and 0 when it was refused before sending.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping, Optional, Protocol, Sequence

import grpc

from router.assembly.grpc_channels import ChannelTrust, InsecureCredentialError
from router.core.info import (InfoAccessError, InfoError, InfoRejectedError, InfoTimeoutError, InfoUnavailableError,
                              Retrieval)
from router.domain.types import Caller, Passage
from router.v1 import info_pb2 as pb
from router.v1 import info_pb2_grpc

DEFAULT_BATCH_DOCUMENTS = 256
MAX_BATCH_DOCUMENTS = 1000  # the service's limit per Ingest message
# Per Ingest message. The service takes up to 32 MiB, but a daemon hosting it (info.service = in_process)
# refuses every message over its transport limit, server.max_request_bytes (1 MiB by default) before
# parsing it: half a MiB fits both. A single document larger than this travels alone.
DEFAULT_MESSAGE_BYTES = 512 * 2**10
CHANNEL_MESSAGE_BYTES = 64 * 2**20
INT32_MAX = 2**31 - 1


class DocumentLike(Protocol):
    """What `ingest` reads of a document: cloud.info.Document has these attributes."""

    id: str
    text: str
    metadata: Mapping[str, str]
    groups: Sequence[str]


@dataclass(frozen=True)
class IngestCounts:
    documents: int  # ingested by the whole call
    chunks: int     # passages they were split into
    replaced: int   # of `documents`, those that replaced a document with the same id


@dataclass(frozen=True)
class InfoIndexStats:
    documents: int
    chunks: int
    groups: tuple[str, ...]  # the access groups the documents name, sorted
    dim: int            # the encoder's embedding dimension
    bytes_on_disk: int
    index_dir: str      # where the index lives: a directory on the service's host, or its server (no secrets)


def translate(exc: grpc.RpcError, target: str) -> InfoError:
    """One gRPC error as router/core/info.py's error, with the service's own message."""
    code, details = exc.code(), exc.details() or exc.code().name
    where = f"Info service at {target}"
    if code == grpc.StatusCode.UNAVAILABLE:
        return InfoUnavailableError(f"{where} is unavailable: {details}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return InfoTimeoutError(f"{where} did not answer in time: {details}")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InfoRejectedError(details)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details:
        # gRPC's own message-size cap, not a rate limit: sending the same message again cannot help.
        return InfoRejectedError(f"a message is too large for the transport of the {where}: {details}; "
                                 "send fewer documents per message")
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return InfoAccessError(f"{where} refused the call ({code.name}): {details}")
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return InfoError(f"the server at {target} does not host the Info service (info.service = off there, "
                         f"or an older daemon): {details}")
    return InfoError(f"{where}: {code.name}: {details}")


def retrieve_request(query: str, k: int, caller: Caller, filters: Optional[Mapping[str, str]]) -> pb.RetrieveRequest:
    """The wire request; a value the wire cannot carry is refused here, before anything is sent."""
    if not 0 <= k <= INT32_MAX:
        raise InfoRejectedError(f"k must be between 1 and 100 (got {k})")
    try:
        return pb.RetrieveRequest(query=query, k=k, filters=dict(filters or {}),
                                  caller=pb.Caller(user=caller.user, groups=list(caller.groups)))
    except (TypeError, ValueError) as exc:  # a non-string filter or group, say
        raise InfoRejectedError(f"the retrieval cannot be encoded: {type(exc).__name__}: {exc}") from None


def passages_from_proto(reply: pb.RetrieveResponse) -> tuple[Passage, ...]:
    return tuple(Passage(passage_id=p.passage_id, document_id=p.document_id, text=p.text, score=p.score,
                         start=p.start, end=p.end, metadata=dict(p.metadata)) for p in reply.passages)


def document_to_proto(document: DocumentLike) -> pb.Document:
    try:
        return pb.Document(id=document.id, text=document.text, metadata=dict(document.metadata),
                           groups=list(document.groups))
    except (TypeError, ValueError) as exc:
        raise InfoRejectedError(f"document {getattr(document, 'id', '?')!r} cannot be encoded: "
                                f"{type(exc).__name__}: {exc}") from None


def ingest_messages(documents: Iterable[DocumentLike], batch_size: int = DEFAULT_BATCH_DOCUMENTS,
                    max_message_bytes: int = DEFAULT_MESSAGE_BYTES) -> Iterator[pb.IngestRequest]:
    """The documents in Ingest messages of at most `batch_size` documents and about `max_message_bytes`
    (a larger document alone), read lazily so that a large corpus is never in memory whole."""
    batch, size = pb.IngestRequest(), 0
    for document in documents:
        message = document_to_proto(document)
        # A repeated field costs its message's size plus a tag and a length prefix (at most ~6 bytes).
        cost = message.ByteSize() + 6
        if batch.documents and (len(batch.documents) >= batch_size or size + cost > max_message_bytes):
            yield batch
            batch, size = pb.IngestRequest(), 0
        batch.documents.append(message)
        size += cost
    if batch.documents:
        yield batch


class IngestStream:
    """The Ingest messages for gRPC to send. An error raised while reading the documents (a bad line in
    a file, say) is kept: gRPC then cancels the call and reports only that its request iterator failed,
    and the client raises the kept error instead."""

    def __init__(self, documents: Iterable[DocumentLike], batch_size: int) -> None:
        if not 1 <= batch_size <= MAX_BATCH_DOCUMENTS:  # checked now, before the call, not when gRPC reads
            raise InfoRejectedError(f"batch_size must be between 1 and {MAX_BATCH_DOCUMENTS} (got {batch_size})")
        self._messages = ingest_messages(documents, batch_size)
        self.error: Optional[BaseException] = None

    def __iter__(self) -> "IngestStream":
        return self

    def __next__(self) -> pb.IngestRequest:
        try:
            return next(self._messages)
        except StopIteration:
            raise
        except Exception as exc:
            self.error = exc
            raise


def counts_from_proto(reply: pb.IngestResponse) -> IngestCounts:
    return IngestCounts(documents=reply.documents, chunks=reply.chunks, replaced=reply.replaced)


def stats_from_proto(reply: pb.IndexStatsResponse) -> InfoIndexStats:
    return InfoIndexStats(documents=reply.documents, chunks=reply.chunks, groups=tuple(reply.groups), dim=reply.dim,
                          bytes_on_disk=reply.bytes_on_disk, index_dir=reply.index_dir)


def _channel_options() -> list[tuple[str, int]]:
    return [("grpc.max_receive_message_length", CHANNEL_MESSAGE_BYTES),
            ("grpc.max_send_message_length", CHANNEL_MESSAGE_BYTES)]


class _InfoClientBase:
    """What both clients share: the target, the timeouts, the price, and the priced failure."""

    def __init__(self, target: str, timeout_s: Optional[float], price_per_retrieval_usd: float,
                 trust: Optional[ChannelTrust]) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self.price_per_retrieval_usd = price_per_retrieval_usd
        self.trust = trust or ChannelTrust()
        self._metadata = self.trust.metadata

    def _priced_failure(self, exc: grpc.RpcError, began: float) -> InfoError:
        error = translate(exc, self.target)
        error.cost_usd = self.price_per_retrieval_usd  # type: ignore[attr-defined]
        error.latency_s = time.perf_counter() - began  # type: ignore[attr-defined]
        return error

    @staticmethod
    def _unsent(error: InfoError) -> InfoError:
        error.cost_usd = 0.0  # type: ignore[attr-defined]
        error.latency_s = 0.0  # type: ignore[attr-defined]
        return error

    def _encode(self, query: str, k: int, caller: Optional[Caller],
                filters: Optional[Mapping[str, str]]) -> pb.RetrieveRequest:
        try:
            return retrieve_request(query, k, caller or Caller(), filters)
        except InfoError as exc:
            raise self._unsent(exc) from None


class GrpcInfoClient(_InfoClientBase):
    """Async; satisfies router.core.info.InfoSource. Build it inside the event loop that uses it.

    `timeout_s`: the deadline of retrieve, delete and stats unless a call gives its own; ingest has none
    unless it is given one (a corpus takes as long as it takes to embed).
    """

    def __init__(self, target: str, *, timeout_s: float, price_per_retrieval_usd: float,
                 trust: Optional[ChannelTrust] = None) -> None:
        super().__init__(target, timeout_s, price_per_retrieval_usd, trust)
        try:
            self._channel = self.trust.aio_channel(target, _channel_options())
        except InsecureCredentialError as exc:
            raise InfoRejectedError(str(exc)) from None
        self._stub = info_pb2_grpc.InfoStub(self._channel)

    async def retrieve(self, query: str, *, k: int, caller: Caller, filters: Optional[Mapping[str, str]] = None,
                       timeout_s: Optional[float] = None) -> Retrieval:
        message = self._encode(query, k, caller, filters)
        began = time.perf_counter()
        try:
            reply = await self._stub.Retrieve(message, metadata=self._metadata, timeout=timeout_s or self.timeout_s)
        except grpc.RpcError as exc:
            raise self._priced_failure(exc, began) from None
        return Retrieval(passages=passages_from_proto(reply), latency_s=time.perf_counter() - began,
                         cost_usd=self.price_per_retrieval_usd)

    async def ingest(self, documents: Iterable[DocumentLike], batch_size: int = DEFAULT_BATCH_DOCUMENTS, *,
                     timeout_s: Optional[float] = None) -> IngestCounts:
        """Streams the documents in batches; the documents of messages sent before an error may be
        ingested already (ingesting them again replaces them, it does not add copies)."""
        stream = IngestStream(documents, batch_size)
        try:
            reply = await self._stub.Ingest(stream, metadata=self._metadata, timeout=timeout_s)
        except grpc.RpcError as exc:
            raise stream.error or translate(exc, self.target) from None
        except asyncio.CancelledError:
            # grpc.aio cancels the call, and so raises CancelledError here, when reading the documents
            # failed; any other cancellation is the caller's and propagates.
            if stream.error is None:
                raise
            raise stream.error from None
        return counts_from_proto(reply)

    async def delete(self, document_ids: Sequence[str], *, timeout_s: Optional[float] = None) -> int:
        """How many of the documents were in the index."""
        try:
            reply = await self._stub.Delete(pb.DeleteRequest(document_ids=list(document_ids)),
                                            metadata=self._metadata, timeout=timeout_s or self.timeout_s)
        except grpc.RpcError as exc:
            raise translate(exc, self.target) from None
        return reply.deleted

    async def stats(self, *, timeout_s: Optional[float] = None) -> InfoIndexStats:
        try:
            reply = await self._stub.Stats(pb.IndexStatsRequest(), metadata=self._metadata, timeout=timeout_s or self.timeout_s)
        except grpc.RpcError as exc:
            raise translate(exc, self.target) from None
        return stats_from_proto(reply)

    async def aclose(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "GrpcInfoClient":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class InfoClient(_InfoClientBase):
    """The synchronous mirror of GrpcInfoClient, for the CLI and scripts."""

    def __init__(self, target: str, *, timeout_s: float, price_per_retrieval_usd: float,
                 trust: Optional[ChannelTrust] = None) -> None:
        super().__init__(target, timeout_s, price_per_retrieval_usd, trust)
        try:
            self._channel = self.trust.channel(target, _channel_options())
        except InsecureCredentialError as exc:
            raise InfoRejectedError(str(exc)) from None
        self._stub = info_pb2_grpc.InfoStub(self._channel)

    def retrieve(self, query: str, *, k: int, caller: Optional[Caller] = None,
                 filters: Optional[Mapping[str, str]] = None, timeout_s: Optional[float] = None) -> Retrieval:
        message = self._encode(query, k, caller, filters)
        began = time.perf_counter()
        try:
            reply = self._stub.Retrieve(message, metadata=self._metadata, timeout=timeout_s or self.timeout_s)
        except grpc.RpcError as exc:
            raise self._priced_failure(exc, began) from None
        return Retrieval(passages=passages_from_proto(reply), latency_s=time.perf_counter() - began,
                         cost_usd=self.price_per_retrieval_usd)

    def ingest(self, documents: Iterable[DocumentLike], batch_size: int = DEFAULT_BATCH_DOCUMENTS, *,
               timeout_s: Optional[float] = None) -> IngestCounts:
        stream = IngestStream(documents, batch_size)
        try:
            reply = self._stub.Ingest(stream, metadata=self._metadata, timeout=timeout_s)
        except grpc.RpcError as exc:
            raise stream.error or translate(exc, self.target) from None
        return counts_from_proto(reply)

    def delete(self, document_ids: Sequence[str], *, timeout_s: Optional[float] = None) -> int:
        try:
            reply = self._stub.Delete(pb.DeleteRequest(document_ids=list(document_ids)),
                                      metadata=self._metadata, timeout=timeout_s or self.timeout_s)
        except grpc.RpcError as exc:
            raise translate(exc, self.target) from None
        return reply.deleted

    def stats(self, *, timeout_s: Optional[float] = None) -> InfoIndexStats:
        try:
            reply = self._stub.Stats(pb.IndexStatsRequest(), metadata=self._metadata, timeout=timeout_s or self.timeout_s)
        except grpc.RpcError as exc:
            raise translate(exc, self.target) from None
        return stats_from_proto(reply)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "InfoClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
