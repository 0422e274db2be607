"""The Info index on PostgreSQL + pgvector: InfoIndex's API and results, with the database doing the work.

    index = PgInfoIndex.open_embedded(Path("/var/lib/info"), embedder=encoder)   # a private server
    index = PgInfoIndex.open_server("postgresql://info@db/info", embedder=encoder)  # a shared one

Same documents, settings, caller, filters and query: same passages, same order, same scores (within
floating-point noise) as cloud/info/index.py's InfoIndex, whose docstring describes the retrieval.
What differs is where the work happens:
- storage is the schema of cloud/info/pg_schema.py; an ingest is one transaction of DELETEs (the
  replaced documents' chunks) and INSERTs (the new ones), a delete is a DELETE, so their cost follows
  the documents written, not the index;
- access and filters are enforced by the database (row-level security), and BM25 candidate scoring
  and the dense candidate search run in SQL over the rows left (cloud/info/pg_search.py);
- the fusion and the re-ranker run here, over the at most `candidates` rows fetched with their
  vectors, sentence vectors and terms, and with the idf computed in SQL over the visible rows.

Dense search is exact. The engine's inner product accumulates in float32; the candidates it returns
(a few more than needed) are re-scored here in float64 as InfoIndex scores them, so the order agrees.

Thread safety: a connection pool; any number of threads may retrieve at once, each read is one
snapshot. Writers take a table lock that readers do not wait on, so ingests (from any process) apply
one at a time and ingestion order is commit order. Embedding happens before any transaction starts.

Server mode creates only what the database lacks (cloud/info/pg_schema.py): the first open needs a
user that may create the role `info_index_reader` (unless it exists), the `vector` extension (unless it
is there: a superuser) and the schema `info_index`; afterwards a user with CONNECT, USAGE on the schema,
the table privileges and the right to SET ROLE to `info_index_reader` is enough, and a read-only server
(a hot standby) serves retrievals. All users of one database share its stemming: another `stem` is
refused there (and on an embedded index that another process holds), re-analysed only on an embedded
index this process alone holds. Text with NUL characters or lone surrogates cannot be stored in
PostgreSQL: such documents are refused with InvalidDocumentError, such queries with InvalidQueryError.
"""
from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from cloud.info.analysis import analyze
from cloud.info.chunking import chunk_text, sentence_spans
from cloud.info.documents import Document
from cloud.info.errors import (
    IndexCorruptError,
    IndexUnavailableError,
    InfoIndexError,
    InvalidDocumentError,
    InvalidQueryError,
)
from cloud.info.index import (
    _ENCODE_BATCH,
    Caller,
    Embedder,
    IndexSettings,
    IndexStats,
    IngestReport,
    RetrievedPassage,
    _embedder_dim,
    _unit_rows,
    _validate_query,
    validated_batch,
)
from cloud.info.pg_embedded import EmbeddedServer, other_processes_using
from cloud.info.pg_schema import SCHEMA, prepare_schema
from cloud.info.pg_search import (
    Candidates,
    ChunkRow,
    begin_read,
    fetch_rows,
    find_candidates,
    parse_vector,
    vector_literal,
)
from cloud.info.ranking import SentenceVectors, reciprocal_rank_fusion, rerank_features
from cloud.info.search import KeywordIndex, Ranking, row_dot, top_rows
from cloud.info.store import IndexShape, StoredChunk
from cloud.info.transfer import ChunkBatch, complete_documents

# Extra dense candidates asked of the engine beyond `candidates`: its float32 order may swap rows whose
# cosines differ in the last digits, and the float64 re-scoring here must have them all to agree.
_DENSE_MARGIN = 16
_POOL_MAX_CONNECTIONS = 8
_CONNECT_TIMEOUT_S = 10
# How long a call waits for a pooled connection before it reports the server unavailable.
_POOL_WAIT_S = 30.0

_INSERT = f"""
INSERT INTO {SCHEMA}.chunks (document_id, chunk_index, text, start_offset, end_offset, metadata, groups, terms,
                             term_count, vector, sentence_count, sentence_vectors)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::vector, %s, %s)"""
