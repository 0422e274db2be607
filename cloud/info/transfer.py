"""Chunks as an index holds them, vectors included: what `export_chunks` yields and `import_chunks` takes.

A copy through these batches is exact: the chunk vectors and sentence vectors travel as stored, nothing
is encoded again, and the target derives only the keyword terms from the text (with its own stemming).
So the same documents give the same passages and scores on either engine, and no encoder has to run.

The stream's contract, which both engines' exports keep and imports check (`complete_documents`):
every batch has the target's IndexShape; a document's chunks come together, in chunk order 0, 1, 2, …,
and its id does not come back later in the stream.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from cloud.info.errors import IndexCorruptError
from cloud.info.store import IndexShape, StoredChunk


@dataclass(frozen=True)
class ChunkBatch:
    """Consecutive chunks of an index, in ingestion order, with their vectors.

    `vectors` is float32 (len(chunks), shape.dim), row i chunk i's; `sentence_vectors` is float32
    (sum of the chunks' `sentences`, shape.dim): every chunk's sentence vectors, in chunk order."""

    shape: IndexShape
    chunks: tuple[StoredChunk, ...]
    vectors: np.ndarray
    sentence_vectors: np.ndarray

    def __len__(self) -> int:
        return len(self.chunks)

    def sentence_offsets(self) -> np.ndarray:
        """Row r's sentence vectors are sentence_vectors[offsets[r]:offsets[r + 1]]."""
        counts = np.array([chunk.sentences for chunk in self.chunks], dtype=np.int64)
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def rows(self, start: int, stop: int) -> "ChunkBatch":
        """Chunks start..stop-1, with their vectors."""
        offsets = self.sentence_offsets()
        return ChunkBatch(self.shape, self.chunks[start:stop], self.vectors[start:stop],
                          self.sentence_vectors[offsets[start]:offsets[stop]])


def concatenate(shape: IndexShape, batches: list[ChunkBatch]) -> ChunkBatch:
    empty = np.zeros((0, shape.dim), dtype=np.float32)
    return ChunkBatch(shape, tuple(chunk for batch in batches for chunk in batch.chunks),
                      np.concatenate([empty, *(batch.vectors for batch in batches)]),
                      np.concatenate([empty, *(batch.sentence_vectors for batch in batches)]))


def complete_documents(batches: Iterable[ChunkBatch], shape: IndexShape, where: str) -> Iterator[ChunkBatch]:
    """`batches` checked against the stream's contract (module docstring) and the target's `shape`, and
    re-cut so that no document spans two of the batches yielded: the chunks of the last document of a
    batch are held back until the next batch shows that it is complete. IndexCorruptError, naming the
    index `where` the chunks were to go, for a batch that breaks the contract; the batches before it
    have been yielded."""
    finished: set[str] = set()
    pending: ChunkBatch | None = None
    current: str | None = None  # the document whose chunks arrive now
    next_index = 0
    for batch in batches:
        _check_batch(batch, shape, where)
        for chunk in batch.chunks:
            if chunk.document_id != current:
                if chunk.document_id in finished:
                    raise IndexCorruptError(f"the chunks imported into {where} bring document "
                                            f"{chunk.document_id[:80]!r} twice: a document's chunks must come "
                                            "together, once")
                if current is not None:
                    finished.add(current)
                current, next_index = chunk.document_id, 0
            if chunk.chunk_index != next_index:
                raise IndexCorruptError(f"the chunks imported into {where} bring chunk {chunk.chunk_index} of "
                                        f"document {chunk.document_id[:80]!r} where chunk {next_index} was due: "
                                        "a document's chunks must come in order from 0")
            next_index += 1
        whole = batch if pending is None else concatenate(shape, [pending, batch])
        if not len(whole):
            continue
        last_start = len(whole) - 1
        while last_start > 0 and whole.chunks[last_start - 1].document_id == whole.chunks[-1].document_id:
            last_start -= 1
        if last_start:
            yield whole.rows(0, last_start)
        pending = whole.rows(last_start, len(whole))
    if pending is not None and len(pending):
        yield pending


def _check_batch(batch: ChunkBatch, shape: IndexShape, where: str) -> None:
    if not isinstance(batch, ChunkBatch):
        raise IndexCorruptError(f"import_chunks takes ChunkBatch objects, got {type(batch).__name__}")
    if batch.shape != shape:
        raise IndexCorruptError(
            f"the chunks imported into {where} come from an index of {batch.shape.dim}-d vectors cut with "
            f"chunk_tokens={batch.shape.chunk_tokens}, chunk_overlap_tokens={batch.shape.chunk_overlap_tokens}; "
            f"this index holds {shape.dim}-d vectors cut with chunk_tokens={shape.chunk_tokens}, "
            f"chunk_overlap_tokens={shape.chunk_overlap_tokens}: open it with the source's settings and encoder")
    sentences = sum(chunk.sentences for chunk in batch.chunks)
    for name, matrix, rows in (("vectors", batch.vectors, len(batch.chunks)),
                               ("sentence_vectors", batch.sentence_vectors, sentences)):
        if not isinstance(matrix, np.ndarray) or matrix.dtype != np.float32 or matrix.shape != (rows, shape.dim):
            got = f"{matrix.dtype} {matrix.shape}" if isinstance(matrix, np.ndarray) else type(matrix).__name__
            raise IndexCorruptError(f"a batch of chunks imported into {where} has {name} of {got}, expected "
                                    f"float32 ({rows}, {shape.dim})")
        if not np.isfinite(matrix).all():
            raise IndexCorruptError(f"a batch of chunks imported into {where} has {name} that are not finite")
    if any(chunk.sentences < 1 for chunk in batch.chunks):
        raise IndexCorruptError(f"a batch of chunks imported into {where} has a chunk without sentences")
