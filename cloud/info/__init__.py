"""The cloud-side Info service's retrieval library: documents in, access-controlled passages out.

    index = InfoIndex.open(Path("/var/lib/info"), embedder=encoder)
    index.ingest(read_documents(Path("docs"), "markdown"))
    index.retrieve("who approves leave?", k=5, caller=Caller(user="ann", groups=("hr",)))

Self-contained: numpy and the standard library only (PgInfoIndex, the same index on PostgreSQL, also
needs psycopg and, for its embedded mode, pgserver); the embedder is passed in (cloud/info/index.py's
`Embedder` protocol), so nothing here imports the router, the bench or a model runtime.
"""
from typing import TYPE_CHECKING

from cloud.info.chunking import Chunk, chunk_text
from cloud.info.documents import Document, detect_format, read_documents, validate_document
from cloud.info.errors import (
    IndexCorruptError,
    IndexUnavailableError,
    InfoIndexError,
    InvalidDocumentError,
    InvalidQueryError,
)
from cloud.info.index import (
    Caller,
    Embedder,
    IndexSettings,
    IndexStats,
    InfoIndex,
    IngestReport,
    RetrievedPassage,
)
from cloud.info.interface import SearchIndex
from cloud.info.transfer import ChunkBatch

if TYPE_CHECKING:
    from cloud.info.pg_index import PgInfoIndex

__all__ = [
    "Caller",
    "Chunk",
    "ChunkBatch",
    "Document",
    "Embedder",
    "IndexCorruptError",
    "IndexSettings",
    "IndexStats",
    "IndexUnavailableError",
    "InfoIndex",
    "InfoIndexError",
    "IngestReport",
    "InvalidDocumentError",
    "InvalidQueryError",
    "PgInfoIndex",
    "RetrievedPassage",
    "SearchIndex",
    "chunk_text",
    "detect_format",
    "read_documents",
    "validate_document",
]


def __getattr__(name: str) -> object:
    # PgInfoIndex needs psycopg: imported on first use, so the rest of the package works without it.
    if name == "PgInfoIndex":
        from cloud.info.pg_index import PgInfoIndex

        return PgInfoIndex
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
