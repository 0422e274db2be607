"""The Info service's gRPC door: protobuf <-> cloud/info types, and index errors -> status codes, at this
one boundary; and `InfoHost`, which puts the servicer over the process's LocalInfoIndex for whichever server
hosts it (the daemon on its own port, or `hybrid-router info serve` on another host).

Status codes: a document or query the index refuses, and an Ingest stream that is empty or has a message
over the batch limits, get INVALID_ARGUMENT with a message that says what to change; an index that cannot
be read gets FAILED_PRECONDITION; calls before the index is open or after it is closed get UNAVAILABLE;
anything else gets INTERNAL and is logged. The service keeps serving after each.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import AsyncIterator, Optional

import grpc
from grpc_health.v1 import health, health_pb2

from cloud.info import (Caller, Document, IndexCorruptError, IndexUnavailableError, InfoIndexError,
                        InvalidDocumentError, InvalidQueryError, SearchIndex)
from router.assembly.local_info import LocalInfoIndex
from router.core.auth import Guard
from router.domain.access import ALL_GROUPS, Action, GroupNotHeldError, Principal
from router.domain.errors import PermissionDeniedError, RouterError
from router.doors.grpc_credentials import credential_of
from router.doors.grpc_errors import status_of
from router.v1 import info_pb2 as pb
from router.v1 import info_pb2_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Info"].full_name
# One Ingest message at most: larger batches are refused with a message that says to split them, so
# that one message never holds more than this in memory at once. The transport's own cap must sit above
# MAX_BATCH_BYTES (TRANSPORT_RECEIVE_BYTES) so that the service, not gRPC, answers with that message.
MAX_BATCH_DOCUMENTS = 1000
MAX_BATCH_BYTES = 32 * 2**20
TRANSPORT_RECEIVE_BYTES = 2 * MAX_BATCH_BYTES
NOT_OPEN = "the Info service is loading its index; retry in a few seconds"
CLOSED = "the Info service is shutting down; retry against a running one"


class InfoRequestError(ValueError):
    """A request the service refuses before it reaches the index (INVALID_ARGUMENT); the message says why."""


class InfoNotOpenError(Exception):
    """The index is not open, or no longer (UNAVAILABLE)."""


def document_from_proto(message: pb.Document) -> Document:
    return Document(id=message.id, text=message.text, metadata=dict(message.metadata), groups=tuple(message.groups))


class InfoService(info_pb2_grpc.InfoServicer):
    """The servicer. It answers UNAVAILABLE until `attach` hands it an open index, and again after `detach`."""

    def __init__(self, *, location: str, default_k: int, logger: logging.Logger, guard: Guard,
                 max_batch_documents: int = MAX_BATCH_DOCUMENTS, max_batch_bytes: int = MAX_BATCH_BYTES) -> None:
        self._index: Optional[SearchIndex] = None
        self._guard = guard
        self._max_batch_documents = max_batch_documents
        self._max_batch_bytes = max_batch_bytes
        self._not_open_reason = NOT_OPEN
        self._location = location  # where the index lives (LocalInfoIndex.location), for a reader of every group
        self._default_k = default_k
        self._logger = logger

    def attach(self, index: SearchIndex) -> None:
        self._index = index

    def detach(self) -> None:
        self._index = None
        self._not_open_reason = CLOSED

    def _open_index(self) -> SearchIndex:
        index = self._index
        if index is None:
            raise InfoNotOpenError(self._not_open_reason)
        return index

    def _authorize(self, context: grpc.aio.ServicerContext, action: Action) -> Principal:
        return self._guard.authorize(credential_of(context), action)

    async def _abort(self, context: grpc.aio.ServicerContext, exc: BaseException, refused_note: str = "") -> None:
        """Ends the call with exc's status code; `refused_note` is added to an INVALID_ARGUMENT message."""
        if isinstance(exc, RouterError):  # refused by the guard: unauthenticated, permission denied
            await context.abort(status_of(exc), exc.message)
        if isinstance(exc, (InvalidDocumentError, InvalidQueryError, InfoRequestError)):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{exc}{refused_note}")
        if isinstance(exc, IndexCorruptError):  # its message names the directory and what to do
            self._logger.error("the Info index cannot be read", extra={"fields": {"error": str(exc)}})
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        if isinstance(exc, InfoNotOpenError):
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        if isinstance(exc, IndexUnavailableError):  # the engine's server is down or unreachable: worth a retry
            self._logger.error("the Info index's engine is unavailable", extra={"fields": {"error": str(exc)}})
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        if isinstance(exc, InfoIndexError) and self._index is None:
            # A call that took the index just before close(): the index says it is closed.
            await context.abort(grpc.StatusCode.UNAVAILABLE, self._not_open_reason)
        self._logger.exception("unexpected error in the Info service", exc_info=exc)
        await context.abort(grpc.StatusCode.INTERNAL,
                            f"internal error ({type(exc).__name__}); see the Info service's log")

    async def Ingest(self, request_iterator: AsyncIterator[pb.IngestRequest],
                     context: grpc.aio.ServicerContext) -> pb.IngestResponse:
        # Each batch is ingested as it arrives, so a large corpus never sits in memory whole; a refused
        # batch therefore leaves the batches before it ingested, and its message says how many.
        totals = pb.IngestResponse()
        batches = 0
        try:
            self._authorize(context, Action.INGEST)
            async for message in request_iterator:
                batches += 1
                if not message.documents:
                    continue  # an empty message adds nothing; only an empty stream is refused
                documents = self._decode_batch(message, batches)
                report = await asyncio.to_thread(self._open_index().ingest, documents)
                totals.documents += report.documents
                totals.chunks += report.chunks
                totals.replaced += report.replaced
            if totals.documents == 0:
                raise InfoRequestError("the Ingest stream held no documents; send at least one Document "
                                       "(with `hybrid-router info ingest`, check that the files hold some)")
        except Exception as exc:
            note = (f" (message {batches} of the stream was refused whole; the {totals.documents} documents of "
                    "the messages before it are ingested)") if totals.documents else ""
            await self._abort(context, exc, note)
        return totals

    def _decode_batch(self, message: pb.IngestRequest, number: int) -> list[Document]:
        count, size = len(message.documents), message.ByteSize()
        if count > self._max_batch_documents or size > self._max_batch_bytes:
            raise InfoRequestError(
                f"Ingest message {number} holds {count} documents in {size} bytes; the limits are "
                f"{self._max_batch_documents} documents and {self._max_batch_bytes} bytes per message: split "
                "the batch into smaller messages (`hybrid-router info ingest --batch-size`)")
        documents = [document_from_proto(document) for document in message.documents]  # the index validates them
        for document in documents:
            if ALL_GROUPS in document.groups:
                raise InfoRequestError(f"document {document.id!r} names the group {ALL_GROUPS!r}, which means "
                                       "every group to a principal; name real groups")
        return documents

    def _caller(self, principal: Principal, index: SearchIndex, request: pb.RetrieveRequest) -> Caller:
        """Whose passages: a daemon's own principal (role service) retrieves for its authenticated caller,
        as it sends it; anyone else with its own groups, narrowed to those the request names."""
        user = request.caller.user if principal.may(Action.ACT_FOR_CALLER) or not self._guard.enabled \
            else principal.name
        try:
            groups = self._guard.groups_for(principal, tuple(request.caller.groups))
        except GroupNotHeldError as exc:
            raise PermissionDeniedError(str(exc)) from None
        if ALL_GROUPS in groups:
            groups = index.stats().groups
        return Caller(user=user, groups=groups)

    async def Retrieve(self, request: pb.RetrieveRequest, context: grpc.aio.ServicerContext) -> pb.RetrieveResponse:
        k = request.k or self._default_k
        filters = dict(request.filters) or None
        try:
            principal = self._authorize(context, Action.RETRIEVE)
            index = self._open_index()
            caller = self._caller(principal, index, request)
            began = time.perf_counter()
            passages = await asyncio.to_thread(index.retrieve, request.query, k=k, caller=caller, filters=filters)
            took_ms = (time.perf_counter() - began) * 1000
        except Exception as exc:
            await self._abort(context, exc)
        self._logger.debug("retrieved", extra={"fields": {"user": caller.user, "k": k, "passages": len(passages),
                                                          "took_ms": round(took_ms, 3)}})
        return pb.RetrieveResponse(took_ms=took_ms, passages=[
            pb.Passage(passage_id=p.passage_id, document_id=p.document_id, text=p.text, score=p.score,
                       start=p.start, end=p.end, metadata=dict(p.metadata)) for p in passages])

    async def Delete(self, request: pb.DeleteRequest, context: grpc.aio.ServicerContext) -> pb.DeleteResponse:
        try:
            self._authorize(context, Action.DELETE)
            if not request.document_ids:
                raise InfoRequestError("document_ids is empty; give the ids of the documents to delete")
            deleted = await asyncio.to_thread(self._open_index().delete, list(request.document_ids))
        except Exception as exc:
            await self._abort(context, exc)
        return pb.DeleteResponse(deleted=deleted)

    async def Stats(self, request: pb.IndexStatsRequest, context: grpc.aio.ServicerContext) -> pb.IndexStatsResponse:
        try:
            principal = self._authorize(context, Action.INDEX_STATS)
            # Only what the principal may read is counted or named; the whole index (its size and where
            # it lives) only for one that reads every group.
            caller = (None if principal.reads_all_groups or not self._guard.enabled
                      else Caller(user=principal.name, groups=principal.groups))
            index = self._open_index()
            stats = await asyncio.to_thread(index.stats) if caller is None else await asyncio.to_thread(index.stats, caller)
        except Exception as exc:
            await self._abort(context, exc)
        return pb.IndexStatsResponse(documents=stats.documents, chunks=stats.chunks, groups=list(stats.groups),
                                     dim=stats.dim, bytes_on_disk=stats.bytes_on_disk,
                                     index_dir=self._location if caller is None else "")


