"""What the Info service needs of an index, whatever stores it.

`InfoIndex` (one directory, numpy) and `PgInfoIndex` (PostgreSQL + pgvector) both satisfy it, with the
same results for the same documents: the service may hold either. `export_chunks` of one and
`import_chunks` of the other copy an index between them exactly (cloud/info/transfer.py).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from cloud.info.documents import Document
from cloud.info.index import Caller, IndexSettings, IndexStats, IngestReport, RetrievedPassage
from cloud.info.transfer import ChunkBatch


@runtime_checkable
class SearchIndex(Protocol):
    """An access-controlled hybrid retrieval index over documents (see cloud/info/index.py)."""

    @property
    def settings(self) -> IndexSettings:
        ...

    def ingest(self, documents: Iterable[Document]) -> IngestReport:
        ...

    def delete(self, document_ids: Sequence[str]) -> int:
        ...

    def retrieve(self, query: str, *, k: int, caller: Caller,
                 filters: Mapping[str, str] | None = None) -> list[RetrievedPassage]:
        ...

    def rerank_candidates(self, query: str, *, caller: Caller,
                          filters: Mapping[str, str] | None = None) -> tuple[list[RetrievedPassage], np.ndarray]:
        ...

    def stats(self, caller: Caller | None = None) -> IndexStats:
        ...

    def export_chunks(self, batch: int = 500) -> Iterator[ChunkBatch]:
        ...

    def import_chunks(self, batches: Iterable[ChunkBatch]) -> IngestReport:
        ...

    def close(self) -> None:
        ...
