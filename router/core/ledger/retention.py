"""Retention: what the ledger may no longer keep is deleted by its writer thread (ledger.retention_days,
ledger.retention_max_bytes).

When (the writer, router/core/ledger/writer.py, keeps a `RetentionSchedule`): once when the writer starts,
then every `SWEEP_INTERVAL_S` of wall time, the writer waking for it when idle, and, for the size cap,
whenever a committed batch leaves the database above it (the check reads page counts SQLite keeps in
memory, so it is made after every commit). A request past its age is therefore deleted within
`SWEEP_INTERVAL_S` of it; the database may pass its cap by what one batch writes before the sweep.

Age: requests created more than `retention_days` ago are deleted, oldest first, with their backend runs,
signals and Info calls (their foreign keys are ON DELETE CASCADE; every sweep turns foreign keys on).

Size: the bytes of the pages in use ((page_count - freelist_count) * page_size), the WAL not counted.
While they exceed `retention_max_bytes`, the oldest requests are deleted, down to `LOW_WATER` of the cap,
so that a ledger at its cap is not swept after every batch.

Space. A database this version creates vacuums incrementally (`auto_vacuum = INCREMENTAL`, which SQLite
takes only before a database's first page is written: router/core/ledger/store.py `connect`); after a
sweep that deleted rows, `PRAGMA incremental_vacuum` returns the freed pages to the file system, at a cost
in proportion to those pages, and the WAL is checkpointed and truncated. An existing database cannot be
switched without rewriting it: a database from an earlier version is rewritten once (`VACUUM`), and only
when retention_max_bytes is set and its file is larger than the cap, after the sweep has brought the pages
in use under the cap, so that the rewrite costs at most the cap in I/O and in temporary space. Until then
(or when the rewrite fails, say for want of room for its copy), freed pages are reused by new rows: the
file stops growing, but does not shrink.

Work per sweep is bounded (`MAX_CHUNKS_PER_SWEEP` deletes of at most `CHUNK_ROWS` requests, each its own
transaction), so a first sweep over a large old ledger does not hold the queue up: a sweep that stopped
at the bound is due again at once, and the writer takes the jobs that arrived meanwhile in between.
"""
from __future__ import annotations

import math
import sqlite3
import time
from dataclasses import dataclass
from typing import Callable, Optional

from router.core.ledger.store import format_time

SWEEP_INTERVAL_S = 300.0
CHUNK_ROWS = 500
MAX_CHUNKS_PER_SWEEP = 20
LOW_WATER = 0.9
SECONDS_PER_DAY = 86_400.0
AUTO_VACUUM_NONE = 0
AUTO_VACUUM_INCREMENTAL = 2

_DELETE_OLDER_THAN = ("DELETE FROM requests WHERE id IN "
                      "(SELECT id FROM requests WHERE created_at < ? ORDER BY created_at LIMIT ?)")
_DELETE_OLDEST = "DELETE FROM requests WHERE id IN (SELECT id FROM requests ORDER BY created_at LIMIT ?)"


@dataclass(frozen=True)
class RetentionPolicy:
    """What may be kept; None: no limit of that kind."""

    max_age_days: Optional[float] = None
    max_bytes: Optional[int] = None

    def __post_init__(self) -> None:
        if self.max_age_days is not None and not self.max_age_days > 0:
            raise ValueError(f"retention_days must be positive, got {self.max_age_days!r}")
        if self.max_bytes is not None and not self.max_bytes > 0:
            raise ValueError(f"retention_max_bytes must be positive, got {self.max_bytes!r}")

    @property
    def enabled(self) -> bool:
        return self.max_age_days is not None or self.max_bytes is not None


@dataclass
class SweepOutcome:
    deleted_by_age: int = 0
    deleted_by_size: int = 0
    finished: bool = True    # False: it stopped at MAX_CHUNKS_PER_SWEEP and is due again at once
    rewritten: bool = False  # an earlier version's database was rewritten to vacuum incrementally
    rewrite_error: str = ""  # why that rewrite failed (the database is as it was)

    @property
    def deleted(self) -> int:
        return self.deleted_by_age + self.deleted_by_size


def _pragma(conn: sqlite3.Connection, name: str) -> int:
    return int(conn.execute(f"PRAGMA {name}").fetchone()[0])


def bytes_in_use(conn: sqlite3.Connection) -> int:
    return (_pragma(conn, "page_count") - _pragma(conn, "freelist_count")) * _pragma(conn, "page_size")


