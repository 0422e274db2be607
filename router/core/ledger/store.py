"""Synchronous SQLite access: connections, row types, batch writes and reads.

One `LedgerStore` wraps one connection and is used by one thread at a time: the writer thread owns
a store for all writes; each read (`get`, stats, export) opens a short-lived store of its own, which
WAL lets run beside the writer without blocking it.
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence


from router.domain.errors import ErrorKind, NotFoundError, RouterError
from router.core.ledger.files import create_private_file, narrow_database_to_owner
from router.core.ledger.schema import MIGRATIONS, Migration, migrate

BUSY_TIMEOUT_MS = 5_000


class LedgerNotFoundError(NotFoundError):
    """No request with this id is in the ledger."""


class LedgerUnavailableError(RouterError):
    """The ledger cannot be used right now (it could not open its file, or writes are failing)."""

    kind = ErrorKind.UNAVAILABLE


def format_time(moment: "datetime | float") -> str:
    """ISO-8601 UTC with microseconds: the one format the ledger stores, so text order is time order.
    A naive datetime is taken to be UTC."""
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, tz=timezone.utc)
    elif moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def to_json(value: Any) -> str:
    # default=str: a metadata value that is not JSON (a Path, an enum) is stored as its text
    # rather than failing the whole row.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class RequestRow:
    """One `requests` row; field names are the column names."""

    id: str
    created_at: str
    mode: str
    arbiter: str
    decision_score: Optional[float]
    decision_reason: str
    backends_run: str
    served_by: str
    edge_model: str
    cloud_model: str
    edge_parameters: Optional[float]
    final_text: Optional[str]
    messages_json: str
    reference_answer: Optional[str]
    metadata_json: str
    total_cost_usd: float
    edge_cost_usd: float
    cloud_cost_usd: float
    ttft_s: Optional[float]
    total_s: Optional[float]
    edge_s: Optional[float]
    cloud_s: Optional[float]
    finish_reason: str
    content_hash: str
    content_policy: str
    decision_json: str = "{}"   # the whole Decision (writer.decision_record); schema v5
    info_cost_usd: float = 0.0  # schema v6: the Info service's calls (total_cost_usd includes them)
    info_s: Optional[float] = None
    citations_json: str = "[]"
    principal: str = ""  # schema v7: who asked (GenerateRequest.caller.user, the authenticated principal)


@dataclass(frozen=True)
class InfoCallRow:
    """One `info_calls` row, less its request id."""

    ordinal: int
    operation: str
    query: Optional[str]
    passage_ids_json: str
    scores_json: str
    latency_s: Optional[float]
    cost_usd: float
    error: str


@dataclass(frozen=True)
class RunRow:
    """One `backend_runs` row, less its request id (the record it belongs to gives that)."""

    ordinal: int
    backend: str
    model: str
    text: Optional[str]
    prompt_tokens: int
    completion_tokens: int
    queue_s: Optional[float]
    ttft_s: Optional[float]
    total_s: Optional[float]
    cost_usd: float
    finish_reason: str
    usage_estimated: bool = False
    purpose: str = "answer"


@dataclass(frozen=True)
class SignalRow:
    """One `signals` row, less its request id."""

    kind: str
    target: str
    score: Optional[float]
    correct: Optional[bool]
    f1: Optional[float]
    detail_json: str
    source: str
    created_at: str
    thumbs_up: Optional[bool] = None
    corrected_answer: Optional[str] = None


@dataclass(frozen=True)
class PreparedRecord:
    request: RequestRow
    runs: tuple[RunRow, ...] = ()
    signals: tuple[SignalRow, ...] = ()
    info_calls: tuple[InfoCallRow, ...] = ()


@dataclass(frozen=True)
class PendingSignal:
    request_id: str
    signal: SignalRow


@dataclass
class BatchOutcome:
    written: int = 0             # request rows inserted
    signals_written: int = 0     # signal rows inserted (with their requests or on their own)
    duplicates: int = 0          # records whose request id was already in the ledger: skipped
    orphan_signals: int = 0      # signals for an id the ledger does not have: skipped
    rejected: int = 0            # records that SQLite refused one by one (bad data), rolled back
    errors: list[str] = field(default_factory=list)


def _columns(row_type: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(row_type))


def _insert_sql(table: str, columns: Sequence[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"


_REQUEST_COLUMNS = _columns(RequestRow)
_RUN_COLUMNS = ("request_id",) + _columns(RunRow)
_SIGNAL_COLUMNS = ("request_id",) + _columns(SignalRow)
_INFO_CALL_COLUMNS = ("request_id",) + _columns(InfoCallRow)
_INSERT_REQUEST = _insert_sql("requests", _REQUEST_COLUMNS).replace("INSERT", "INSERT OR IGNORE", 1)
_INSERT_RUN = _insert_sql("backend_runs", _RUN_COLUMNS)
_INSERT_SIGNAL = _insert_sql("signals", _SIGNAL_COLUMNS)
_INSERT_INFO_CALL = _insert_sql("info_calls", _INFO_CALL_COLUMNS)
# An add_signal() for an id that never reached the ledger is skipped, not an error for the batch.
_INSERT_SIGNAL_IF_REQUEST = (
    f"INSERT INTO signals ({', '.join(_SIGNAL_COLUMNS)}) "
    f"SELECT {', '.join('?' for _ in _SIGNAL_COLUMNS)} WHERE EXISTS (SELECT 1 FROM requests WHERE id = ?)")

# Errors that belong to one row's data; anything else (disk full, I/O error, corruption, a lock
# held too long) is the database's and fails the batch.
_ROW_ERRORS = (sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.ProgrammingError,
               sqlite3.DataError, OverflowError, UnicodeError, ValueError, TypeError)


def _values(row: Any) -> list[Any]:
    return [getattr(row, name) for name in _columns(type(row))]


def connect(path: Path, *, max_bytes: Optional[int] = None) -> sqlite3.Connection:
    """Opens (creating if needed) the database file in WAL mode, autocommit, foreign keys on. The file
    and its WAL are the owner's alone (router/core/ledger/files.py); a new database vacuums
    incrementally (router/core/ledger/retention.py)."""
    create_private_file(path)
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                           check_same_thread=False)
    try:
        # page_count reads the file header: a junk file fails here with "file is not a database".
        if int(conn.execute("PRAGMA page_count").fetchone()[0]) == 0:
            # Only a database with no page yet can take it, so before journal_mode writes the first.
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("PRAGMA journal_mode = WAL").fetchone()
        narrow_database_to_owner(path)
        # NORMAL in WAL mode: a commit survives the process being killed; only an OS crash or power
        # loss can take the last transactions back.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
        if max_bytes is not None:
            page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
            conn.execute(f"PRAGMA max_page_count = {max(1, int(max_bytes) // page_size):d}")
    except BaseException:
        conn.close()
        raise
    return conn


class LedgerStore:
    """One connection to a ledger database, schema guaranteed current."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    @classmethod
    def open(cls, path: Path, *, max_bytes: Optional[int] = None,
             migrations: Sequence[Migration] = MIGRATIONS) -> "LedgerStore":
        conn = connect(path, max_bytes=max_bytes)
        try:
            migrate(conn, migrations)
        except BaseException:
            conn.close()
            raise
        return cls(conn)

    @classmethod
    def open_reader(cls, path: Path) -> "LedgerStore":
        """A connection for reads; `query_only` makes a stray write fail instead of competing
        with the writer thread."""
        if not path.is_file():
            raise FileNotFoundError(f"no ledger database at {path}")
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA query_only = ON")
        conn.row_factory = sqlite3.Row
        return cls(conn)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "LedgerStore":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- writes -----------------------------------------------------------------------------

    def write_batch(self, records: Sequence[PreparedRecord],
                    signals: Sequence[PendingSignal] = ()) -> BatchOutcome:
        """Writes a batch in one transaction. A record SQLite refuses for its data is rolled back
        alone (savepoint) and counted; a database-level error rolls back everything and raises."""
        outcome = BatchOutcome()
        conn = self.conn
        conn.execute("BEGIN")
        try:
            for record in records:
                self._insert_record(record, outcome)
            for pending in signals:
                values = [pending.request_id] + _values(pending.signal) + [pending.request_id]
                try:
                    cursor = conn.execute(_INSERT_SIGNAL_IF_REQUEST, values)
                except _ROW_ERRORS as exc:
                    outcome.rejected += 1
                    outcome.errors.append(f"signal for {pending.request_id!r}: {exc}")
                    continue
                if cursor.rowcount == 1:
                    outcome.signals_written += 1
                else:
                    outcome.orphan_signals += 1
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return outcome

    def _insert_record(self, record: PreparedRecord, outcome: BatchOutcome) -> None:
        conn = self.conn
        request_id = record.request.id
        conn.execute("SAVEPOINT record")
        try:
            cursor = conn.execute(_INSERT_REQUEST, _values(record.request))
            if cursor.rowcount == 0:
                # The id is already there (a client reused it): keep the first, do not attach
                # this record's runs and signals to it.
                outcome.duplicates += 1
            else:
                conn.executemany(_INSERT_RUN, [[request_id] + _values(run) for run in record.runs])
                conn.executemany(_INSERT_SIGNAL, [[request_id] + _values(sig) for sig in record.signals])
                conn.executemany(_INSERT_INFO_CALL, [[request_id] + _values(call) for call in record.info_calls])
                outcome.written += 1
                outcome.signals_written += len(record.signals)
            conn.execute("RELEASE record")
        except _ROW_ERRORS as exc:
            conn.execute("ROLLBACK TO record")
            conn.execute("RELEASE record")
            outcome.rejected += 1
            outcome.errors.append(f"request {request_id!r}: {exc}")

    def add_feedback(self, request_id: str, signal: SignalRow) -> None:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("SELECT 1 FROM requests WHERE id = ?", (request_id,)).fetchone() is None:
                raise LedgerNotFoundError(f"no request {request_id!r} in the ledger")
            conn.execute(_INSERT_SIGNAL, [request_id] + _values(signal))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # -- reads ------------------------------------------------------------------------------

    def contains(self, request_id: str) -> bool:
        """Whether a request with this id is stored (a primary-key lookup)."""
        return self.conn.execute("SELECT 1 FROM requests WHERE id = ?", (request_id,)).fetchone() is not None

    def owner(self, request_id: str) -> Optional[str]:
        """The principal recorded with the request ('' for one recorded without: before schema v7, or
        with no caller), or None when no request has this id (a primary-key lookup)."""
        row = self.conn.execute("SELECT principal FROM requests WHERE id = ?", (request_id,)).fetchone()
        return None if row is None else str(row[0])

    def get(self, request_id: str) -> Optional[dict[str, Any]]:
        """One request with its backend runs and signals, JSON columns decoded (`decision_json` as
        `decision`)."""
        conn = self.conn
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM requests WHERE id = ?", (request_id,)).fetchone()
        if row is None:
            return None
        record = dict(row)
        record["messages"] = json.loads(record.pop("messages_json"))
        record["metadata"] = json.loads(record.pop("metadata_json"))
        record["decision"] = json.loads(record.pop("decision_json", None) or "{}")
        record["citations"] = json.loads(record.pop("citations_json", None) or "[]")
        record["backends_run"] = [name for name in record["backends_run"].split(",") if name]
        runs = conn.execute("SELECT * FROM backend_runs WHERE request_id = ? ORDER BY ordinal",
                            (request_id,)).fetchall()
        record["backend_runs"] = [{k: r[k] for k in r.keys() if k not in ("id", "request_id")} for r in runs]
        record["signals"] = [decode_signal(s) for s in conn.execute(
            "SELECT * FROM signals WHERE request_id = ? ORDER BY id", (request_id,)).fetchall()]
        record["info_calls"] = [
            {"operation": c["operation"], "query": c["query"], "passage_ids": json.loads(c["passage_ids_json"]),
             "scores": json.loads(c["scores_json"]), "latency_s": c["latency_s"], "cost_usd": c["cost_usd"],
             "error": c["error"]}
            for c in conn.execute("SELECT * FROM info_calls WHERE request_id = ? ORDER BY ordinal",
                                  (request_id,)).fetchall()]
        return record


def decode_signal(row: sqlite3.Row) -> dict[str, Any]:
    signal = {k: row[k] for k in row.keys() if k not in ("request_id", "detail_json")}
    signal["detail"] = json.loads(row["detail_json"])
    for flag in ("correct", "thumbs_up"):
        if signal.get(flag) is not None:
            signal[flag] = bool(signal[flag])
    return signal
