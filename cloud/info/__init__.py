"""The cloud-side Info service's retrieval library: documents in, access-controlled passages out.

    index = InfoIndex.open(Path("/var/lib/info"), embedder=encoder)
    index.ingest(read_documents(Path("docs"), "markdown"))
    index.retrieve("who approves leave?", k=5, caller=Caller(user="ann", groups=("hr",)))

Self-contained: numpy and the standard library only; the embedder is passed in (cloud/info/index.py's
`Embedder` protocol), so nothing here imports the router, the bench or a model runtime.
"""
from cloud.info.chunking import Chunk, chunk_text
from cloud.info.documents import Document, detect_format, read_documents, validate_document
from cloud.info.errors import IndexCorruptError, InfoIndexError, InvalidDocumentError, InvalidQueryError
from cloud.info.index import (
    Caller,
    Embedder,
    IndexSettings,
    IndexStats,
    InfoIndex,
    IngestReport,
    RetrievedPassage,
)

__all__ = [
    "Caller",
    "Chunk",
    "Document",
    "Embedder",
    "IndexCorruptError",
    "IndexSettings",
    "IndexStats",
    "InfoIndex",
    "InfoIndexError",
    "IngestReport",
    "InvalidDocumentError",
    "InvalidQueryError",
    "RetrievedPassage",
    "chunk_text",
    "detect_format",
    "read_documents",
    "validate_document",
]
