"""The reads of a PostgreSQL Info index: candidate search and the rows the re-ranker needs.

Each runs in one REPEATABLE READ, READ ONLY transaction as the reader role with the caller's groups
set (see cloud/info/pg_schema.py), so row-level security removes unreadable chunks before any count,
and the two queries of a retrieval see the same rows.

BM25 is computed in SQL exactly as cloud/info/search.py's Bm25Scorer does it, term by term in query
order and with the same floating-point operations, so scores and their ties come out the same: N and
the average length over the visible rows (readable and matching the filters), a query term's document
frequency over the visible rows that contain it, a repeated query term counted once per occurrence.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from cloud.info.pg_schema import GROUPS_SETTING, READER_ROLE, SCHEMA

# Filters and access are the same three lines in every read: the policy adds the groups test.
_CANDIDATES = f"""
WITH
query_terms AS (SELECT term, position FROM unnest(%(terms)s::text[]) WITH ORDINALITY AS q(term, position)),
visible_stats AS (
    SELECT count(*)::float8 AS n, coalesce(sum(term_count), 0)::float8 AS total
    FROM {SCHEMA}.chunks WHERE metadata @> %(filters)s),
matched AS MATERIALIZED (
    SELECT seq, term_count, terms FROM {SCHEMA}.chunks
    WHERE metadata @> %(filters)s AND terms && %(terms)s::text[]),
frequencies AS (
    SELECT m.seq, m.term_count, t.term, count(*)::float8 AS tf
    FROM matched m CROSS JOIN LATERAL unnest(m.terms) AS t(term)
    WHERE t.term = ANY(%(terms)s::text[])
    GROUP BY m.seq, m.term_count, t.term),
idf AS (
    SELECT q.term, ln(1.0::float8 + (s.n - coalesce(d.df, 0) + 0.5::float8) / (coalesce(d.df, 0) + 0.5::float8)) AS idf
    FROM (SELECT DISTINCT term FROM query_terms) q
    LEFT JOIN (SELECT term, count(*)::float8 AS df FROM frequencies GROUP BY term) d USING (term)
    CROSS JOIN visible_stats s),
bm25 AS (
    SELECT f.seq, sum(i.idf * f.tf * (%(k1)s::float8 + 1.0::float8)
                      / (f.tf + %(k1)s::float8 * (1.0::float8 - %(b)s::float8
                                                  + %(b)s::float8 * f.term_count / (s.total / s.n)))
                      ORDER BY q.position) AS score
    FROM query_terms q JOIN frequencies f USING (term) JOIN idf i USING (term) CROSS JOIN visible_stats s
    GROUP BY f.seq),
