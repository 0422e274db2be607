"""The tables of a PostgreSQL Info index, and the check that a database holds one of the right shape.

Everything lives in the schema `info_index` of the database the index is opened on:
    meta      one row: format, version, the IndexShape (dim, chunk settings) and the stemming the
              stored terms were analysed with
    chunks    one row per chunk, `seq` its ingestion order (a replaced document's chunks get new,
              higher numbers, so ties break as in InfoIndex, whose rows are in ingestion order); its
              document's metadata (jsonb) and groups; the analysed terms (cloud/info/analysis.py) and
              their count; the chunk vector as pgvector `vector(d)`; its sentences' vectors as raw
              float32 bytes, which only the re-ranker reads back and nothing searches

Reads run as the role `info_index_reader` (SET LOCAL ROLE) with the caller's groups in the
transaction-local setting `info.groups`; row-level security lets that role see a chunk only when it has
no groups or shares one with the caller, so every count, average and score computed in a read covers
the caller's rows and nothing else. Writes run as the connecting user, the tables' owner.
"""
from __future__ import annotations

from dataclasses import dataclass

import psycopg

from cloud.info.errors import IndexCorruptError
from cloud.info.store import IndexShape

FORMAT = "hybrid-router-info-index-pg"
VERSION = 1
SCHEMA = "info_index"
READER_ROLE = "info_index_reader"
GROUPS_SETTING = "info.groups"
# Serialises schema creation between processes opening the same database at once.
_SETUP_LOCK_KEY = 0x1AF0_0001

# A role is cluster-wide, so two databases being set up at once may both try to create it.
_CREATE_READER = f"""
DO $$ BEGIN
    CREATE ROLE {READER_ROLE} NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$"""

_TABLES = """
CREATE SCHEMA {schema};
CREATE TABLE {schema}.meta (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    format text NOT NULL,
    version integer NOT NULL,
    dim integer NOT NULL,
    chunk_tokens integer NOT NULL,
    chunk_overlap_tokens integer NOT NULL,
    stem boolean NOT NULL
);
CREATE TABLE {schema}.chunks (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    document_id text NOT NULL,
    chunk_index integer NOT NULL,
    text text NOT NULL,
    start_offset integer NOT NULL,
    end_offset integer NOT NULL,
    metadata jsonb NOT NULL,
    groups text[] NOT NULL,
    terms text[] NOT NULL,
    term_count integer NOT NULL,
    vector vector({dim}) NOT NULL,
    sentence_count integer NOT NULL,
    sentence_vectors bytea NOT NULL,
    UNIQUE (document_id, chunk_index)
);
CREATE INDEX chunks_terms ON {schema}.chunks USING gin (terms);
CREATE INDEX chunks_metadata ON {schema}.chunks USING gin (metadata jsonb_path_ops);
ALTER TABLE {schema}.chunks ENABLE ROW LEVEL SECURITY;
CREATE POLICY readable_by_caller ON {schema}.chunks FOR SELECT TO {reader} USING (
    groups = '{{}}' OR groups && ARRAY(SELECT jsonb_array_elements_text(
        coalesce(nullif(current_setting('{setting}', true), ''), '[]')::jsonb)));
GRANT USAGE ON SCHEMA {schema} TO {reader};
GRANT SELECT ON {schema}.chunks TO {reader};
"""


@dataclass(frozen=True)
class StoredMeta:
    shape: IndexShape
    stem: bool


def prepare_schema(conn: psycopg.Connection, shape: IndexShape, stem: bool, where: str) -> StoredMeta:
    """Creates the tables on a database without them, else reads them; returns what the meta row says.

    IndexCorruptError when the schema is there without a readable meta row, was written by another
    format version, or holds another shape than `shape` (named in the message, `where` naming the index).
    psycopg errors (no pgvector, no privilege) pass through for the caller to report.
    """
    with conn.transaction():
        conn.execute(_CREATE_READER)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SETUP_LOCK_KEY,))
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        schema_exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (SCHEMA,)).fetchone()
        if schema_exists is None:
            ddl = _TABLES.format(schema=SCHEMA, dim=int(shape.dim), reader=READER_ROLE, setting=GROUPS_SETTING)
            conn.execute(ddl)  # type: ignore[arg-type]  # built from constants and an int: no parameters
            conn.execute(f"INSERT INTO {SCHEMA}.meta (format, version, dim, chunk_tokens, chunk_overlap_tokens, stem)"
                         " VALUES (%s, %s, %s, %s, %s, %s)",
                         (FORMAT, VERSION, shape.dim, shape.chunk_tokens, shape.chunk_overlap_tokens, stem))
        if conn.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.meta",)).fetchone() in (None, (None,)):
            raise IndexCorruptError(f"the database of {where} has a schema {SCHEMA} without its meta table: "
                                    f"it is not an Info index; drop the schema {SCHEMA} or use another database")
        row = conn.execute(f"SELECT format, version, dim, chunk_tokens, chunk_overlap_tokens, stem "
                           f"FROM {SCHEMA}.meta").fetchone()
    if row is None or row[0] != FORMAT:
        raise IndexCorruptError(f"the schema {SCHEMA} in the database of {where} is not an Info index "
                                f"(no meta row of format {FORMAT}); drop the schema or use another database")
    if row[1] != VERSION:
        raise IndexCorruptError(f"the Info index in {where} has format version {row[1]!r}, this library reads "
                                f"version {VERSION}; drop the schema {SCHEMA} and re-ingest the documents")
    stored = StoredMeta(IndexShape(int(row[2]), int(row[3]), int(row[4])), bool(row[5]))
    if stored.shape != shape:
        raise IndexCorruptError(shape_mismatch(where, stored.shape, shape))
    return stored


def shape_mismatch(where: str, stored: IndexShape, wanted: IndexShape) -> str:
    """InfoIndex's mismatch message, for an index in a database."""
    if stored.dim != wanted.dim:
        why = (f"was built with a {stored.dim}-d embedder, and this embedder gives {wanted.dim}-d vectors; "
               "open it with the embedder it was built with")
    else:
        why = (f"was built with chunk_tokens={stored.chunk_tokens}, chunk_overlap_tokens={stored.chunk_overlap_tokens} "
               f"(asked: {wanted.chunk_tokens}, {wanted.chunk_overlap_tokens}); open it with those settings")
    return f"the index in {where} {why}, or drop the schema {SCHEMA} there and re-ingest the documents"