_EXPORT = f"""
SELECT document_id, chunk_index, text, start_offset, end_offset, metadata, groups, sentence_count, vector,
       sentence_vectors
FROM {SCHEMA}.chunks ORDER BY seq"""
# Rows re-analysed per fetch and per UPDATE batch when the stemming changes.
_REANALYSE_BATCH = 1000
# What PostgreSQL's text cannot hold: NUL, and UTF-16 surrogate code points, which have no UTF-8 form.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
# Writers queue on each other (SHARE ROW EXCLUSIVE conflicts with itself), readers never wait on it.
_WRITE_LOCK = f"LOCK TABLE {SCHEMA}.chunks IN SHARE ROW EXCLUSIVE MODE"


class _VisibleIdf:
    """The idf of the query's terms as computed in SQL over the visible rows (what rerank_features asks
    of a Bm25Scorer)."""

    def __init__(self, idf: Mapping[str, float]) -> None:
        self._idf = idf

    def idf(self, term: str) -> float:
        return self._idf[term]


class PgInfoIndex:
    """A persistent, access-controlled hybrid retrieval index in PostgreSQL (see the module docstring)."""

    def __init__(self, pool: ConnectionPool, where: str, embedder: Embedder, settings: IndexSettings, dim: int,
                 embedded: EmbeddedServer | None) -> None:
        """Use `open`, `open_embedded` or `open_server`."""
        self._pool = pool
        self._where = where
        self._embedder = embedder
        self._settings = settings
        self._dim = dim
        self._shape = IndexShape(dim, settings.chunk_tokens, settings.chunk_overlap_tokens)
        self._embedded = embedded
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def open(cls, target: str | Path, *, embedder: Embedder,
             settings: IndexSettings = IndexSettings()) -> "PgInfoIndex":
        """`open_server` for a connection string (`looks_like_dsn`), `open_embedded` for anything else
        (a directory)."""
        if isinstance(target, str) and looks_like_dsn(target):
            return cls.open_server(target, embedder=embedder, settings=settings)
        return cls.open_embedded(Path(target), embedder=embedder, settings=settings)

    @classmethod
    def open_embedded(cls, directory: Path, *, embedder: Embedder,
                      settings: IndexSettings = IndexSettings()) -> "PgInfoIndex":
        """The index kept in `directory` by a private PostgreSQL (cloud/info/pg_embedded.py), started
        here or joined if another handle runs it; a new empty one where there is none. It stops when
        the last handle closes or its process exits. IndexUnavailableError when it does not start, or
        cannot in that directory (a path with a space or a shell character: cloud/info/pg_embedded.py);
        IndexCorruptError as InfoIndex.open (a file instead of a directory, another shape)."""
        path = Path(directory)
        if path.exists() and not path.is_dir():
            raise IndexCorruptError(f"{path} is a file, not an index directory; give a directory path "
                                    "(it is created if missing)")
        server = EmbeddedServer(path)
        try:
            return cls._open(server.uri, str(path), embedder, settings, server)
        except BaseException:
            server.release()
            raise

    @classmethod
    def open_server(cls, dsn: str, *, embedder: Embedder,
                    settings: IndexSettings = IndexSettings()) -> "PgInfoIndex":
        """The index in the database `dsn` names (a libpq URI or key=value string), created on first
        use. IndexUnavailableError, naming the server without its password, when it cannot be reached
        or lacks pgvector or a privilege (module docstring); IndexCorruptError for another shape."""
        return cls._open(dsn, f"PostgreSQL {redacted_dsn(dsn)}", embedder, settings, None)

    @classmethod
    def _open(cls, conninfo: str, where: str, embedder: Embedder, settings: IndexSettings,
              embedded: EmbeddedServer | None) -> "PgInfoIndex":
        dim = _embedder_dim(embedder)
        shape = IndexShape(dim, settings.chunk_tokens, settings.chunk_overlap_tokens)
        options = _connection_options(conninfo, where)
        try:
            with psycopg.connect(conninfo, **options) as conn:
                stored = prepare_schema(conn, shape, settings.stem, where)
                if stored.stem != settings.stem:
                    _refuse_shared_restem(where, stored.stem, settings.stem, embedded)
                    _reanalyse(conn, settings.stem)
                with conn.transaction():
                    begin_read(conn, ())  # fails here, not at the first query, if SET ROLE is not allowed
        except psycopg.Error as exc:
            raise IndexUnavailableError(f"the index in {where} cannot be opened: {_reason(exc)}") from exc
        pool = ConnectionPool(conninfo, kwargs=options, min_size=1, max_size=_POOL_MAX_CONNECTIONS,
                              check=ConnectionPool.check_connection, name=f"info-index {where}", open=True)
        return cls(pool, where, embedder, settings, dim, embedded)

    @property
    def settings(self) -> IndexSettings:
        return self._settings

    def ingest(self, documents: Iterable[Document]) -> IngestReport:
        """Add or replace documents by id in one transaction (see InfoIndex.ingest).

        Every document of the batch is validated first (InvalidDocumentError names the first bad one,
        and nothing is changed); a repeated id in the batch keeps its last version.
        """
        self._check_open()
        latest = validated_batch(documents, _check_storable)
        if not latest:
            return IngestReport(0, 0, 0)
        rows = self._prepare(latest)
        replaced = self._write([document.id for document in latest], rows)
        return IngestReport(len(latest), len(rows), replaced)

    def export_chunks(self, batch: int = 500) -> Iterator[ChunkBatch]:
        """Every chunk, in ingestion (`seq`) order, `batch` chunks at a time, with its vector and sentence
        vectors as stored (cloud/info/transfer.py); one read snapshot, taken at the first batch, and one
        pooled connection held until the last."""
        self._check_open()
        if not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be a positive number of chunks, got {batch!r}")
        return self._export(batch)

    def _export(self, batch: int) -> Iterator[ChunkBatch]:
        shape = self._shape
        with self._connection() as conn, conn.transaction():
            begin_read(conn, None)
            # A server-side cursor: the rows come `batch` at a time, not all into memory at once.
            with conn.cursor(name="info_export", binary=True) as cursor:
                cursor.execute(_EXPORT)
                while rows := cursor.fetchmany(batch):
                    yield _chunk_batch(shape, rows)

    def import_chunks(self, batches: Iterable[ChunkBatch]) -> IngestReport:
        """Add another index's chunks as they are (cloud/info/transfer.py): the vectors are copied, not
        encoded again, the terms analysed here; a document here whose id they bring is replaced, the
        others kept. One transaction per batch (a document never spans two), as ingest writes: an
        IndexCorruptError for a batch of another shape, or chunks out of the stream's order, stops the
        import there, the batches before it committed."""
        self._check_open()
        documents = chunks = replaced = 0
        for whole in complete_documents(batches, self._shape, self._where):
            offsets = whole.sentence_offsets()
            rows = []
            for row, chunk in enumerate(whole.chunks):
                _check_storable_chunk(chunk)
                rows.append(self._row(chunk.document_id, chunk.chunk_index, chunk.text, chunk.start, chunk.end,
                                      chunk.metadata, chunk.groups, whole.vectors[row],
                                      whole.sentence_vectors[offsets[row]:offsets[row + 1]]))
            ids = list(dict.fromkeys(chunk.document_id for chunk in whole.chunks))
            replaced += self._write(ids, rows)
            documents, chunks = documents + len(ids), chunks + len(rows)
        return IngestReport(documents, chunks, replaced)

    def _write(self, document_ids: list[str], rows: list[tuple[Any, ...]]) -> int:
        """One transaction: the chunks of `document_ids` deleted, `rows` inserted; returns how many of
        those documents were there."""
        with self._connection() as conn, conn.transaction():
            conn.execute(_WRITE_LOCK)
            replaced = {document_id for (document_id,) in conn.execute(
                f"DELETE FROM {SCHEMA}.chunks WHERE document_id = ANY(%s) RETURNING document_id", (document_ids,))}
            with conn.cursor() as cursor:
                cursor.executemany(_INSERT, rows)
        return len(replaced)

    def delete(self, document_ids: Sequence[str]) -> int:
        """Remove documents by id; returns how many of them existed."""
        self._check_open()
        if isinstance(document_ids, str):  # a lone id would be read as its characters
            raise TypeError("delete takes a sequence of document ids; wrap a single id in a list")
        ids = sorted({document_id for document_id in document_ids if isinstance(document_id, str)})
        if not ids:
            return 0
        with self._connection() as conn, conn.transaction():
            conn.execute(_WRITE_LOCK)
            deleted = {document_id for (document_id,) in conn.execute(
                f"DELETE FROM {SCHEMA}.chunks WHERE document_id = ANY(%s) RETURNING document_id", (ids,))}
        return len(deleted)

    def retrieve(self, query: str, *, k: int, caller: Caller,
                 filters: Mapping[str, str] | None = None) -> list[RetrievedPassage]:
        """As InfoIndex.retrieve: the best `k` passages `caller` may read whose metadata matches `filters`."""
        self._check_open()
        _validate_query(query, k, filters)
        _check_query_storable(query, filters)
        rows, fused, features = self._candidates(query, k, caller, filters, with_features=self._settings.rerank)
        ranking = fused
        if features is not None:
            ranking = top_rows(fused.rows, features @ self._settings.rerank_weights.as_array(), len(fused.rows))
        return [_passage(rows[seq], score) for seq, score in zip(ranking.rows[:k].tolist(), ranking.scores[:k].tolist())]

    def rerank_candidates(self, query: str, *, caller: Caller,
                          filters: Mapping[str, str] | None = None) -> tuple[list[RetrievedPassage], np.ndarray]:
        """As InfoIndex.rerank_candidates: the fused candidates (best first) and their features."""
        self._check_open()
        _validate_query(query, 1, filters)
        _check_query_storable(query, filters)
        rows, fused, features = self._candidates(query, 1, caller, filters, with_features=True)
        passages = [_passage(rows[seq], score) for seq, score in zip(fused.rows.tolist(), fused.scores.tolist())]
        return passages, features if features is not None else np.zeros((0, 6))

    def _candidates(self, query: str, k: int, caller: Caller, filters: Mapping[str, str] | None, *,
                    with_features: bool) -> tuple[dict[int, ChunkRow], Ranking, np.ndarray | None]:
        """The rows needed by seq, the top max(candidates, k) rows by fused rank, and their features."""
        query_vector = self._encode([query])[0]
        self._check_open()
        wanted = dict(filters or {})
        if any("\x00" in key or "\x00" in value for key, value in wanted.items()):
            return {}, Ranking.empty(), None  # no stored metadata holds a NUL (see _check_storable)
        settings = self._settings
        pool = max(settings.candidates, k)
        terms = analyze(query, stem=settings.stem)
        groups = _storable_groups(caller)
        with self._connection() as conn, conn.transaction():
            begin_read(conn, groups)
            found = find_candidates(conn, terms=terms, query_vector=query_vector, filters=wanted,
                                    k1=settings.bm25_k1, b=settings.bm25_b, pool=pool,
                                    dense_limit=pool + _DENSE_MARGIN if settings.dense_weight > 0 else 0)
            if not found.visible:
                return {}, Ranking.empty(), None
            fused = self._fuse(found, query_vector, pool)
            needed = fused.rows if with_features else fused.rows[:k]
            rows = fetch_rows(conn, needed.tolist(), vectors=with_features, dim=self._dim)
        if not with_features or not len(fused.rows):
            return rows, fused, None
        return rows, fused, self._features(fused.rows, rows, found, terms, query_vector)

    def _fuse(self, found: Candidates, query_vector: np.ndarray, pool: int) -> Ranking:
        settings = self._settings
        rankings = [(Ranking(found.keyword_rows, found.keyword_scores), settings.bm25_weight)]
        if settings.dense_weight > 0:  # a zero weight would add nothing to the fusion
            dense = top_rows(found.dense_rows, row_dot(found.dense_vectors, query_vector), pool)
            rankings.append((dense, settings.dense_weight))
        fused = reciprocal_rank_fusion([(r, w) for r, w in rankings if w > 0], settings.rrf_k)
        return Ranking(fused.rows[:pool], fused.scores[:pool])

    @staticmethod
    def _features(seqs: np.ndarray, rows: Mapping[int, ChunkRow], found: Candidates, terms: list[str],
                  query_vector: np.ndarray) -> np.ndarray:
        """rerank_features over the candidates alone: local row i is seqs[i]; the statistics that need
        every visible row (idf, BM25) come from SQL."""
        chunks = [rows[seq] for seq in seqs.tolist()]
        sentence_matrices = [chunk.sentence_vectors for chunk in chunks]
        counts = np.array([len(matrix) for matrix in sentence_matrices], dtype=np.int64)  # type: ignore[arg-type]
        sentences = SentenceVectors(np.concatenate(sentence_matrices),  # type: ignore[arg-type]
                                    np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
        vectors = np.stack([chunk.vector for chunk in chunks])  # type: ignore[misc]
        bm25_scores = np.array([found.bm25.get(seq, 0.0) for seq in seqs.tolist()], dtype=np.float64)
        return rerank_features(np.arange(len(chunks), dtype=np.int64), terms=terms, query_vector=query_vector,
                               bm25_scores=bm25_scores, dense_scores=row_dot(vectors, query_vector),
                               keywords=KeywordIndex([chunk.terms for chunk in chunks]),
                               scorer=_VisibleIdf(found.idf),  # type: ignore[arg-type]
                               sentences=sentences)

    def stats(self, caller: Caller | None = None) -> IndexStats:
        """As InfoIndex.stats; bytes_on_disk is the size of the index's tables and their indexes (0 for a
        caller, and for an empty index)."""
        self._check_open()
        groups_seen = None if caller is None else _storable_groups(caller)
        with self._connection() as conn, conn.transaction():
            begin_read(conn, groups_seen)
            documents, chunks = conn.execute(
                f"SELECT count(DISTINCT document_id), count(*) FROM {SCHEMA}.chunks").fetchone() or (0, 0)
            groups = {group for (group,) in conn.execute(f"SELECT DISTINCT unnest(groups) FROM {SCHEMA}.chunks")}
            on_disk = 0
            if caller is None and chunks:
                on_disk = conn.execute(
                    "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r'",
                    (SCHEMA,)).fetchone()[0]  # type: ignore[index]
        if caller is not None:
            groups &= set(caller.groups)
        return IndexStats(documents=int(documents), chunks=int(chunks), groups=tuple(sorted(groups)),
                          dim=self._dim, bytes_on_disk=int(on_disk))

    def close(self) -> None:
        """Release the index: its connections, and its handle on an embedded server. Later calls raise
        InfoIndexError. Everything is already committed."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._pool.close()
        if self._embedded is not None:
            self._embedded.release()

    def _check_open(self) -> None:
        if self._closed:
            raise InfoIndexError(f"the index at {self._where} is closed; open it again")

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection; database and connection failures become IndexUnavailableError."""
        try:
            with self._pool.connection(timeout=_POOL_WAIT_S) as conn:
                yield conn
        except psycopg.Error as exc:
            self._check_open()  # a call racing close() sees "closed", not a pool error
            raise IndexUnavailableError(f"the index in {self._where} failed: {_reason(exc)}") from exc

    def _prepare(self, documents: Sequence[Document]) -> list[tuple[Any, ...]]:
        """Chunk, analyse and embed `documents` into INSERT rows (no transaction open: the slow part),
        batching the embedder calls exactly as InfoIndex does, so the vectors are the same."""
        pieces: list[tuple[Document, int, Any, list[str]]] = []
        for document in documents:
            for index, piece in enumerate(chunk_text(document.text, max_tokens=self._settings.chunk_tokens,
                                                     overlap_tokens=self._settings.chunk_overlap_tokens)):
                pieces.append((document, index, piece, [piece.text[a:b] for a, b in sentence_spans(piece.text)]))
        vectors = self._encode([piece.text for _, _, piece, _ in pieces])
        # A one-sentence chunk's sentence vector is its own vector: no need to encode it twice.
        encoded = iter(self._encode([text for *_, texts in pieces if len(texts) > 1 for text in texts]))
        rows = []
        for (document, index, piece, texts), vector in zip(pieces, vectors):
            sentence_matrix = vector[None, :] if len(texts) == 1 else np.stack([next(encoded) for _ in texts])
            rows.append(self._row(document.id, index, piece.text, piece.start, piece.end, document.metadata,
                                  sorted(set(document.groups)), vector, sentence_matrix))
        return rows

    def _row(self, document_id: str, chunk_index: int, text: str, start: int, end: int, metadata: Mapping[str, str],
             groups: Sequence[str], vector: np.ndarray, sentence_matrix: np.ndarray) -> tuple[Any, ...]:
        """The INSERT parameters of one chunk; its terms analysed here, with this index's stemming."""
        terms = analyze(text, stem=self._settings.stem)
        return (document_id, chunk_index, text, start, end, Jsonb(dict(metadata)), list(groups), terms, len(terms),
                vector_literal(vector), len(sentence_matrix),
                np.ascontiguousarray(sentence_matrix, dtype="<f4").tobytes())

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        batches = [list(texts[i:i + _ENCODE_BATCH]) for i in range(0, len(texts), _ENCODE_BATCH)]
        return np.concatenate([_unit_rows(self._embedder.encode(batch), len(batch), self._dim) for batch in batches])


def looks_like_dsn(target: str) -> bool:
    """A libpq URI, or a key=value string: one with `=` that names no existing path and does not start
    like a path (`/`, `.`, `~`)."""
    if target.startswith(("postgresql://", "postgres://")):
        return True
    return "=" in target and not target.startswith(("/", ".", "~")) and not Path(target).exists()


def redacted_dsn(dsn: str) -> str:
    """`dsn` as key=value pairs without its secrets (the password, and the client key's sslpassword), for
    messages, logs and Stats."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.Error:
        return "(a connection string that libpq cannot parse)"
    for secret in ("password", "sslpassword"):
        parts.pop(secret, None)
    return make_conninfo(**{key: value for key, value in parts.items() if value is not None})


def _connection_options(conninfo: str, where: str) -> dict[str, Any]:
    try:
        given = conninfo_to_dict(conninfo)
    except psycopg.Error:
        # libpq's message quotes the part it could not parse, which may be the password: not repeated here,
        # nor chained (a logged traceback would print it).
        raise IndexUnavailableError(f"the connection string of {where} cannot be parsed: check its quoting "
                                    "(key='value with spaces') and, in a URI, the percent-encoding of special "
                                    "characters (a space, @, : or / in the password)") from None
    options: dict[str, Any] = {"autocommit": True}
    if "connect_timeout" not in given:
        options["connect_timeout"] = _CONNECT_TIMEOUT_S
    return options


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _refuse_shared_restem(where: str, stored: bool, wanted: bool, embedded: EmbeddedServer | None) -> None:
    """Re-analysing follows the setting of whoever opens last: on a database others use, two settings would
    flip every term back and forth under each other's queries."""
    if embedded is None:
        raise IndexCorruptError(
            f"the index in {where} was analysed with stem={stored}, and it is opened with stem={wanted}: every "
            f"user of a shared database must use the same setting; open it with stem={stored}, or ingest into "
            "another database to change it")
    others = other_processes_using(embedded.directory)
    if others:
        raise IndexCorruptError(
            f"the index in {where} was analysed with stem={stored}, and it is opened with stem={wanted} while other "
            f"processes ({', '.join(map(str, others))}) use it: open it with stem={stored}, or stop them first to "
            "re-analyse it")


def _reanalyse(conn: psycopg.Connection, stem: bool) -> None:
    """Rewrites every chunk's terms for the other stemming setting: terms are derived data, and
    InfoIndex, which derives them at open, follows the setting it is opened with. The texts are read
    through a server-side cursor and the terms written back a batch at a time, in one transaction."""
    update = f"UPDATE {SCHEMA}.chunks SET terms = %s, term_count = %s WHERE seq = %s"
    with conn.transaction():
        conn.execute(_WRITE_LOCK)
        with conn.cursor(name="info_reanalyse") as texts, conn.cursor() as writer:
            texts.execute(f"SELECT seq, text FROM {SCHEMA}.chunks")
            while rows := texts.fetchmany(_REANALYSE_BATCH):
                writer.executemany(update, [(terms, len(terms), seq) for seq, text in rows
                                            for terms in [analyze(text, stem=stem)]])
        conn.execute(f"UPDATE {SCHEMA}.meta SET stem = %s", (stem,))


def _check_storable(document: Document) -> None:
    _refuse_nul(document.id, [document.text, *document.metadata.keys(), *document.metadata.values(), *document.groups])


def _check_storable_chunk(chunk: StoredChunk) -> None:
    _refuse_nul(chunk.document_id, [chunk.text, *chunk.metadata.keys(), *chunk.metadata.values(), *chunk.groups])


def _refuse_nul(document_id: str, texts: Sequence[str]) -> None:
    if any(_UNSTORABLE.search(text) for text in [document_id, *texts]):
        raise InvalidDocumentError(f"document {_printable(document_id[:40])!r} contains a NUL character or a lone "
                                   "surrogate (\\ud800-\\udfff, text decoded with errors='surrogateescape' or "
                                   "half of a UTF-16 pair), which PostgreSQL cannot store: remove it from the id, "
                                   "text, metadata and groups")


def _check_query_storable(query: str, filters: Mapping[str, str] | None) -> None:
    """A lone surrogate cannot be sent to PostgreSQL (nor encoded); a NUL in a filter just matches nothing."""
    pieces = [query, *((filters or {}).keys()), *((filters or {}).values())]
    if any(_SURROGATE.search(piece) for piece in pieces):
        raise InvalidQueryError("the query or a filter contains a lone surrogate (\\ud800-\\udfff), which is not "
                                "text: decode the input as UTF-8 and send it again")


def _printable(text: str) -> str:
    """`text` with its lone surrogates as escapes, so a message naming it can be written as UTF-8."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _storable_groups(caller: Caller) -> list[str]:
    """The caller's groups that a stored chunk can have: one with NUL or a lone surrogate matches none."""
    return [group for group in caller.groups if isinstance(group, str) and not _UNSTORABLE.search(group)]


def _chunk_batch(shape: IndexShape, rows: Sequence[tuple[Any, ...]]) -> ChunkBatch:
    """A ChunkBatch from _EXPORT's rows (binary format)."""
    chunks, vectors, sentences = [], [], []
    for document_id, index, text, start, end, metadata, groups, count, vector, sentence_vectors in rows:
        chunks.append(StoredChunk(document_id, index, text, start, end, MappingProxyType(dict(metadata)),
                                  tuple(groups), count))
        vectors.append(parse_vector(vector, shape.dim))
        sentences.append(np.frombuffer(sentence_vectors, dtype="<f4").reshape(count, shape.dim).astype(np.float32))
    return ChunkBatch(shape, tuple(chunks), np.stack(vectors), np.concatenate(sentences))


def _passage(row: ChunkRow, score: float) -> RetrievedPassage:
    return RetrievedPassage(passage_id=f"{row.document_id}#{row.chunk_index}", document_id=row.document_id,
                            text=row.text, score=float(score), start=row.start, end=row.end,
                            metadata=MappingProxyType(dict(row.metadata)))
