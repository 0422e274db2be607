"""The Info service's error boundary (router/doors/info_service.py) and the client's translation
(router/assembly/info_client.py), over an index that injects faults: no model, a loopback server."""
from __future__ import annotations

import logging
from typing import AsyncIterator, Callable, Optional, Sequence

import grpc
import pytest

from cloud.info import (Document, IndexCorruptError, IndexStats, IngestReport, InvalidDocumentError,
                        InvalidQueryError, RetrievedPassage)
from router.core.auth import Guard
from router.assembly.info_client import GrpcInfoClient, ingest_messages
from router.core.info import InfoError, InfoRejectedError, InfoUnavailableError
from router.domain.types import Caller
from router.doors.info_service import InfoService
from router.v1 import info_pb2 as pb
from router.v1 import info_pb2_grpc

PRICE = 0.25


class FaultInjectionIndex:
    """Stands in for InfoIndex: records what it is given, and raises `fault` from the next call."""

    def __init__(self) -> None:
        self.fault: Optional[BaseException] = None
        self.batches: list[list[Document]] = []
        self.retrievals: list[tuple[str, int, object, object]] = []

    def _maybe_fail(self) -> None:
        fault, self.fault = self.fault, None
        if fault is not None:
            raise fault

    def ingest(self, documents: Sequence[Document]) -> IngestReport:
        self._maybe_fail()
        self.batches.append(list(documents))
        return IngestReport(documents=len(documents), chunks=2 * len(documents), replaced=0)

    def delete(self, ids: Sequence[str]) -> int:
        self._maybe_fail()
        return len(ids)

    def retrieve(self, query: str, *, k: int, caller: object, filters: object = None) -> list[RetrievedPassage]:
        self._maybe_fail()
        self.retrievals.append((query, k, caller, filters))
        return [RetrievedPassage(passage_id="d1#0", document_id="d1", text="the passage", score=0.5, start=0,
                                 end=11, metadata={"title": "T"})]

    def stats(self) -> IndexStats:
        self._maybe_fail()
        return IndexStats(documents=1, chunks=2, groups=("hr",), dim=512, bytes_on_disk=1024)


@pytest.fixture
async def served() -> AsyncIterator[tuple[InfoService, FaultInjectionIndex, GrpcInfoClient]]:
    service = InfoService(location="/srv/info", default_k=3, logger=logging.getLogger("hybrid_router.info"),
                          guard=Guard(None), max_batch_documents=4, max_batch_bytes=4096)
    index = FaultInjectionIndex()
    server = grpc.aio.server()
    info_pb2_grpc.add_InfoServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = GrpcInfoClient(f"127.0.0.1:{port}", timeout_s=10, price_per_retrieval_usd=PRICE)
    try:
        yield service, index, client
    finally:
        await client.aclose()
        await server.stop(None)


def documents(count: int, text: str = "text") -> list[Document]:
    return [Document(id=f"d{i}", text=text) for i in range(count)]


async def test_before_the_index_is_open_and_after_it_closes_calls_are_unavailable(served) -> None:
    service, index, client = served
    with pytest.raises(InfoUnavailableError, match="loading its index"):
        await client.retrieve("q", k=1, caller=Caller())
    service.attach(index)
    assert (await client.stats()).documents == 1
    service.detach()
    with pytest.raises(InfoUnavailableError, match="shutting down"):
        await client.stats()


async def test_k_zero_takes_the_default_and_the_caller_and_filters_reach_the_index(served) -> None:
    service, index, client = served
    service.attach(index)
    retrieval = await client.retrieve("q", k=0, caller=Caller(user="u", groups=("hr", "ops")),
                                      filters={"title": "T"})
    assert retrieval.cost_usd == PRICE and retrieval.passages[0].metadata == {"title": "T"}
    query, k, caller, filters = index.retrievals[-1]
    assert (query, k, filters) == ("q", 3, {"title": "T"})
    assert (caller.user, caller.groups) == ("u", ("hr", "ops"))
    await client.retrieve("q", k=2, caller=Caller())
    _, k, _, filters = index.retrievals[-1]
    assert (k, filters) == (2, None)  # no filters reach the index as None, not {}


