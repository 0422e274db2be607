"""The Info index: ingest documents, retrieve passages for a caller, persist everything in one directory.

Retrieval is exact hybrid search over chunks: BM25 over analysed terms and cosine over the embedder's
vectors, each ranking cut to its top `candidates`, fused by weighted reciprocal rank fusion and, when
`rerank` is on, re-scored by the features of cloud/info/ranking.py.

Access control comes first: a chunk whose document has groups, none of them the caller's, is removed
from the candidate set before anything is scored or counted (see cloud/info/search.py), so what one
caller sees, scores included, does not depend on documents it may not read.

Ingest encodes every chunk, and every sentence of a chunk with more than one (the re-ranker's
sentence feature): about twice the encoder work of the chunks alone, paid once per document.

Thread safety: one lock. Ingest and delete hold it while they swap in and persist a new state; a
retrieval only holds it to take the current state, which is immutable, and searches without it. The
embedder is called outside the lock (the project's encoder is thread-safe).
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Protocol

import numpy as np

from cloud.info.analysis import analyze
from cloud.info.chunking import chunk_text, sentence_spans
from cloud.info.documents import Document, validate_document
from cloud.info.errors import IndexCorruptError, InfoIndexError, InvalidDocumentError, InvalidQueryError
from cloud.info.ranking import RerankWeights, SentenceVectors, reciprocal_rank_fusion, rerank_features
from cloud.info.search import Bm25Parameters, ExactVectorStore, KeywordIndex, Ranking, VectorStore, row_dot, top_rows
from cloud.info.store import IndexDirectory, IndexShape, Snapshot, StoredChunk, make_private_directories
from cloud.info.transfer import ChunkBatch, complete_documents, concatenate

MAX_QUERY_CHARS = 4000
MAX_K = 100
# Texts per embedder call at ingest: bounds the memory of one call on long documents.
_ENCODE_BATCH = 32


class Embedder(Protocol):
    """Texts in, float32 (n, d) unit-norm rows out; d must not change. The project's is
    edge.encoder.TextEncoder; an optional integer `dim` attribute saves a probe call at open."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        ...


@dataclass(frozen=True)
class Caller:
    """Who asks: a document with groups is visible to a caller in at least one of them."""

    user: str = ""
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class IndexSettings:
    """How documents are cut (`chunk_*`: fixed once an index is built) and how retrieval scores.

    The retrieval defaults are the values chosen on SQuAD by bench/retrieval_tuning.py (see
    bench/results/retrieval_tuning.md). `stem` switches the light suffix stemmer of the keyword
    terms; `rerank_*` are the weights of the re-ranking features (cloud/info/ranking.py).
    Chunks of 300 tokens (60 overlap) measured about a point higher recall there
    (bench/results/retrieval_tuning_chunks300.md), with its own tuned weights, at the cost of longer
    passages in the prompt; 200 stays the default.
    """

    chunk_tokens: int = 200
    chunk_overlap_tokens: int = 40
    bm25_k1: float = 0.6
    bm25_b: float = 0.5
    bm25_weight: float = 1.0
    dense_weight: float = 0.3
    rrf_k: int = 5
    rerank: bool = True
    candidates: int = 50
    stem: bool = True
    rerank_bm25: float = 0.05
    rerank_dense: float = 4.0
    rerank_sentence_dense: float = 3.0
    rerank_coverage: float = 3.0
    rerank_bigrams: float = 1.5
    rerank_rarest_term: float = 0.5

    def __post_init__(self) -> None:
        if self.chunk_tokens < 1:
            raise ValueError(f"chunk_tokens must be at least 1, got {self.chunk_tokens}")
        if not 0 <= self.chunk_overlap_tokens < self.chunk_tokens:
            raise ValueError(f"chunk_overlap_tokens must be in 0..{self.chunk_tokens - 1}, "
                             f"got {self.chunk_overlap_tokens}")
        if self.bm25_k1 < 0 or not 0 <= self.bm25_b <= 1:
            raise ValueError(f"bm25_k1 must be >= 0 and bm25_b in 0..1, got {self.bm25_k1} and {self.bm25_b}")
        if self.bm25_weight + self.dense_weight <= 0:
            raise ValueError("bm25_weight and dense_weight cannot both be 0: nothing would be ranked")
        if self.rrf_k < 0 or self.candidates < 1:
            raise ValueError(f"rrf_k must be >= 0 and candidates >= 1, got {self.rrf_k} and {self.candidates}")
        negative = [f.name for f in fields(self) if f.name.endswith("weight") or f.name.startswith("rerank_")
                    if getattr(self, f.name) < 0]
        if negative:
            raise ValueError(f"weights must not be negative: {', '.join(negative)}")

    @property
    def rerank_weights(self) -> RerankWeights:
        return RerankWeights(self.rerank_bm25, self.rerank_dense, self.rerank_sentence_dense,
                             self.rerank_coverage, self.rerank_bigrams, self.rerank_rarest_term)


