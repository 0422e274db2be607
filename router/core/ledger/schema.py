"""The ledger's SQLite schema: versioned by `PRAGMA user_version`, grown by ordered migrations.

`MIGRATIONS[i]` takes a database from version `i` to version `i + 1`, so a new schema change is one
new tuple at the end of the list, never an edit of an old one (databases in the field already ran it).
Opening a database at an older version runs the missing steps, each in its own transaction together
with its `user_version` bump, so a crash mid-migration leaves the file at a clean version. A database
written by a newer build is refused: this build cannot know what the newer columns mean.

Times are ISO-8601 UTC text with microseconds (`2025-01-31T12:00:00.000000+00:00`): one fixed
format, so text comparison orders them and `sqlite3` shells show them readably.
"""
from __future__ import annotations

import sqlite3
from typing import Sequence

Migration = tuple[str, ...]

_V1_TABLES: Migration = (
    """
    CREATE TABLE requests (
        id                TEXT PRIMARY KEY,
        created_at        TEXT NOT NULL,
        mode              TEXT NOT NULL,
        arbiter           TEXT NOT NULL DEFAULT '',
        decision_score    REAL,
        decision_reason   TEXT NOT NULL DEFAULT '',
        backends_run      TEXT NOT NULL DEFAULT '',   -- comma-separated backend names, in run order
        served_by         TEXT NOT NULL,
        edge_model        TEXT NOT NULL DEFAULT '',
        cloud_model       TEXT NOT NULL DEFAULT '',
        edge_parameters   REAL,                      -- the edge model's size, as configured
        final_text        TEXT,
        messages_json     TEXT NOT NULL,
        reference_answer  TEXT,
        metadata_json     TEXT NOT NULL DEFAULT '{}',
        total_cost_usd    REAL NOT NULL DEFAULT 0,
        edge_cost_usd     REAL NOT NULL DEFAULT 0,
        cloud_cost_usd    REAL NOT NULL DEFAULT 0,
        ttft_s            REAL,
        total_s           REAL,
        edge_s            REAL,
        cloud_s           REAL,
        finish_reason     TEXT NOT NULL DEFAULT '',
        content_hash      TEXT NOT NULL,             -- SHA-256 of the raw prompt and answer
        content_policy    TEXT NOT NULL CHECK (content_policy IN ('full', 'redacted', 'none'))
    )
    """,
    """
    CREATE TABLE backend_runs (
        id                INTEGER PRIMARY KEY,
        request_id        TEXT NOT NULL REFERENCES requests(id) ON DELETE CASCADE,
        ordinal           INTEGER NOT NULL,            -- position in GenerateResult.runs
        backend           TEXT NOT NULL,
        model             TEXT NOT NULL DEFAULT '',
        text              TEXT,
        prompt_tokens     INTEGER NOT NULL DEFAULT 0,
        completion_tokens INTEGER NOT NULL DEFAULT 0,
        queue_s           REAL,
        ttft_s            REAL,
        total_s           REAL,
        cost_usd          REAL NOT NULL DEFAULT 0,
        finish_reason     TEXT NOT NULL DEFAULT ''
    )
    """,
    """
    CREATE TABLE signals (
        id                INTEGER PRIMARY KEY,
        request_id        TEXT NOT NULL REFERENCES requests(id) ON DELETE CASCADE,
        kind              TEXT NOT NULL CHECK (kind IN ('reference', 'judge', 'agreement', 'feedback')),
        target            TEXT NOT NULL CHECK (target IN ('final', 'edge', 'cloud', 'pair')),
        score             REAL CHECK (score IS NULL OR (score >= 0 AND score <= 1)),
        correct           INTEGER CHECK (correct IS NULL OR correct IN (0, 1)),
        f1                REAL CHECK (f1 IS NULL OR (f1 >= 0 AND f1 <= 1)),
        thumbs_up         INTEGER CHECK (thumbs_up IS NULL OR thumbs_up IN (0, 1)),
        corrected_answer  TEXT,
        detail_json       TEXT NOT NULL DEFAULT '{}',
        source            TEXT NOT NULL DEFAULT '',
        created_at        TEXT NOT NULL
    )
    """,
)

# Kept apart from the tables so that the migration path (v1 -> v2) is exercised by real databases.
_V2_INDEXES: Migration = (
    "CREATE INDEX requests_by_time ON requests (created_at)",
    "CREATE INDEX requests_by_mode_time ON requests (mode, created_at)",
    "CREATE INDEX backend_runs_by_request ON backend_runs (request_id)",
    "CREATE INDEX signals_by_request ON signals (request_id, kind, target)",
)

