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
the caller's rows and nothing else. Writes run as the connecting user: the tables' owner, or any user
granted the privileges `access_hint` lists (every role but the reader writes and reads every row).

Opening looks in the catalogs first and creates only what is missing (`prepare_schema`), so a database
provisioned once opens with a user that may create nothing (CONNECT, USAGE on the schema, the table
privileges and membership in the reader role), and on a read-only server (a hot standby). What a user may
not create, or a membership it lacks, is an IndexUnavailableError naming the statement to run.
"""
from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import errors, sql

from cloud.info.errors import IndexCorruptError, IndexUnavailableError
from cloud.info.index import shape_mismatch_reason
from cloud.info.store import IndexShape

FORMAT = "hybrid-router-info-index-pg"
VERSION = 1
SCHEMA = "info_index"
READER_ROLE = "info_index_reader"
GROUPS_SETTING = "info.groups"
# Serialises schema creation between processes opening the same database at once.
_SETUP_LOCK_KEY = 0x1AF0_0001

# SQLSTATEs of a statement this user may not run here: no privilege, or a read-only server or transaction.
_NOT_ALLOWED = (errors.InsufficientPrivilege, errors.ReadOnlySqlTransaction)
# PostgreSQL 16 separates the right to SET ROLE from membership (a role's creator gets ADMIN without SET).
_PG16 = 160000

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
CREATE POLICY writable_by_grantees ON {schema}.chunks FOR ALL TO PUBLIC
    USING (current_user <> '{reader}') WITH CHECK (current_user <> '{reader}');
GRANT USAGE ON SCHEMA {schema} TO {reader};
GRANT SELECT ON {schema}.chunks TO {reader};
"""


@dataclass(frozen=True)
class StoredMeta:
    shape: IndexShape
    stem: bool


def prepare_schema(conn: psycopg.Connection, shape: IndexShape, stem: bool, where: str) -> StoredMeta:
    """Creates what a database lacks of an index (the reader role and this user's right to SET ROLE to
    it, the `vector` extension, the schema and its tables), then reads the meta row; returns what it says.

    IndexUnavailableError, naming the statement to run, for what is missing and this user may not create;
    IndexCorruptError when the schema is there without a readable meta row, was written by another
    format version, or holds another shape than `shape` (named in the message, `where` naming the index).
    Other psycopg errors pass through for the caller to report.
    """
    present = conn.execute(
        "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = %s), EXISTS (SELECT FROM pg_extension WHERE extname = "
        "'vector'), EXISTS (SELECT FROM pg_namespace WHERE nspname = %s)", (READER_ROLE, SCHEMA)).fetchone()
    has_reader, has_vector, has_schema = present  # type: ignore[misc]
    if not has_reader:
        _create_reader(conn, where)
    _ensure_reader_membership(conn, where)
    if not (has_vector and has_schema):
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SETUP_LOCK_KEY,))
            if conn.execute("SELECT FROM pg_extension WHERE extname = 'vector'").fetchone() is None:
                _create_vector(conn, where)
            if conn.execute("SELECT FROM pg_namespace WHERE nspname = %s", (SCHEMA,)).fetchone() is None:
                _create_tables(conn, shape, stem, where)
    try:
        if conn.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.meta",)).fetchone() in (None, (None,)):
            raise IndexCorruptError(f"the database of {where} has a schema {SCHEMA} without its meta table: "
                                    f"it is not an Info index; drop the schema {SCHEMA} or use another database")
        row = conn.execute(f"SELECT format, version, dim, chunk_tokens, chunk_overlap_tokens, stem "
                           f"FROM {SCHEMA}.meta").fetchone()
    except errors.InsufficientPrivilege as exc:
        raise IndexUnavailableError(f"{_current_user(conn)} may not read the Info index in {where}: "
                                    f"{access_hint(conn)}") from exc
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


def access_hint(conn: psycopg.Connection) -> str:
    """The grants (as the tables' owner or a superuser) that let this user use an existing index."""
    user = _current_user(conn)
    return (f"as the tables' owner or a superuser, run `GRANT USAGE ON SCHEMA {SCHEMA} TO {user}; "
            f"GRANT SELECT ON {SCHEMA}.meta TO {user}; GRANT SELECT, INSERT, UPDATE, DELETE ON {SCHEMA}.chunks "
            f"TO {user}; {reader_grant(conn)}`")


def reader_grant(conn: psycopg.Connection) -> str:
    """The statement that lets this user SET ROLE to the reader role."""
    option = " WITH SET TRUE" if conn.info.server_version >= _PG16 else ""
    return f"GRANT {READER_ROLE} TO {_current_user(conn)}{option};"


