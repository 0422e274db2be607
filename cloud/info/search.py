"""The two searches behind the index, each over the rows (chunks) a caller may see.

Rows are chunk positions, 0..n-1, fixed between two rebuilds of the index. Every search takes a
boolean `visible` mask and never reads, scores or counts a row outside it: BM25's N, document
frequencies and average length are computed over the visible rows only, so a caller's scores are
exactly those of an index that never held the rows hidden from it.

`VectorStore` is the seam for a real vector database: the exact numpy store below answers the same
two calls. Exact search is linear in the visible rows, fine up to a few hundred thousand chunks.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

# Rows multiplied per block: bounds the temporary memory of an exact search over a large index.
_BLOCK_ROWS = 8192


@dataclass(frozen=True)
class Ranking:
    """Rows, best first, with their scores (same length)."""

    rows: np.ndarray  # int64
    scores: np.ndarray  # float64

    @classmethod
    def empty(cls) -> "Ranking":
        return cls(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64))


def top_rows(rows: np.ndarray, scores: np.ndarray, limit: int) -> Ranking:
    """The `limit` best rows by score, ties broken by row (so rankings are deterministic)."""
    if len(rows) == 0 or limit <= 0:
        return Ranking.empty()
    order = np.lexsort((rows, -scores))[:limit]
    return Ranking(rows[order].astype(np.int64), scores[order].astype(np.float64))


def row_dot(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """Each row's dot product with `vector`, computed row by row: a row's value does not depend on
    which other rows are in `matrix` (BLAS blocking would change the last bits), so hiding rows
    from a caller cannot move the scores of the rows it sees."""
    out = np.empty(len(matrix), dtype=np.float64)
    for start in range(0, len(matrix), _BLOCK_ROWS):
        block = matrix[start:start + _BLOCK_ROWS]
        out[start:start + len(block)] = np.einsum("ij,j->i", block, vector, dtype=np.float64)
    return out


class VectorStore(Protocol):
    """Dense vectors by row. A vector database behind this would filter by the same mask (or by the
    equivalent row set) before ranking, never after."""

    dim: int

    def search(self, query: np.ndarray, visible: np.ndarray, limit: int) -> Ranking:
        """The `limit` visible rows nearest to the unit vector `query` by cosine."""
        ...

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """The stored (unit) vectors of `rows`, in that order."""
        ...


class ExactVectorStore:
    """All vectors in one float32 matrix, searched exhaustively."""

    def __init__(self, matrix: np.ndarray) -> None:
        self.matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        self.dim = int(self.matrix.shape[1]) if self.matrix.ndim == 2 else 0

    def search(self, query: np.ndarray, visible: np.ndarray, limit: int) -> Ranking:
        rows = np.flatnonzero(visible)
        if len(rows) == 0:
            return Ranking.empty()
        return top_rows(rows, row_dot(self.matrix[rows], query.astype(np.float32)), limit)

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        return self.matrix[rows]


@dataclass(frozen=True)
class Bm25Parameters:
    k1: float
    b: float


class KeywordIndex:
    """BM25 over analysed terms, with postings per term (rows and term frequencies).

    The statistics are not stored: `scorer` computes N, the average length and each query term's
    document frequency over the visible rows at query time, which costs a pass over each query
    term's postings and one over the lengths.
    """

    def __init__(self, row_terms: Sequence[Sequence[str]]) -> None:
        postings: dict[str, tuple[list[int], list[int]]] = {}
        self.lengths = np.array([len(terms) for terms in row_terms], dtype=np.float64)
        # Kept for the re-ranker's coverage and phrase features.
        self.term_counts: list[Counter[str]] = []
        self.bigrams: list[frozenset[tuple[str, str]]] = []
        for row, terms in enumerate(row_terms):
            counts = Counter(terms)
            self.term_counts.append(counts)
            self.bigrams.append(frozenset(zip(terms, terms[1:])))
            for term, count in counts.items():
                rows, tfs = postings.setdefault(term, ([], []))
                rows.append(row)
                tfs.append(count)
        self._postings: Mapping[str, tuple[np.ndarray, np.ndarray]] = {
            term: (np.array(rows, dtype=np.int64), np.array(tfs, dtype=np.float64))
            for term, (rows, tfs) in postings.items()}

    def __len__(self) -> int:
        return len(self.lengths)

    def scorer(self, visible: np.ndarray) -> "Bm25Scorer":
        return Bm25Scorer(self, visible)


class Bm25Scorer:
    """BM25 as seen by one caller: the statistics of the visible rows only."""

    def __init__(self, index: KeywordIndex, visible: np.ndarray) -> None:
        self._index = index
        self._visible = visible
        self.documents = int(visible.sum())
        self.average_length = float(index.lengths[visible].mean()) if self.documents else 0.0

    def _visible_postings(self, term: str) -> tuple[np.ndarray, np.ndarray]:
        rows, tfs = self._index._postings.get(term, (np.zeros(0, np.int64), np.zeros(0)))
        keep = self._visible[rows]
        return rows[keep], tfs[keep]

    def idf(self, term: str) -> float:
        """Lucene's non-negative BM25 idf over the visible rows."""
        frequency = len(self._visible_postings(term)[0])
        return math.log(1.0 + (self.documents - frequency + 0.5) / (frequency + 0.5))

    def search(self, terms: Sequence[str], parameters: Bm25Parameters, limit: int) -> tuple[Ranking, np.ndarray]:
        """The `limit` best visible rows that contain at least one of `terms`, and the BM25 score of
        every row (0 where hidden or unmatched). A repeated query term counts once per occurrence."""
        scores = np.zeros(len(self._index), dtype=np.float64)
        if not self.documents or not terms:
            return Ranking.empty(), scores
        matched = np.zeros(len(self._index), dtype=bool)
        k1, b = parameters.k1, parameters.b
        for term in terms:
            rows, tfs = self._visible_postings(term)
            if len(rows) == 0:
                continue
            idf = math.log(1.0 + (self.documents - len(rows) + 0.5) / (len(rows) + 0.5))
            norm = k1 * (1.0 - b + b * self._index.lengths[rows] / self.average_length)
            scores[rows] += idf * tfs * (k1 + 1.0) / (tfs + norm)
            matched[rows] = True
        rows = np.flatnonzero(matched)
        return top_rows(rows, scores[rows], limit), scores
