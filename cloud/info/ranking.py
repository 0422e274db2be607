"""Combining the keyword and dense rankings, and the optional re-ranking stage over the candidates.

Fusion is weighted reciprocal rank fusion over each ranking's top candidates:
`w_bm25 / (rrf_k + rank_bm25) + w_dense / (rrf_k + rank_dense)` (a row absent from a ranking gets
nothing from it). Ranks, not scores, so the two scales never need calibrating.

The re-ranker then scores the fused candidates by a weighted sum of features that ranks cannot see
(the weights were fitted on SQuAD questions by bench/retrieval_tuning.py):
- bm25: the passage's BM25 score over the best candidate's, and dense: its cosine with the query;
- sentence_dense: the best cosine between the query and one of the passage's sentences, since a
  question usually paraphrases a single sentence that a whole-passage vector dilutes;
- coverage: the idf-weighted share of the query's terms that the passage contains;
- bigrams: the share of the query's adjacent term pairs found adjacent in the passage;
- rarest_term: 1 when the passage contains the query's most specific (highest idf) term.
Every feature is computed from visible rows and visible statistics only.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cloud.info.search import Bm25Scorer, KeywordIndex, Ranking, row_dot, top_rows


def reciprocal_rank_fusion(rankings: Sequence[tuple[Ranking, float]], rrf_k: int) -> Ranking:
    """Rows of all `rankings` by weighted RRF score, best first (ties by row)."""
    fused: dict[int, float] = {}
    for ranking, weight in rankings:
        for rank, row in enumerate(ranking.rows.tolist(), start=1):
            fused[row] = fused.get(row, 0.0) + weight / (rrf_k + rank)
    if not fused:
        return Ranking.empty()
    rows = np.fromiter(fused.keys(), dtype=np.int64, count=len(fused))
    return top_rows(rows, np.fromiter(fused.values(), dtype=np.float64, count=len(fused)), len(fused))


@dataclass(frozen=True)
class RerankWeights:
    bm25: float
    dense: float
    sentence_dense: float
    coverage: float
    bigrams: float
    rarest_term: float

    def as_array(self) -> np.ndarray:
        return np.array([self.bm25, self.dense, self.sentence_dense, self.coverage, self.bigrams,
                         self.rarest_term], dtype=np.float64)


@dataclass(frozen=True)
class SentenceVectors:
    """Unit vectors of every chunk's sentences: chunk `row`'s are `matrix[offsets[row]:offsets[row + 1]]`."""

    matrix: np.ndarray
    offsets: np.ndarray

    def best_cosine(self, row: int, query: np.ndarray) -> float:
        start, end = int(self.offsets[row]), int(self.offsets[row + 1])
        return float(row_dot(self.matrix[start:end], query).max()) if end > start else 0.0


def rerank_features(candidates: np.ndarray, *, terms: Sequence[str], query_vector: np.ndarray,
                    bm25_scores: np.ndarray, dense_scores: np.ndarray, keywords: KeywordIndex,
                    scorer: Bm25Scorer, sentences: SentenceVectors) -> np.ndarray:
    """The (len(candidates), 6) feature matrix, columns in RerankWeights' field order."""
    unique_terms = list(dict.fromkeys(terms))
    idf = {term: scorer.idf(term) for term in unique_terms}
    total_idf = sum(idf.values())
    rarest = max(unique_terms, key=lambda term: idf[term]) if unique_terms else None
    query_bigrams = set(zip(terms, terms[1:]))
    best_bm25 = float(bm25_scores[candidates].max()) if len(candidates) else 0.0
    features = np.zeros((len(candidates), 6), dtype=np.float64)
    for index, row in enumerate(candidates.tolist()):
        counts = keywords.term_counts[row]
        features[index] = (
            bm25_scores[row] / best_bm25 if best_bm25 > 0 else 0.0,
            dense_scores[index],
            sentences.best_cosine(row, query_vector),
            sum(idf[t] for t in unique_terms if t in counts) / total_idf if total_idf > 0 else 0.0,
            len(query_bigrams & keywords.bigrams[row]) / len(query_bigrams) if query_bigrams else 0.0,
            1.0 if rarest is not None and rarest in counts else 0.0,
        )
    return features