# A server that streams no usage (llama-cpp-python's) leaves the router to count tokens; say which rows.
_V3_ESTIMATED_USAGE: Migration = (
    "ALTER TABLE backend_runs ADD COLUMN usage_estimated INTEGER NOT NULL DEFAULT 0 "
    "CHECK (usage_estimated IN (0, 1))",
)

# A mode may call backends several times per request (samples, a verification, a discarded draft): say
# why each run was made. No CHECK on the values, so a new purpose needs no table rebuild.
_V4_RUN_PURPOSE: Migration = (
    "ALTER TABLE backend_runs ADD COLUMN purpose TEXT NOT NULL DEFAULT 'answer'",
)

# The whole decision, not only its arbiter, score and reason: the scorer (which says "rule (no learned
# model: ...)" when a learned model was missing), the threshold and its kind, whether the cloud was asked,
# and every feature the scorer computed, as one JSON object. Features are numbers, not content: they are
# kept under every log_content policy, so a hashed-only ledger can still train the deferral model
# (router/core/learning/deferral.py). Rows written before v5 read '{}'.
_V5_DECISION_JSON: Migration = (
    "ALTER TABLE requests ADD COLUMN decision_json TEXT NOT NULL DEFAULT '{}'",
)

# The Info service (EDGE_RAG_CLOUD_INFO, the agent's search): every call, however it ended, priced and
# timed like a backend run, and the request's share of it; the passage ids the answer cites. Rows
# written before v6 read 0, NULL and '[]'. total_cost_usd includes info_cost_usd.
_V6_INFO_CALLS: Migration = (
    "ALTER TABLE requests ADD COLUMN info_cost_usd REAL NOT NULL DEFAULT 0",
    "ALTER TABLE requests ADD COLUMN info_s REAL",
    "ALTER TABLE requests ADD COLUMN citations_json TEXT NOT NULL DEFAULT '[]'",
    """
    CREATE TABLE info_calls (
        id                INTEGER PRIMARY KEY,
        request_id        TEXT NOT NULL REFERENCES requests(id) ON DELETE CASCADE,
        ordinal           INTEGER NOT NULL,            -- position in GenerateResult.info_calls
        operation         TEXT NOT NULL,               -- retrieve | search
        query             TEXT,                        -- filtered by log_content like any request text
        passage_ids_json  TEXT NOT NULL DEFAULT '[]',
        scores_json       TEXT NOT NULL DEFAULT '[]',
        latency_s         REAL,
        cost_usd          REAL NOT NULL DEFAULT 0,
        error             TEXT NOT NULL DEFAULT ''
    )
    """,
    "CREATE INDEX info_calls_by_request ON info_calls (request_id)",
)

# Who asked: the authenticated principal's name (GenerateRequest.caller.user, set by the door), for the
# audit trail (who retrieved what), Feedback's ownership check, and the budgets, which sum
# cloud_cost_usd per principal per day and month: hence the index on (principal, created_at). Info calls
# belong to their request: join on request_id for their principal. Rows written before v7 read ''.
_V7_PRINCIPAL: Migration = (
    "ALTER TABLE requests ADD COLUMN principal TEXT NOT NULL DEFAULT ''",
    "CREATE INDEX requests_by_principal_time ON requests (principal, created_at)",
)

MIGRATIONS: tuple[Migration, ...] = (_V1_TABLES, _V2_INDEXES, _V3_ESTIMATED_USAGE, _V4_RUN_PURPOSE,
                                     _V5_DECISION_JSON, _V6_INFO_CALLS, _V7_PRINCIPAL)
SCHEMA_VERSION = len(MIGRATIONS)


class SchemaVersionError(RuntimeError):
    """The database was written by a newer build than this one."""


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Brings the database up to `len(migrations)`; returns the version it started at.

    `conn` must be in autocommit mode (`isolation_level=None`) so the explicit transactions here are
    the only ones.
    """
    target = len(migrations)
    start = schema_version(conn)
    if start > target:
        raise SchemaVersionError(
            f"ledger database is at schema version {start}, but this build of hybrid-router knows "
            f"versions up to {target}; upgrade hybrid-router, or point the ledger at another file")
    for version in range(start, target):
        # BEGIN IMMEDIATE takes the write lock first, so two processes opening the same old file
        # cannot both run a step; the second re-reads the version after the first commits.
        conn.execute("BEGIN IMMEDIATE")
        try:
            if schema_version(conn) != version:
                conn.execute("ROLLBACK")
                continue
            for statement in migrations[version]:
                conn.execute(statement)
            # PRAGMA takes no bound parameters; `version + 1` is an int we computed.
            conn.execute(f"PRAGMA user_version = {version + 1:d}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return start
