"""The ledger: every request's decision, answers, cost, latency and accuracy signals, in SQLite.

    ledger = Ledger(path, log_content="redacted")
    ledger.open()                       # never raises: on failure health is degraded
    ledger.record(request, result)      # request path: put_nowait on a bounded queue, never raises
    ledger.contains(request_id)         # is the id recorded (queued or written)? a primary-key lookup
    ledger.owner(request_id)            # the principal who made it (queued or written), None if unknown
    ...
    ledger.close()                      # SIGTERM path: flushes the queue, then closes

Beside the request path, never in its way. `record()` and `add_signal()` only put a job on a bounded
`queue.Queue` (a full queue drops the job and counts it in `metrics.dropped_writes`); a dedicated
writer thread (router/core/ledger/writer.py) does the rest and commits in batches. Every `record()` ends
committed, or counted in `metrics.dropped_writes` or `failed_writes`: `close()` refuses new jobs
before it queues the writer's stop job, under the same lock as the check-and-put of `record()`, so
no job can land behind the stop job and be left unwritten and uncounted.

Failures never reach the request path. If the file cannot be opened or created (a path under a
regular file, a directory, a corrupt file, a database from a newer build), or writes start failing
(disk full, I/O error), requests are still served, `health` turns degraded with the reason, and
the error is logged once, not once per request.

Durability. The database runs in WAL mode with synchronous=NORMAL: a committed batch survives the
process being killed (kill -9); an OS crash or power loss may lose the last few commits. On kill -9
the ledger loses at most what was not yet committed: the jobs still in the queue (at most
`queue_size`) plus the batch the writer was committing (at most `batch_size`), i.e. at most
`queue_size + batch_size` requests. `close()` (the SIGTERM path) writes everything queued first.

Threads. `record`, `add_signal` and the properties are safe from any thread and never block (the
lock they share with `close()` is held only around a flag check and a `put_nowait`).
`contains`, `owner`, `feedback`, `flush`, `get`, `stats`, `read` and `close` block (SQLite or waiting for the
writer): from asyncio, call them through `asyncio.to_thread`.

Privacy: `log_content` = full | redacted | none, see router/core/ledger/redaction.py. The database and
its WAL are created 0600 (router/core/ledger/files.py). Retention by age and size is enforced by the
writer (router/core/ledger/retention.py).

The ledger records; it does not train. What learns from it (router/core/learning: the arbiter's and the
router's rows, the LoRA's and DPO's sets) reads it through router/core/ledger/records.py, on a connection
from `read` or `records.open_read_only`.
"""
from __future__ import annotations

import concurrent.futures
import logging
import queue
import sqlite3
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

from router.domain.errors import InvalidRequestError
from router.core.ledger.records import LedgerReadError, LoggedRequest, LoggedSignal, open_read_only, read_requests
from router.core.ledger.redaction import ContentFilter, ContentPolicy, redact
from router.core.ledger.retention import SWEEP_INTERVAL_S, RetentionPolicy
from router.core.ledger.schema import SCHEMA_VERSION, SchemaVersionError
from router.core.ledger.signals import AccuracySignal, SignalKind, SignalTarget
from router.core.ledger.stats import ModeStats, SignalAccuracy, mode_stats
from router.core.ledger.store import (LedgerNotFoundError, LedgerStore, LedgerUnavailableError, SignalRow,
                                 format_time)
from router.core.ledger.writer import (BarrierJob, FeedbackJob, Job, LedgerHealth, LedgerMetrics,
                                  LedgerState, LedgerWriter, PendingRequestIds, RecordJob, RecordPreparer,
                                  SignalJob, StopJob, describe_failure)
from router.domain.types import GenerateRequest, GenerateResult

__all__ = [
    "AccuracySignal", "ContentPolicy", "Ledger", "LedgerHealth", "LedgerMetrics", "LedgerNotFoundError",
    "LedgerReadError", "LedgerUnavailableError", "LoggedRequest", "LoggedSignal", "MAX_FEEDBACK_BYTES",
    "ModeStats", "RetentionPolicy", "SCHEMA_VERSION", "SchemaVersionError", "SignalAccuracy", "SignalKind",
    "SignalTarget", "format_time", "open_read_only", "read_requests", "redact",
]