@dataclass(frozen=True)
class RetrievedPassage:
    passage_id: str  # f"{document_id}#{chunk_index}"
    document_id: str
    text: str
    score: float  # the re-ranker's score, or the fused RRF score when rerank is off; higher is better
    start: int  # character offsets of `text` in the document's text
    end: int
    metadata: Mapping[str, str]


@dataclass(frozen=True)
class IngestReport:
    documents: int  # distinct documents ingested (a repeated id in one batch counts once: the last wins)
    chunks: int  # chunks they were cut into
    replaced: int  # how many of them replaced a document already in the index


@dataclass(frozen=True)
class IndexStats:
    documents: int
    chunks: int
    groups: tuple[str, ...]
    dim: int
    bytes_on_disk: int


class _State:
    """An immutable view of the index: the chunks and every structure searched over them."""

    def __init__(self, snapshot: Snapshot, terms: list[list[str]]) -> None:
        self.snapshot = snapshot
        self.chunks = snapshot.chunks
        self.terms = terms
        self.keywords = KeywordIndex(terms)
        self.vectors: VectorStore = ExactVectorStore(snapshot.vectors)
        counts = np.array([chunk.sentences for chunk in self.chunks], dtype=np.int64)
        self.sentence_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.sentences = SentenceVectors(snapshot.sentence_vectors, self.sentence_offsets)
        self.public = np.array([not chunk.groups for chunk in self.chunks], dtype=bool)
        group_rows: dict[str, list[int]] = {}
        metadata_rows: dict[tuple[str, str], list[int]] = {}
        for row, chunk in enumerate(self.chunks):
            for group in chunk.groups:
                group_rows.setdefault(group, []).append(row)
            for pair in chunk.metadata.items():
                metadata_rows.setdefault(pair, []).append(row)
        self.group_rows = {group: np.array(rows, dtype=np.int64) for group, rows in group_rows.items()}
        self.metadata_rows = {pair: np.array(rows, dtype=np.int64) for pair, rows in metadata_rows.items()}

    def visible(self, caller: Caller, filters: Mapping[str, str] | None = None) -> np.ndarray:
        """The rows `caller` may read that match every filter."""
        mask = self.public.copy()
        for group in caller.groups:
            rows = self.group_rows.get(group)
            if rows is not None:
                mask[rows] = True
        for pair in (filters or {}).items():
            matching = np.zeros(len(self.chunks), dtype=bool)
            rows = self.metadata_rows.get(pair)
            if rows is not None:
                matching[rows] = True
            mask &= matching
        return mask