keyword AS (SELECT seq, score FROM bm25 ORDER BY score DESC, seq LIMIT %(pool)s),
dense AS (
    SELECT seq, vector FROM {SCHEMA}.chunks WHERE metadata @> %(filters)s
    ORDER BY vector <#> %(query_vector)s::vector, seq LIMIT %(dense_limit)s)
SELECT 'stats' AS kind, NULL::bigint AS seq, n AS score, NULL::text AS term, NULL::vector AS vector
    FROM visible_stats
UNION ALL SELECT 'idf', NULL, idf, term, NULL FROM idf
UNION ALL SELECT 'keyword', seq, score, NULL, NULL FROM keyword
UNION ALL SELECT 'dense', d.seq, coalesce(b.score, 0), NULL, d.vector FROM dense d LEFT JOIN bm25 b USING (seq)
"""

_ROWS = f"""
SELECT seq, document_id, chunk_index, text, start_offset, end_offset, metadata, terms, sentence_count, {{extra}}
FROM {SCHEMA}.chunks WHERE seq = ANY(%(seqs)s::bigint[])
"""


@dataclass(frozen=True)
class Candidates:
    """What the engine found for one query, over the visible rows. Rows are chunk `seq`s."""

    visible: int  # N: how many chunks the caller may read that match the filters
    idf: Mapping[str, float]  # each distinct query term's BM25 idf over those chunks
    keyword_rows: np.ndarray  # the best `pool` by BM25, best first (ties by seq)
    keyword_scores: np.ndarray
    dense_rows: np.ndarray  # the nearest by the engine's (float32) inner product, best first
    dense_vectors: np.ndarray  # their stored vectors, float32 (len, dim)
    bm25: Mapping[int, float]  # the BM25 score of every row above (absent: 0)


@dataclass(frozen=True)
class ChunkRow:
    seq: int
    document_id: str
    chunk_index: int
    text: str
    start: int
    end: int
    metadata: Mapping[str, str]
    terms: list[str]
    vector: np.ndarray | None  # float32 (dim,), when the re-ranker's data was asked for
    sentence_vectors: np.ndarray | None  # float32 (sentences, dim), likewise


def begin_read(conn: psycopg.Connection, groups: Sequence[str] | None) -> None:
    """Starts the snapshot of a read; with `groups` (a caller's), as the reader role seeing only what
    they may read; with None, as the owner seeing everything."""
    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    if groups is not None:
        conn.execute(f"SET LOCAL ROLE {READER_ROLE}")
        conn.execute("SELECT set_config(%s, %s, true)", (GROUPS_SETTING, json.dumps(list(groups))))


def find_candidates(conn: psycopg.Connection, *, terms: Sequence[str], query_vector: np.ndarray,
                    filters: Mapping[str, str], k1: float, b: float, pool: int, dense_limit: int) -> Candidates:
    params = {"terms": list(terms), "filters": Jsonb(dict(filters)), "k1": float(k1), "b": float(b),
              "pool": pool, "dense_limit": dense_limit, "query_vector": vector_literal(query_vector)}
    visible = 0
    idf: dict[str, float] = {}
    keyword: list[tuple[int, float]] = []
    dense: list[tuple[int, bytes]] = []
    bm25: dict[int, float] = {}
    with conn.cursor(binary=True) as cursor:
        for kind, seq, score, term, vector in cursor.execute(_CANDIDATES, params):
            if kind == "stats":
                visible = int(score)
            elif kind == "idf":
                idf[term] = float(score)
            elif kind == "keyword":
                keyword.append((seq, float(score)))
                bm25[seq] = float(score)
            else:
                dense.append((seq, vector))
                bm25[seq] = float(score)
    keyword.sort(key=lambda pair: (-pair[1], pair[0]))  # UNION ALL does not keep the CTE's order
    dim = len(query_vector)
    dense_vectors = np.stack([parse_vector(raw, dim) for _, raw in dense]) if dense else np.zeros((0, dim), np.float32)
    return Candidates(visible, idf, np.array([seq for seq, _ in keyword], dtype=np.int64),
                      np.array([score for _, score in keyword], dtype=np.float64),
                      np.array([seq for seq, _ in dense], dtype=np.int64), dense_vectors, bm25)


def fetch_rows(conn: psycopg.Connection, seqs: Sequence[int], *, vectors: bool, dim: int) -> dict[int, ChunkRow]:
    """The chunks `seqs` that this read may see, by seq; with their vector and sentence vectors when asked."""
    query = _ROWS.format(extra="vector, sentence_vectors" if vectors else "NULL::vector, NULL::bytea")
    rows: dict[int, ChunkRow] = {}
    with conn.cursor(binary=True) as cursor:
        for seq, document_id, index, text, start, end, metadata, terms, count, vector, sentences in cursor.execute(
                query, {"seqs": list(seqs)}):
            rows[seq] = ChunkRow(seq, document_id, index, text, start, end, metadata, list(terms),
                                 parse_vector(vector, dim) if vector is not None else None,
                                 np.frombuffer(sentences, dtype="<f4").reshape(count, dim) if sentences is not None
                                 else None)
    return rows


def vector_literal(vector: np.ndarray) -> str:
    """pgvector's text form; every float32 prints in a form that reads back as the same float32."""
    return "[" + ",".join(repr(value) for value in np.asarray(vector, dtype=np.float32).tolist()) + "]"


def parse_vector(raw: bytes, dim: int) -> np.ndarray:
    """pgvector's binary form: dimension (int16), an unused int16, then big-endian float32s."""
    return np.frombuffer(raw, dtype=">f4", count=dim, offset=4).astype(np.float32)