T = TypeVar("T")

# How long feedback() and flush() wait for the writer before calling the ledger unavailable.
SYNC_TIMEOUT_S = 10.0
# The largest corrected answer feedback() takes, in UTF-8 bytes, unless told another: the default of
# server.max_request_bytes, since a corrected answer becomes a training label as a request's text does.
MAX_FEEDBACK_BYTES = 1_048_576


class Ledger:
    """The facade the daemon, the RPCs and the CLI use. See the module docstring."""

    def __init__(self, path: Path, *, log_content: str = "full", queue_size: int = 10_000,
                 batch_size: int = 256, flush_interval_s: float = 0.05,
                 edge_parameters: Optional[float] = None, logger: Optional[logging.Logger] = None,
                 max_bytes: Optional[int] = None, retention_days: Optional[float] = None,
                 retention_max_bytes: Optional[int] = None,
                 retention_interval_s: float = SWEEP_INTERVAL_S) -> None:
        """`edge_parameters`: the edge model's parameter count, stored on every request row.
        `max_bytes`: an optional hard cap on the database size; past it writes fail as on a full disk.
        `retention_days`, `retention_max_bytes`: what the writer deletes, oldest first, checked every
        `retention_interval_s` and after commits (router/core/ledger/retention.py)."""
        if queue_size <= 0 or batch_size <= 0 or flush_interval_s <= 0:
            raise ValueError("queue_size, batch_size and flush_interval_s must be positive")
        if not retention_interval_s > 0:
            raise ValueError("retention_interval_s must be positive")
        self._retention = RetentionPolicy(max_age_days=retention_days, max_bytes=retention_max_bytes)
        self._retention_interval_s = retention_interval_s
        self.path = Path(path).expanduser()
        self.content = ContentFilter(ContentPolicy.parse(log_content))
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._edge_parameters = edge_parameters
        self._max_bytes = max_bytes
        self._logger = logger or logging.getLogger("hybrid_router.ledger")
        self._jobs: "queue.Queue[Job]" = queue.Queue(maxsize=queue_size)
        self._state = LedgerState(self._logger)
        self._writer: Optional[LedgerWriter] = None
        # Guards `_closing` together with the put of record and signal jobs (see the module docstring).
        self._admission = threading.Lock()
        self._closing = False
        self._pending_ids = PendingRequestIds()

    # -- life cycle -------------------------------------------------------------------------

    def open(self) -> None:
        """Creates or migrates the database and starts the writer. Never raises: on failure the
        ledger is degraded (health says why, logged once) and recording is a no-op."""
        if self._writer is not None or self._closing:
            return
        try:
            # On the caller's thread, so a bad path or a newer schema shows in health right away.
            LedgerStore.open(self.path, max_bytes=self._max_bytes).close()
        except Exception as exc:
            self._state.degrade(describe_failure(exc, self.path) if not isinstance(exc, SchemaVersionError)
                                else f"ledger {self.path}: {exc}")
            return
        self._writer = LedgerWriter(
            self._jobs, lambda: LedgerStore.open(self.path, max_bytes=self._max_bytes),
            path=self.path, preparer=RecordPreparer(self.content, self._edge_parameters),
            state=self._state, batch_size=self._batch_size, flush_interval_s=self._flush_interval_s,
            pending=self._pending_ids, retention=self._retention, retention_interval_s=self._retention_interval_s)
        self._writer.start()
        self._state.set_ok()

    def set_edge_parameters(self, edge_parameters: Optional[float]) -> None:
        """The edge model's parameter count for rows recorded from now on (the daemon opens the ledger
        before the model has loaded, so it learns the count late)."""
        self._edge_parameters = edge_parameters
        if self._writer is not None:
            self._writer.set_edge_parameters(edge_parameters)

    def close(self, timeout_s: float = 5.0) -> None:
        """Writes everything queued, then stops the writer. Waits at most `timeout_s`."""
        with self._admission:
            if self._closing:
                return
            self._closing = True
        # From here every record() is refused and counted; every one admitted before is on the queue
        # ahead of the stop job (put outside the lock: it may block while the queue is full).
        writer = self._writer
        if writer is not None:
            deadline = time.monotonic() + timeout_s
            try:
                self._jobs.put(StopJob(), timeout=timeout_s)
            except queue.Full:
                pass
            if not writer.join(max(0.0, deadline - time.monotonic())):
                self._logger.warning("ledger: writer did not finish within %.1f s; %d queued writes "
                                     "may be lost", timeout_s, self._jobs.qsize())
        self._state.set_closed()

    @property
    def health(self) -> LedgerHealth:
        return self._state.health

    @property
    def metrics(self) -> LedgerMetrics:
        return self._state.metrics(self._jobs.qsize())

    # -- the request path -------------------------------------------------------------------

    def record(self, request: GenerateRequest, result: GenerateResult) -> None:
        """Queues a finished request. Never blocks, never raises."""
        self._enqueue_nowait(lambda: RecordJob(request, result, time.time()))

    def add_signal(self, request_id: str, signal: AccuracySignal) -> None:
        """Queues a signal that arrived later (a judge's score). Never blocks; a signal for an id
        the ledger does not hold is skipped (metrics.orphan_signals)."""
        if not isinstance(signal, AccuracySignal):
            raise TypeError(f"add_signal needs an AccuracySignal, got {type(signal).__name__}")
        self._enqueue_nowait(lambda: SignalJob(request_id, signal, time.time()))

    def _enqueue_nowait(self, make_job: Callable[[], Job]) -> None:
        pending_id: Optional[str] = None
        try:
            with self._admission:
                if self._writer is None or self._closing:
                    self._state.note_drop("ledger is closed" if self._closing else self.health.reason)
                    return
                job = make_job()
                if isinstance(job, RecordJob):
                    # Before the put: the writer may settle the id as soon as the job is queued.
                    pending_id = job.request_id
                    self._pending_ids.add(pending_id, job.request.caller.user)
                self._jobs.put_nowait(job)
        except queue.Full:
            self._settle_unqueued(pending_id)
            self._state.note_drop(f"queue full at {self._jobs.maxsize} jobs")
        except Exception:  # never let the ledger fail a request
            self._settle_unqueued(pending_id)
            self._state.note_drop("unexpected error while queueing")

    def _settle_unqueued(self, pending_id: Optional[str]) -> None:
        if pending_id is not None:
            self._pending_ids.settle(pending_id)

    # -- request ids ------------------------------------------------------------------------

    def contains(self, request_id: str) -> bool:
        """Whether a record with this id is queued or written. Blocks for a primary-key lookup (call
        it through asyncio.to_thread). A database that cannot be read answers False, logged once:
        the ledger never fails a request."""
        # The queue first: the writer settles an id only after its batch commits, so checking the
        # database second cannot miss a record that moves from one to the other meanwhile.
        if request_id in self._pending_ids:
            return True
        if self._writer is None:
            return False
        try:
            with LedgerStore.open_reader(self.path) as store:
                return store.contains(request_id)
        except (sqlite3.Error, OSError) as exc:
            self._state.warn_once("contains", "ledger: cannot look request ids up, so reused ids are "
                                  "not refused: %s", describe_failure(exc, self.path))
            return False

    def owner(self, request_id: str) -> Optional[str]:
        """The principal who made the request (GenerateRequest.caller.user when it was recorded), '' for
        one recorded without a principal (before schema v7, or with no caller), or None when the ledger
        holds no such request, queued or written. Blocks for a primary-key lookup (call it through
        asyncio.to_thread). Raises LedgerUnavailableError when the ledger cannot be read: ownership
        decides who may label a request, so an unreadable ledger is not taken to mean "nobody's"."""
        # The queue first, as in contains(): a record settles only after its batch commits. The database
        # wins where both know the id, since it keeps the first record of an id.
        pending = self._pending_ids.principal(request_id)
        stored = self._read(lambda store: store.owner(request_id))
        return stored if stored is not None else pending

    # -- synchronous operations -------------------------------------------------------------

    def feedback(self, request_id: str, *, score: Optional[float] = None,
                 thumbs_up: Optional[bool] = None, corrected_answer: Optional[str] = None,
                 max_bytes: int = MAX_FEEDBACK_BYTES) -> None:
        """Records a user's verdict on a request. Blocks until written (it is ordered after every
        record queued before it, so feedback right after a request finds it). `max_bytes`: the largest
        corrected answer, in UTF-8 bytes (the daemon passes server.max_request_bytes).

        Raises InvalidRequestError (nothing given, score outside [0, 1], a corrected answer over
        max_bytes), LedgerNotFoundError (unknown id), LedgerUnavailableError (the ledger is degraded or
        its writer is stuck)."""
        if score is None and thumbs_up is None and not corrected_answer:
            raise InvalidRequestError("feedback needs a score, thumbs_up or corrected_answer")
        if score is not None and not 0.0 <= score <= 1.0:
            raise InvalidRequestError(f"feedback score must be between 0 and 1, got {score!r}")
        if corrected_answer:
            size = len(corrected_answer.encode("utf-8", "surrogatepass"))
            if size > max_bytes:
                raise InvalidRequestError(
                    f"feedback corrected_answer is {size} bytes; the limit is {max_bytes} bytes "
                    "(server.max_request_bytes); send a shorter answer")
        self._require_writer()
        if score is None and thumbs_up is not None:
            score = 1.0 if thumbs_up else 0.0
        row = SignalRow(kind=SignalKind.FEEDBACK.value, target=SignalTarget.FINAL.value, score=score,
                        correct=thumbs_up, f1=None, detail_json="{}", source="user",
                        created_at=format_time(time.time()), thumbs_up=thumbs_up,
                        corrected_answer=self.content.text(corrected_answer or None))
        done: "concurrent.futures.Future[None]" = concurrent.futures.Future()
        self._put_and_wait(FeedbackJob(request_id, row, done), done)

    def flush(self, timeout_s: float = SYNC_TIMEOUT_S) -> bool:
        """Waits until everything queued before this call is committed (or failed), at most timeout_s
        in all. False when the ledger is not running or the wait timed out."""
        if self._writer is None or self._closing:
            return False
        deadline = time.monotonic() + timeout_s
        event = BarrierJob(done=threading.Event())
        try:
            self._jobs.put(event, timeout=timeout_s)
        except queue.Full:
            return False
        return event.done.wait(max(0.0, deadline - time.monotonic()))

    def get(self, request_id: str) -> Optional[dict[str, Any]]:
        """The stored request with its backend runs and signals, or None. Sees committed writes
        only: call flush() first to include a request recorded a moment ago."""
        return self._read(lambda store: store.get(request_id))

    def stats(self, *, since: Optional[datetime] = None) -> list[ModeStats]:
        return self._read(lambda store: mode_stats(store.conn, _since(since)))

    def read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        """`query(conn)` on a connection of its own that cannot write (query_only), beside the writer:
        the hook through which the learners read the ledger (router/core/ledger/records.py). Sees committed
        writes only. Raises LedgerUnavailableError when the ledger never opened or cannot be read."""
        return self._read(lambda store: query(store.conn))

    # -- helpers ----------------------------------------------------------------------------

    def _require_writer(self) -> None:
        if self._writer is None or self._closing:
            reason = "the ledger is closed" if self._closing else self.health.reason
            raise LedgerUnavailableError(f"ledger unavailable: {reason}")

    def _put_and_wait(self, job: Job, done: "concurrent.futures.Future[None]") -> None:
        try:
            self._jobs.put(job, timeout=SYNC_TIMEOUT_S)
            done.result(timeout=SYNC_TIMEOUT_S)
        except (queue.Full, concurrent.futures.TimeoutError):
            raise LedgerUnavailableError(
                f"ledger writer did not answer within {SYNC_TIMEOUT_S:.0f} s "
                f"({self._jobs.qsize()} jobs queued)") from None

    def _read(self, query: Callable[[LedgerStore], T]) -> T:
        # Reads work after close() too (the CLI reads a ledger the daemon wrote), but not when the
        # file never opened: there is nothing sound to read.
        if self._writer is None:
            raise LedgerUnavailableError(f"ledger unavailable: {self.health.reason}")
        try:
            with LedgerStore.open_reader(self.path) as store:
                return query(store)
        except (sqlite3.Error, FileNotFoundError) as exc:
            raise LedgerUnavailableError(describe_failure(exc, self.path)) from exc


def _since(since: Optional[datetime]) -> str:
    return "" if since is None else format_time(since)