class InfoIndex:
    """A persistent, access-controlled hybrid retrieval index over documents (see the module docstring)."""

    def __init__(self, directory: IndexDirectory, embedder: Embedder, settings: IndexSettings,
                 state: _State, dim: int) -> None:
        """Use `InfoIndex.open`."""
        self._directory = directory
        self._embedder = embedder
        self._settings = settings
        self._state = state
        self._dim = dim
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def open(cls, directory: Path, *, embedder: Embedder, settings: IndexSettings = IndexSettings()) -> "InfoIndex":
        """The index persisted in `directory`, or a new empty one (the directory is created).

        IndexCorruptError when a file there cannot be read or is not this library's, or when the index
        was built with other chunk settings or an embedder of another dimension: it is refused, not
        rebuilt, since the original documents are not kept; the message says which setting differs.
        """
        path = Path(directory)
        if path.exists() and not path.is_dir():
            raise IndexCorruptError(f"{path} is a file, not an index directory; give a directory path "
                                    "(it is created if missing)")
        make_private_directories(path)
        store = IndexDirectory(path)
        snapshot = store.load()
        dim = _embedder_dim(embedder)
        shape = IndexShape(dim, settings.chunk_tokens, settings.chunk_overlap_tokens)
        if snapshot is None:
            empty = np.zeros((0, dim), dtype=np.float32)
            snapshot = Snapshot(shape, (), empty, empty)
        elif snapshot.shape != shape:
            raise IndexCorruptError(_shape_mismatch(path, snapshot.shape, shape))
        terms = [analyze(chunk.text, stem=settings.stem) for chunk in snapshot.chunks]
        return cls(store, embedder, settings, _State(snapshot, terms), dim)

    @property
    def settings(self) -> IndexSettings:
        return self._settings

    def ingest(self, documents: Iterable[Document]) -> IngestReport:
        """Add or replace documents by id, and persist before returning.

        Every document of the batch is validated first (InvalidDocumentError names the first bad one,
        and nothing is changed); a repeated id in the batch keeps its last version.
        """
        self._check_open()
        latest = validated_batch(documents)
        if not latest:
            return IngestReport(0, 0, 0)
        new_chunks, new_vectors, new_sentences = self._prepare(latest)
        replaced = self._replace(new_chunks, new_vectors, new_sentences)
        return IngestReport(len(latest), len(new_chunks), replaced)

    def export_chunks(self, batch: int = 500) -> Iterator[ChunkBatch]:
        """Every chunk, in ingestion order, `batch` chunks at a time, with its vector and sentence vectors
        as stored (cloud/info/transfer.py): the index as it is when the call is made."""
        self._check_open()
        if not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be a positive number of chunks, got {batch!r}")
        with self._lock:
            self._check_open()
            state = self._state
        return _export(state, batch)

    def import_chunks(self, batches: Iterable[ChunkBatch]) -> IngestReport:
        """Add another index's chunks as they are (cloud/info/transfer.py): the vectors are copied, not
        encoded again, the terms analysed here; a document here whose id they bring is replaced, the
        others kept. Saved once, when every batch has been read: an IndexCorruptError for a batch of
        another shape, or chunks out of the stream's order, leaves the index as it was."""
        self._check_open()
        shape = self._state.snapshot.shape
        incoming = concatenate(shape, list(complete_documents(batches, shape, str(self._directory.path))))
        if not len(incoming):
            return IngestReport(0, 0, 0)
        chunks = [replace(chunk, metadata=MappingProxyType(dict(chunk.metadata)), groups=tuple(chunk.groups))
                  for chunk in incoming.chunks]
        replaced = self._replace(chunks, incoming.vectors, incoming.sentence_vectors)
        return IngestReport(len({chunk.document_id for chunk in chunks}), len(chunks), replaced)

    def _replace(self, new_chunks: Sequence[StoredChunk], new_vectors: np.ndarray, new_sentences: np.ndarray) -> int:
        """Removes the documents `new_chunks` belong to, appends these, persists; returns how many of
        those documents were here."""
        new_terms = [analyze(chunk.text, stem=self._settings.stem) for chunk in new_chunks]
        ids = {chunk.document_id for chunk in new_chunks}
        with self._lock:
            self._check_open()
            state = self._state
            existing = {chunk.document_id for chunk in state.chunks}
            keep = np.array([chunk.document_id not in ids for chunk in state.chunks], dtype=bool)
            snapshot = Snapshot(
                state.snapshot.shape,
                tuple(c for c, kept in zip(state.chunks, keep) if kept) + tuple(new_chunks),
                np.concatenate([state.snapshot.vectors[keep], new_vectors]),
                np.concatenate([state.snapshot.sentence_vectors[self._sentence_mask(state, keep)], new_sentences]))
            self._commit(snapshot, [t for t, kept in zip(state.terms, keep) if kept] + new_terms)
        return len(ids & existing)

    def delete(self, document_ids: Sequence[str]) -> int:
        """Remove documents by id, persisting the change; returns how many of them existed."""
        self._check_open()
        if isinstance(document_ids, str):  # a lone id would be read as its characters
            raise TypeError("delete takes a sequence of document ids; wrap a single id in a list")
        ids = set(document_ids)
        with self._lock:
            self._check_open()
            state = self._state
            existing = {chunk.document_id for chunk in state.chunks} & ids
            if not existing:
                return 0
            keep = np.array([chunk.document_id not in ids for chunk in state.chunks], dtype=bool)
            snapshot = Snapshot(state.snapshot.shape, tuple(c for c, kept in zip(state.chunks, keep) if kept),
                                state.snapshot.vectors[keep],
                                state.snapshot.sentence_vectors[self._sentence_mask(state, keep)])
            self._commit(snapshot, [t for t, kept in zip(state.terms, keep) if kept])
            return len(existing)

    def retrieve(self, query: str, *, k: int, caller: Caller,
                 filters: Mapping[str, str] | None = None) -> list[RetrievedPassage]:
        """The best `k` passages for `query` that `caller` may read and whose document metadata equals
        every `filters` entry; fewer when fewer match. InvalidQueryError for a blank query, one over
        4,000 characters, k outside 1..100 or non-string filters."""
        self._check_open()
        _validate_query(query, k, filters)
        state, fused, features = self._candidates(query, k, caller, filters, with_features=self._settings.rerank)
        ranking = fused
        if features is not None:
            ranking = top_rows(fused.rows, features @ self._settings.rerank_weights.as_array(), len(fused.rows))
        return [_passage(state.chunks[row], score)
                for row, score in zip(ranking.rows[:k].tolist(), ranking.scores[:k].tolist())]

    def rerank_candidates(self, query: str, *, caller: Caller,
                          filters: Mapping[str, str] | None = None) -> tuple[list[RetrievedPassage], np.ndarray]:
        """The fused candidates (best first, scored by RRF) and their re-ranking features, one row each,
        columns in `RerankWeights` order, whatever `rerank` says. For tuning the re-ranker's weights
        (bench/retrieval_tuning.py): `retrieve` ranks these by `features @ weights`."""
        self._check_open()
        _validate_query(query, 1, filters)
        state, fused, features = self._candidates(query, 1, caller, filters, with_features=True)
        passages = [_passage(state.chunks[row], score)
                    for row, score in zip(fused.rows.tolist(), fused.scores.tolist())]
        return passages, features if features is not None else np.zeros((0, 6))

    def _candidates(self, query: str, k: int, caller: Caller, filters: Mapping[str, str] | None, *,
                    with_features: bool) -> tuple[_State, Ranking, np.ndarray | None]:
        """The state searched, the top max(candidates, k) rows by fused rank, and their features."""
        query_vector = self._encode([query])[0]
        with self._lock:
            self._check_open()
            state = self._state
        visible = state.visible(caller, filters)
        if not visible.any():
            return state, Ranking.empty(), None
        settings = self._settings
        pool = max(settings.candidates, k)
        terms = analyze(query, stem=settings.stem)
        scorer = state.keywords.scorer(visible)
        keyword_ranking, bm25_scores = scorer.search(terms, Bm25Parameters(settings.bm25_k1, settings.bm25_b), pool)
        rankings = [(keyword_ranking, settings.bm25_weight)]
        if settings.dense_weight > 0:  # a zero weight would add nothing to the fusion
            rankings.append((state.vectors.search(query_vector, visible, pool), settings.dense_weight))
        fused = reciprocal_rank_fusion([(r, w) for r, w in rankings if w > 0], settings.rrf_k)
        fused = Ranking(fused.rows[:pool], fused.scores[:pool])
        if not with_features or not len(fused.rows):
            return state, fused, None
        dense_scores = row_dot(state.vectors.vectors(fused.rows), query_vector)
        features = rerank_features(fused.rows, terms=terms, query_vector=query_vector, bm25_scores=bm25_scores,
                                   dense_scores=dense_scores, keywords=state.keywords, scorer=scorer,
                                   sentences=state.sentences)
        return state, fused, features

    def stats(self, caller: Caller | None = None) -> IndexStats:
        """What the index holds. With a `caller`, only what that caller may read: its documents and
        chunks, the caller's own groups among theirs, and no size on disk (0), which would count
        hidden documents."""
        self._check_open()
        with self._lock:
            state = self._state
            on_disk = self._directory.bytes_on_disk() if caller is None and state.chunks else 0
        chunks = state.chunks
        if caller is not None:
            visible = state.visible(caller)
            chunks = [chunk for chunk, seen in zip(state.chunks, visible) if seen]
        groups = {group for chunk in chunks for group in chunk.groups}
        if caller is not None:
            groups &= set(caller.groups)
        return IndexStats(documents=len({chunk.document_id for chunk in chunks}), chunks=len(chunks),
                          groups=tuple(sorted(groups)), dim=self._dim, bytes_on_disk=on_disk)

    def close(self) -> None:
        """Release the index; later calls raise InfoIndexError. Everything is already on disk."""
        with self._lock:
            self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise InfoIndexError(f"the index at {self._directory.path} is closed; open it again")

    def _commit(self, snapshot: Snapshot, terms: list[list[str]]) -> None:
        """Persist, then publish (under the lock): a failed save leaves the old state in place."""
        self._directory.save(snapshot)
        self._state = _State(snapshot, terms)

    @staticmethod
    def _sentence_mask(state: _State, keep: np.ndarray) -> np.ndarray:
        return np.repeat(keep, np.diff(state.sentence_offsets))

    def _prepare(self, documents: Sequence[Document]) -> tuple[list[StoredChunk], np.ndarray, np.ndarray]:
        """Chunk and embed `documents` (no lock held: this is the slow part of an ingest)."""
        chunks: list[StoredChunk] = []
        sentence_texts: list[list[str]] = []
        for document in documents:
            groups = tuple(sorted(set(document.groups)))
            pieces = chunk_text(document.text, max_tokens=self._settings.chunk_tokens,
                                overlap_tokens=self._settings.chunk_overlap_tokens)
            for index, piece in enumerate(pieces):
                sentences = [piece.text[a:b] for a, b in sentence_spans(piece.text)]
                chunks.append(StoredChunk(document.id, index, piece.text, piece.start, piece.end,
                                          MappingProxyType(dict(document.metadata)), groups, len(sentences)))
                sentence_texts.append(sentences)
        vectors = self._encode([chunk.text for chunk in chunks])
        # A one-sentence chunk's sentence vector is its own vector: no need to encode it twice.
        multi = [texts for texts in sentence_texts if len(texts) > 1]
        encoded = iter(self._encode([text for texts in multi for text in texts]))
        rows = [vectors[i:i + 1] if len(texts) == 1 else np.stack([next(encoded) for _ in texts])
                for i, texts in enumerate(sentence_texts)]
        return chunks, vectors, np.concatenate(rows) if rows else np.zeros((0, self._dim), np.float32)

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        batches = [list(texts[i:i + _ENCODE_BATCH]) for i in range(0, len(texts), _ENCODE_BATCH)]
        return np.concatenate([_unit_rows(self._embedder.encode(batch), len(batch), self._dim) for batch in batches])