@pytest.mark.parametrize("fault, code, says", [
    (InvalidQueryError("the query is empty: ask something"), grpc.StatusCode.INVALID_ARGUMENT, "ask something"),
    (InvalidDocumentError("document 'd0' has no text"), grpc.StatusCode.INVALID_ARGUMENT, "has no text"),
    (IndexCorruptError("the index in /srv/info cannot be read; delete the directory and re-ingest the documents"),
     grpc.StatusCode.FAILED_PRECONDITION, "re-ingest"),
    (RuntimeError("a bug"), grpc.StatusCode.INTERNAL, "see the Info service's log"),
])
async def test_each_fault_gets_its_status_and_the_service_keeps_serving(
        served, caplog: pytest.LogCaptureFixture, fault: Exception, code: grpc.StatusCode, says: str) -> None:
    service, index, client = served
    service.attach(index)
    stub = info_pb2_grpc.InfoStub(client._channel)
    index.fault = fault
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await stub.Retrieve(pb.RetrieveRequest(query="q", k=1))
    assert failed.value.code() == code and says in failed.value.details()
    if code == grpc.StatusCode.INTERNAL:
        assert "a bug" not in failed.value.details()  # the message stays in the log
        assert any(record.exc_info and "a bug" in str(record.exc_info[1]) for record in caplog.records)
    assert (await client.retrieve("q", k=1, caller=Caller())).passages


@pytest.mark.parametrize("fault, error", [
    (InvalidQueryError("k must be between 1 and 100"), InfoRejectedError),
    (IndexCorruptError("unreadable"), InfoError),
])
async def test_the_client_raises_the_core_errors_priced(served, fault: Exception, error: type) -> None:
    service, index, client = served
    service.attach(index)
    index.fault = fault
    with pytest.raises(error) as failed:
        await client.retrieve("q", k=1, caller=Caller())
    assert failed.type is error  # FAILED_PRECONDITION is no subclass: not a refusal, not unavailable
    assert failed.value.cost_usd == PRICE and failed.value.latency_s > 0


async def test_a_value_the_wire_cannot_carry_is_refused_before_sending_and_costs_nothing(served) -> None:
    _, _, client = served
    with pytest.raises(InfoRejectedError) as refused:
        await client.retrieve("q", k=2**31, caller=Caller())
    assert refused.value.cost_usd == 0 and refused.value.latency_s == 0


async def test_ingest_limits_and_what_a_refusal_says(served) -> None:
    service, index, client = served
    service.attach(index)
    counts = await client.ingest(documents(6), batch_size=4)
    assert (counts.documents, counts.chunks) == (6, 12) and [len(b) for b in index.batches] == [4, 2]
    stub = info_pb2_grpc.InfoStub(client._channel)

    async def send(*messages: pb.IngestRequest) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Ingest(iter(messages))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        return refused.value

    assert "no documents" in (await send()).details()
    too_many = await send(*ingest_messages(documents(5), batch_size=5))
    assert "split" in too_many.details() and "5 documents" in too_many.details()
    too_big = await send(*ingest_messages(documents(1, "x" * 5000)))
    assert "split" in too_big.details() and "4096 bytes" in too_big.details()
    second_refused = await send(*ingest_messages(documents(4), batch_size=2),
                                *ingest_messages(documents(5), batch_size=5))
    assert "message 3" in second_refused.details() and "4 documents" in second_refused.details()
    assert (await client.stats()).dim == 512


def test_ingest_messages_keep_under_the_byte_budget_and_a_large_document_travels_alone() -> None:
    sizes = [100, 100, 5000, 100]
    docs = [Document(id=f"d{i}", text="x" * size) for i, size in enumerate(sizes)]
    messages = list(ingest_messages(docs, batch_size=10, max_message_bytes=1000))
    assert [[d.id for d in m.documents] for m in messages] == [["d0", "d1"], ["d2"], ["d3"]]
    assert all(m.ByteSize() <= 1000 for i, m in enumerate(messages) if i != 1)