def file_bytes(conn: sqlite3.Connection) -> int:
    """The database's size as of its last commit, pages still in the WAL included."""
    return _pragma(conn, "page_count") * _pragma(conn, "page_size")


def over_cap(conn: sqlite3.Connection, policy: RetentionPolicy) -> bool:
    return policy.max_bytes is not None and bytes_in_use(conn) > policy.max_bytes


def _delete(conn: sqlite3.Connection, statement: str, parameters: tuple[object, ...]) -> int:
    conn.execute("BEGIN IMMEDIATE")
    try:
        deleted = conn.execute(statement, parameters).rowcount
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return max(0, deleted)


def sweep(conn: sqlite3.Connection, policy: RetentionPolicy, now_s: float, *, chunk_rows: int = CHUNK_ROWS,
          max_chunks: int = MAX_CHUNKS_PER_SWEEP, may_rewrite: bool = True) -> SweepOutcome:
    """Deletes what `policy` no longer allows at `now_s` (Unix time), then gives the space back (see the
    module docstring); `may_rewrite` False skips the one-time rewrite of an earlier version's database.
    `conn` must be in autocommit mode, outside any transaction."""
    outcome = SweepOutcome()
    conn.execute("PRAGMA foreign_keys = ON")  # the cascade to runs, signals and Info calls depends on it
    chunks = 0
    if policy.max_age_days is not None:
        cutoff = format_time(now_s - policy.max_age_days * SECONDS_PER_DAY)
        while True:
            if chunks >= max_chunks:
                outcome.finished = False
                break
            deleted = _delete(conn, _DELETE_OLDER_THAN, (cutoff, chunk_rows))
            chunks += 1
            outcome.deleted_by_age += deleted
            if deleted < chunk_rows:
                break
    if policy.max_bytes is not None and outcome.finished:
        used = bytes_in_use(conn)
        if used > policy.max_bytes:
            target = int(policy.max_bytes * LOW_WATER)
            rows = int(conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0])
            while used > target and rows > 0:
                if chunks >= max_chunks:
                    outcome.finished = False
                    break
                # Rows in proportion to the excess: a large excess goes in few chunks, a small one takes few rows.
                take = min(chunk_rows, max(1, math.ceil(rows * (used - target) / used)))
                deleted = _delete(conn, _DELETE_OLDEST, (take,))
                chunks += 1
                if deleted == 0:
                    break
                outcome.deleted_by_size += deleted
                rows -= deleted
                used = bytes_in_use(conn)
    if outcome.deleted:
        if _pragma(conn, "auto_vacuum") == AUTO_VACUUM_INCREMENTAL:
            # executescript, not execute: one step of the cursor would free a single page.
            conn.executescript("PRAGMA incremental_vacuum;")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    if (may_rewrite and policy.max_bytes is not None and outcome.finished
            and _pragma(conn, "auto_vacuum") == AUTO_VACUUM_NONE and file_bytes(conn) > policy.max_bytes):
        try:
            conn.executescript("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")
        except sqlite3.Error as exc:
            outcome.rewrite_error = str(exc) or type(exc).__name__
        else:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            outcome.rewritten = True
    return outcome


class RetentionSchedule:
    """When the writer sweeps next (see the module docstring). Used by the writer thread only."""

    def __init__(self, policy: RetentionPolicy, *, interval_s: float = SWEEP_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._interval_s = interval_s
        self._clock = clock
        self._next_due = clock()  # due at once: the sweep when the writer starts
        self._failed = False
        # A rewrite that failed once (no room for its copy) is not retried at every sweep: each try
        # costs up to the cap in I/O. Freed pages are still reused meanwhile.
        self.may_rewrite = True

    def seconds_until_due(self) -> float:
        return max(0.0, self._next_due - self._clock())

    def due(self, conn: sqlite3.Connection) -> bool:
        if self._clock() >= self._next_due:
            return True
        return not self._failed and over_cap(conn, self.policy)

    def swept(self, outcome: Optional[SweepOutcome]) -> None:
        """After a sweep; None when it failed: it is tried again after the interval, not at every batch."""
        self._failed = outcome is None
        if outcome is not None and outcome.rewrite_error:
            self.may_rewrite = False
        finished = outcome is None or outcome.finished
        self._next_due = self._clock() + (self._interval_s if finished else 0.0)