class InfoHost:
    """The Info servicer over a LocalInfoIndex (router/assembly/local_info.py), for one gRPC server to host.

    Order of use: `add_to(server, health)` before the server starts (calls get UNAVAILABLE until the
    index is open); `open()` in a thread, then `await publish_health()` (SERVING). At shutdown:
    `await publish_health(serving=False)`, stop the server, then `close()` in a thread.
    """

    def __init__(self, local: LocalInfoIndex, *, guard: Guard, logger: Optional[logging.Logger] = None) -> None:
        self.local = local
        self._logger = logger or logging.getLogger("hybrid_router.info")
        self.service = InfoService(location=local.location, default_k=local.settings.k, logger=self._logger,
                                   guard=guard)
        self._health: Optional[health.aio.HealthServicer] = None

    @property
    def is_open(self) -> bool:
        return self.local.index is not None

    def add_to(self, server: grpc.aio.Server, health_servicer: Optional[health.aio.HealthServicer] = None) -> None:
        """Registers the Info servicer on `server` (before it starts) and remembers the server's health
        servicer, on which `publish_health` reports SERVICE_NAME. Reflection is the server's: list
        SERVICE_NAME among its services."""
        info_pb2_grpc.add_InfoServicer_to_server(self.service, server)
        self._health = health_servicer

    def open(self) -> None:
        """Opens the index (blocking) and starts answering from it."""
        index = self.local.open()
        if index is not None:
            self.service.attach(index)

    async def publish_health(self, serving: Optional[bool] = None) -> None:
        """Sets SERVICE_NAME on the health servicer given to add_to (if any): `serving`, or by default
        SERVING while the index is open and NOT_SERVING otherwise."""
        if self._health is None:
            return
        serving = self.is_open if serving is None else serving
        await self._health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING if serving
                               else health_pb2.HealthCheckResponse.NOT_SERVING)

    def close(self) -> None:
        """Stops answering (UNAVAILABLE from now on) and closes the index; blocking, idempotent."""
        self.service.detach()
        self.local.close()