def missing_vector_message(where: str, *, installed_on_server: bool, user: str) -> str:
    """Why an index cannot be made in a database without pgvector, and what to do."""
    if not installed_on_server:
        return (f"the server of {where} does not have pgvector: install pgvector (the `vector` extension) on "
                "the server, then open the index again (or run `CREATE EXTENSION vector;` in the database as a "
                "superuser)")
    return (f"the database of {where} does not have the `vector` extension, and {user} may not create it: "
            "run `CREATE EXTENSION vector;` in that database as a superuser")


def _create_reader(conn: psycopg.Connection, where: str) -> None:
    try:
        with conn.transaction():
            conn.execute(_CREATE_READER)
    except _NOT_ALLOWED as exc:
        user = _current_user(conn)
        raise IndexUnavailableError(
            f"the role {READER_ROLE}, which the Info index's reads run as, does not exist on the server of {where}, "
            f"and {user} may not create it: as a superuser (or a role with CREATEROLE), run "
            f"`CREATE ROLE {READER_ROLE} NOLOGIN; {reader_grant(conn)}`") from exc


def _ensure_reader_membership(conn: psycopg.Connection, where: str) -> None:
    """This user must be able to SET ROLE to the reader: a role's creator (CREATEROLE, not superuser) is
    not, so it grants itself the role; anyone else must be granted it."""
    if _can_set_reader(conn):
        return
    option = sql.SQL(" WITH SET TRUE" if conn.info.server_version >= _PG16 else "")
    try:
        with conn.transaction():
            conn.execute(sql.SQL("GRANT {} TO CURRENT_USER{}").format(sql.Identifier(READER_ROLE), option))
    except _NOT_ALLOWED as exc:
        raise IndexUnavailableError(
            f"{_current_user(conn)} may not SET ROLE to {READER_ROLE}, which the Info index's reads in {where} "
            f"run as: as a superuser (or the role's admin), run `{reader_grant(conn)}`") from exc
    if not _can_set_reader(conn):
        raise IndexUnavailableError(
            f"{_current_user(conn)} may not SET ROLE to {READER_ROLE}, which the Info index's reads in {where} "
            f"run as: as a superuser, run `{reader_grant(conn)}`")


def _can_set_reader(conn: psycopg.Connection) -> bool:
    privilege = "SET" if conn.info.server_version >= _PG16 else "MEMBER"
    row = conn.execute("SELECT pg_has_role(current_user, %s, %s)", (READER_ROLE, privilege)).fetchone()
    return bool(row and row[0])


def _create_vector(conn: psycopg.Connection, where: str) -> None:
    """In the setup transaction; the `vector` extension is not in this database."""
    installed = conn.execute("SELECT FROM pg_available_extensions WHERE name = 'vector'").fetchone() is not None
    if not installed:
        raise IndexUnavailableError(missing_vector_message(where, installed_on_server=False,
                                                           user=_current_user(conn)))
    try:
        with conn.transaction():  # a savepoint: the message below needs a live transaction
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except _NOT_ALLOWED as exc:
        raise IndexUnavailableError(missing_vector_message(where, installed_on_server=True,
                                                           user=_current_user(conn))) from exc


def _create_tables(conn: psycopg.Connection, shape: IndexShape, stem: bool, where: str) -> None:
    """In the setup transaction; there is no schema `info_index` in this database."""
    ddl = _TABLES.format(schema=SCHEMA, dim=int(shape.dim), reader=READER_ROLE, setting=GROUPS_SETTING)
    try:
        with conn.transaction():
            conn.execute(ddl)  # type: ignore[arg-type]  # built from constants and an int: no parameters
    except _NOT_ALLOWED as exc:
        user = _current_user(conn)
        database = conn.info.dbname
        raise IndexUnavailableError(
            f"the database of {where} holds no Info index yet (no schema {SCHEMA}), and {user} may not create one: "
            f"open it once as its owner or a superuser, or run `GRANT CREATE ON DATABASE "
            f"{sql.Identifier(database).as_string(conn)} TO {user};` first") from exc
    conn.execute(f"INSERT INTO {SCHEMA}.meta (format, version, dim, chunk_tokens, chunk_overlap_tokens, stem)"
                 " VALUES (%s, %s, %s, %s, %s, %s)",
                 (FORMAT, VERSION, shape.dim, shape.chunk_tokens, shape.chunk_overlap_tokens, stem))


def _current_user(conn: psycopg.Connection) -> str:
    """This connection's user, quoted as an identifier where it needs it."""
    row = conn.execute("SELECT quote_ident(current_user)").fetchone()
    return str(row[0]) if row else "this user"


def shape_mismatch(where: str, stored: IndexShape, wanted: IndexShape) -> str:
    """InfoIndex's mismatch message, for an index in a database."""
    return (f"the index in {where} {shape_mismatch_reason(stored, wanted)}, or drop the schema {SCHEMA} there and "
            "re-ingest the documents")