def _export(state: _State, batch: int) -> Iterator[ChunkBatch]:
    offsets = state.sentence_offsets
    for start in range(0, len(state.chunks), batch):
        stop = min(start + batch, len(state.chunks))
        yield ChunkBatch(state.snapshot.shape, tuple(state.chunks[start:stop]), state.snapshot.vectors[start:stop],
                         state.snapshot.sentence_vectors[offsets[start]:offsets[stop]])


def _unit_rows(raw: np.ndarray, count: int, dim: int) -> np.ndarray:
    matrix = np.asarray(raw, dtype=np.float32)
    if matrix.shape != (count, dim):
        raise InfoIndexError(f"the embedder returned shape {matrix.shape} for {count} texts, expected "
                             f"({count}, {dim}); an Embedder must return one row of its fixed dimension per text")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    # The Protocol promises unit rows; renormalising costs nothing and keeps cosines honest if not.
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


def _embedder_dim(embedder: Embedder) -> int:
    dim = getattr(embedder, "dim", None)
    if isinstance(dim, int) and dim > 0:
        return dim
    probe = np.asarray(embedder.encode(["dimension probe"]))
    if probe.ndim != 2 or probe.shape[0] != 1 or probe.shape[1] < 1:
        raise InfoIndexError(f"the embedder returned shape {probe.shape} for one text, expected (1, d)")
    return int(probe.shape[1])


def shape_mismatch_reason(stored: IndexShape, wanted: IndexShape) -> str:
    """Why an index built with `stored` cannot be opened as `wanted`, and how to open it (every engine's
    message starts so)."""
    if stored.dim != wanted.dim:
        return (f"was built with a {stored.dim}-d embedder, and this embedder gives {wanted.dim}-d vectors; "
                "open it with the embedder it was built with")
    return (f"was built with chunk_tokens={stored.chunk_tokens}, chunk_overlap_tokens={stored.chunk_overlap_tokens} "
            f"(asked: {wanted.chunk_tokens}, {wanted.chunk_overlap_tokens}); open it with those settings")


def _shape_mismatch(path: Path, stored: IndexShape, wanted: IndexShape) -> str:
    return (f"the index in {path} {shape_mismatch_reason(stored, wanted)}, or delete the directory and re-ingest "
            "the documents")


def validated_batch(documents: Iterable[Document],
                    check: Callable[[Document], None] | None = None) -> list[Document]:
    """The batch's documents, each validated first (InvalidDocumentError names the first bad one, before
    anything is changed), with `check` adding an engine's own refusals; a repeated id keeps its last version."""
    batch = list(documents)
    for document in batch:
        if not isinstance(document, Document):
            raise InvalidDocumentError(f"ingest takes Document objects, got {type(document).__name__}")
        validate_document(document)
        if check is not None:
            check(document)
    return list({document.id: document for document in batch}.values())


def _validate_query(query: str, k: int, filters: Mapping[str, str] | None) -> None:
    if not isinstance(query, str) or not query.strip():
        raise InvalidQueryError("the query is empty: send the question or keywords to search for")
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidQueryError(f"the query is {len(query)} characters long, over the limit of {MAX_QUERY_CHARS}: "
                                "shorten it to the question itself")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
        raise InvalidQueryError(f"k is {k!r}: ask for between 1 and {MAX_K} passages")
    if filters is not None and (not isinstance(filters, Mapping) or not all(
            isinstance(key, str) and isinstance(value, str) for key, value in filters.items())):
        raise InvalidQueryError(f"filters {filters!r} must map metadata keys to string values")


def _passage(chunk: StoredChunk, score: float) -> RetrievedPassage:
    return RetrievedPassage(passage_id=f"{chunk.document_id}#{chunk.chunk_index}", document_id=chunk.document_id,
                            text=chunk.text, score=float(score), start=chunk.start, end=chunk.end,
                            metadata=chunk.metadata)
