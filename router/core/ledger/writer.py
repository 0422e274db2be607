"""The writer thread: drains the ledger's queue, turns jobs into rows, commits them in batches.

Everything costly about recording a request happens here, off the request path: redaction or
hashing, JSON encoding, reference scoring, agreement, SQLite. The caller's thread only puts a job
on a bounded `queue.Queue`.

A batch is up to `batch_size` jobs, or whatever arrived within `flush_interval_s` of the first one,
committed in one transaction. Feedback and flush barriers end a batch early and are answered only
after everything queued before them is committed, so a feedback for a request that was recorded
just before it always finds the request.

Failures: a batch that SQLite refuses (disk full, I/O error, a corrupt page) is rolled back and
counted in `failed_writes`; health turns degraded with the reason, logged once; the next batch is
tried as usual, and the first one that commits turns health back to ok (logged once).

Retention (ledger.retention_days, ledger.retention_max_bytes) is enforced here too, between batches:
when and how in router/core/ledger/retention.py.
"""
from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional, Union

from router.core.ledger.redaction import ContentFilter
from router.core.ledger.retention import SWEEP_INTERVAL_S, RetentionPolicy, RetentionSchedule, SweepOutcome, sweep
from router.core.ledger.signals import AccuracySignal, compute_signals
from router.core.ledger.store import (InfoCallRow, LedgerNotFoundError, LedgerStore, LedgerUnavailableError,
                                      PendingSignal, PreparedRecord, RequestRow, RunRow, SignalRow, format_time,
                                      to_json)
from router.domain.types import BackendKind, Decision, GenerateRequest, GenerateResult


@dataclass(frozen=True)
class LedgerHealth:
    ok: bool
    reason: str = ""


@dataclass(frozen=True)
class LedgerMetrics:
    queue_depth: int = 0
    written: int = 0            # request rows committed
    dropped_writes: int = 0     # jobs never queued: queue full, ledger degraded at open, or closed
    failed_writes: int = 0      # jobs lost to a failed batch or refused by SQLite one by one
    batches: int = 0            # transactions committed
    signals_written: int = 0
    duplicates: int = 0         # records skipped because their request id was already stored
    orphan_signals: int = 0     # signals for request ids the ledger never stored
    signal_errors: int = 0      # records stored without signals because scoring raised
    retention_deleted: int = 0  # requests deleted by retention (age or size), with their runs and signals


class LedgerState:
    """Counters and health, shared by the caller's threads and the writer thread.

    Health changes are logged on the transition only, so a full disk produces one error line, not
    one per request.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self._lock = threading.Lock()
        self._logger = logger
        self._counts = {name: 0 for name in LedgerMetrics.__dataclass_fields__ if name != "queue_depth"}
        self._health = LedgerHealth(ok=False, reason="not opened")
        self._dropping = False
        self._warned: set[str] = set()

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                self._counts[name] += value

    def metrics(self, queue_depth: int) -> LedgerMetrics:
        with self._lock:
            return LedgerMetrics(queue_depth=queue_depth, **self._counts)

    @property
    def health(self) -> LedgerHealth:
        with self._lock:
            return self._health

    def set_ok(self) -> None:
        with self._lock:
            previous, self._health = self._health, LedgerHealth(ok=True)
        if not previous.ok and previous.reason not in ("not opened",):
            self._logger.warning("ledger recovered: writes are committing again (was: %s)", previous.reason)

    def degrade(self, reason: str) -> None:
        with self._lock:
            previous, self._health = self._health, LedgerHealth(ok=False, reason=reason)
        if previous.ok or previous.reason == "not opened":
            self._logger.error("ledger degraded, requests are served but not recorded: %s", reason)

    def set_closed(self) -> None:
        with self._lock:
            self._health = LedgerHealth(ok=False, reason="closed")

    def note_drop(self, why: str) -> None:
        """Counts one dropped job; the first drop of an episode is logged."""
        with self._lock:
            self._counts["dropped_writes"] += 1
            first, self._dropping = not self._dropping, True
        if first:
            self._logger.warning("ledger dropping writes (%s); metrics.dropped_writes counts them", why)

    def end_drop_episode(self) -> None:
        with self._lock:
            was, self._dropping = self._dropping, False
            dropped = self._counts["dropped_writes"]
        if was:
            self._logger.warning("ledger accepting writes again; %d dropped so far", dropped)

    def info(self, message: str, *args: object) -> None:
        self._logger.info(message, *args)

    def warn_once(self, key: str, message: str, *args: object, exc_info: bool = False) -> None:
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
        self._logger.warning(message, *args, exc_info=exc_info)


class PendingRequestIds:
    """Request ids of records queued for the writer and not yet settled (committed, refused or lost
    with a failed batch), with the principal of each. The ledger adds an id before its job is queued
    and the writer settles it only after the job's batch, so an id is always pending or, once
    committed, in the database.

    A multiset: the same id queued twice stays pending until both jobs are settled; its principal is
    the first one's, as the database keeps the first record of an id.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()
        self._principals: dict[str, str] = {}

    def add(self, request_id: str, principal: str = "") -> None:
        with self._lock:
            self._counts[request_id] += 1
            self._principals.setdefault(request_id, principal)

    def settle(self, request_id: str) -> None:
        with self._lock:
            remaining = self._counts[request_id] - 1
            if remaining > 0:
                self._counts[request_id] = remaining
            else:
                del self._counts[request_id]
                self._principals.pop(request_id, None)

    def principal(self, request_id: str) -> Optional[str]:
        """The principal of a pending id, or None when the id is not pending."""
        with self._lock:
            return self._principals.get(request_id) if request_id in self._counts else None

    def __contains__(self, request_id: object) -> bool:
        with self._lock:
            return request_id in self._counts

    def __len__(self) -> int:
        with self._lock:
            return len(self._counts)


# -- jobs -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class RecordJob:
    request: GenerateRequest
    result: GenerateResult
    received_at: float

    @property
    def request_id(self) -> str:
        """The id its row is stored under."""
        return self.result.request_id or self.request.request_id


@dataclass(frozen=True)
class SignalJob:
    request_id: str
    signal: AccuracySignal
    received_at: float


@dataclass(frozen=True)
class FeedbackJob:
    request_id: str
    signal: SignalRow
    done: "concurrent.futures.Future[None]"


@dataclass(frozen=True)
class BarrierJob:
    done: threading.Event


@dataclass(frozen=True)
class StopJob:
    pass


Job = Union[RecordJob, SignalJob, FeedbackJob, BarrierJob, StopJob]
_CONTROL = (FeedbackJob, BarrierJob, StopJob)


# -- rows -----------------------------------------------------------------------------------

def content_hash(request: GenerateRequest, result: GenerateResult) -> str:
    """SHA-256 of the raw conversation and answer: the same exchange hashes the same under every
    log_content setting, so duplicates can be found even in a hashed-only ledger."""
    canonical = to_json({"messages": [[m.role, m.content] for m in request.messages],
                         "answer": result.text})
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def _number(value: object) -> Optional[float]:
    """A finite float, else None: NaN and infinities are not JSON, and a value that is no number at all
    must not cost the record."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def decision_record(decision: Decision, content: Optional[ContentFilter] = None) -> dict[str, Any]:
    """The whole decision as stored in `requests.decision_json`. The features are numbers computed from
    the answer, not content, and the rest names the arbiter, the scorer and the threshold and says why:
    incidental text, masked under redacted and none but kept readable (router/core/ledger/redaction.py).
    The agent's steps hold content (thoughts, tool inputs and results, and errors that quote the model's
    raw output): `content` filters them like any request text. No `content`: everything as it was."""
    text: Callable[[str], Optional[str]] = content.text if content is not None else (lambda value: value)
    incidental: Callable[[str], Optional[str]] = (content.incidental if content is not None
                                                  else (lambda value: value))
    record: dict[str, Any] = {
        "arbiter": incidental(decision.arbiter), "scorer": incidental(decision.scorer),
        "score": _number(decision.score), "threshold": _number(decision.threshold),
        "threshold_kind": incidental(decision.threshold_kind), "escalated": bool(decision.escalated),
        "reason": incidental(decision.reason), "degraded": bool(decision.degraded),
        "features": {incidental(str(name)): _number(value) for name, value in decision.features.items()}}
    if decision.steps:
        record["steps"] = [{"index": step.index, "thought": text(step.thought), "tool": incidental(step.tool),
                            "arguments": text(step.arguments), "observation": text(step.observation),
                            "cost_usd": _number(step.cost_usd), "latency_s": _number(step.latency_s),
                            "error": text(step.error)} for step in decision.steps]
    return record


def signal_row(signal: AccuracySignal, content: ContentFilter, created_at: str) -> SignalRow:
    return SignalRow(kind=signal.kind.value, target=signal.target.value, score=signal.score,
                     correct=signal.correct, f1=signal.f1,
                     detail_json=to_json(content.value(dict(signal.detail))),
                     source=content.incidental(signal.source) or "", created_at=created_at)


@dataclass(frozen=True)
class RecordPreparer:
    """Turns a finished request into rows under the ledger's content policy."""

    content: ContentFilter
    edge_parameters: Optional[float] = None
    score: Callable[[GenerateRequest, GenerateResult], list[AccuracySignal]] = compute_signals

    def prepare(self, job: RecordJob, state: LedgerState) -> PreparedRecord:
        request, result, content = job.request, job.result, self.content
        created_at = format_time(job.received_at)
        try:
            # A request that ended without an answer (cancelled, failed) is recorded for its spend; its
            # partial text is no answer to score.
            signals = self.score(request, result) if result.answered else []
        except Exception:  # a scoring bug must not cost us the record
            state.add(signal_errors=1)
            state.warn_once("signals", "ledger: computing accuracy signals failed; records are "
                            "stored without them", exc_info=True)
            signals = []
        decision = result.decision
        mode = decision.mode if decision.mode else request.mode
        latency = result.latency
        incidental = content.incidental
        row = RequestRow(
            id=job.request_id,
            created_at=created_at,
            mode=mode.name,
            arbiter=incidental(decision.arbiter) or "",
            decision_score=decision.score,
            decision_reason=incidental(decision.reason) or "",
            backends_run=",".join(BackendKind(run.backend).name for run in result.runs),
            served_by=BackendKind(result.served_by).name,
            edge_model=incidental(result.edge_model) or "",
            cloud_model=incidental(result.cloud_model) or "",
            edge_parameters=self.edge_parameters,
            final_text=content.text(result.text),
            messages_json=to_json([{"role": incidental(m.role), "content": content.text(m.content)}
                                   for m in request.messages]),
            reference_answer=content.text(request.reference_answer),
            metadata_json=to_json(content.metadata(request.metadata)),
            total_cost_usd=result.cost_usd,
            edge_cost_usd=result.edge_cost_usd,
            cloud_cost_usd=result.cloud_cost_usd,
            ttft_s=latency.ttft_s,
            total_s=latency.total_s,
            edge_s=latency.edge_s,
            cloud_s=latency.cloud_s,
            finish_reason=incidental(result.finish_reason) or "",
            content_hash=content_hash(request, result),
            content_policy=content.policy.value,
            decision_json=to_json(decision_record(decision, content)),
            info_cost_usd=result.info_cost_usd,
            info_s=latency.info_s if result.info_calls else None,
            citations_json=to_json([incidental(citation) for citation in result.citations]),
            principal=request.caller.user,
        )
        runs = tuple(RunRow(
            ordinal=index, backend=BackendKind(run.backend).name, model=incidental(run.model) or "",
            text=content.text(run.text), prompt_tokens=run.prompt_tokens,
            completion_tokens=run.completion_tokens, queue_s=run.queue_s, ttft_s=run.ttft_s,
            total_s=run.total_s, cost_usd=run.cost_usd, finish_reason=incidental(run.finish_reason) or "",
            usage_estimated=run.usage_estimated, purpose=incidental(str(run.purpose)) or "")
            for index, run in enumerate(result.runs))
        info_calls = tuple(InfoCallRow(
            ordinal=index, operation=incidental(call.operation) or "", query=content.text(call.query),
            passage_ids_json=to_json([incidental(passage_id) for passage_id in call.passage_ids]),
            scores_json=to_json([_number(s) for s in call.scores]),
            latency_s=call.latency_s, cost_usd=call.cost_usd, error=incidental(call.error) or "")
            for index, call in enumerate(result.info_calls))
        return PreparedRecord(request=row, runs=runs, info_calls=info_calls,
                              signals=tuple(signal_row(s, content, created_at) for s in signals))


# -- the thread -----------------------------------------------------------------------------

def describe_failure(exc: BaseException, path: Path) -> str:
    """A reason a person can act on, for health and the one log line."""
    text = str(exc) or type(exc).__name__
    lowered = text.lower()
    if "database or disk is full" in lowered or "no space" in lowered:
        return f"ledger {path}: disk full (or the ledger reached its max_bytes cap): {text}"
    if "not a database" in lowered or "malformed" in lowered:
        return (f"ledger {path}: file is corrupt or not a SQLite database ({text}); "
                "move it aside to start a new one")
    if "unable to open" in lowered or isinstance(exc, OSError):
        return f"ledger {path}: cannot open or create the file ({text})"
    if "readonly" in lowered or "read-only" in lowered:
        return f"ledger {path}: file is read-only ({text})"
    return f"ledger {path}: {type(exc).__name__}: {text}"


class LedgerWriter:
    """Owns the writer thread and the write connection."""

    def __init__(self, jobs: "queue.Queue[Job]", open_store: Callable[[], LedgerStore], *,
                 path: Path, preparer: RecordPreparer, state: LedgerState, batch_size: int,
                 flush_interval_s: float, pending: PendingRequestIds,
                 retention: RetentionPolicy = RetentionPolicy(),
                 retention_interval_s: float = SWEEP_INTERVAL_S) -> None:
        self._jobs = jobs
        self._pending = pending
        self._open_store = open_store
        self._path = path
        self._preparer = preparer
        self._state = state
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._store: Optional[LedgerStore] = None
        self._retention = (RetentionSchedule(retention, interval_s=retention_interval_s) if retention.enabled
                           else None)
        # Daemon: a process that exits without close() must not hang on this thread; close() is
        # the path that flushes.
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def set_edge_parameters(self, edge_parameters: Optional[float]) -> None:
        # One attribute swap: the writer thread sees the old preparer or the new one, both whole.
        self._preparer = replace(self._preparer, edge_parameters=edge_parameters)

    def join(self, timeout_s: float) -> bool:
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            self._sweep_if_due()
            stopping = False
            while not stopping:
                stopping = self._process_safely(self._next_batch())
                if not stopping:
                    self._sweep_if_due()  # an idle writer wakes for its sweeps (see _next_batch)
                if stopping:
                    # Records and signals cannot follow the stop job (Ledger.close() refuses them
                    # before queueing it); a flush or feedback that raced in behind it is answered.
                    leftovers = self._drain_nowait()
                    if leftovers:
                        self._process_safely(leftovers)
        finally:
            if self._store is not None:
                self._store.close()

    def _process_safely(self, batch: list[Job]) -> bool:
        # The thread must outlive any bug in a batch: a dead writer would silently stop the ledger.
        try:
            return self._process(batch)
        except Exception:
            self._state.add(failed_writes=sum(isinstance(job, (RecordJob, SignalJob)) for job in batch))
            self._state.warn_once("writer", "ledger writer: a batch failed unexpectedly", exc_info=True)
            self._release_waiters(batch)
            return any(isinstance(job, StopJob) for job in batch)
        finally:
            # After the commit (or its failure): from here the id is in the database, or not recorded.
            for job in batch:
                if isinstance(job, RecordJob):
                    self._pending.settle(job.request_id)

    @staticmethod
    def _release_waiters(batch: list[Job]) -> None:
        """Nobody may wait forever on a job of a failed batch: a Feedback call gets an error, a flush returns."""
        for job in batch:
            if isinstance(job, FeedbackJob) and not job.done.done():
                job.done.set_exception(LedgerUnavailableError("the ledger writer failed on this batch; retry"))
            elif isinstance(job, BarrierJob):
                job.done.set()

    def _next_batch(self) -> list[Job]:
        """Up to batch_size jobs (see the module docstring); empty when a retention sweep fell due first."""
        try:
            first = self._jobs.get(timeout=None if self._retention is None else self._retention.seconds_until_due())
        except queue.Empty:
            return []
        batch: list[Job] = [first]
        deadline = time.monotonic() + self._flush_interval_s
        while len(batch) < self._batch_size and not isinstance(batch[-1], _CONTROL):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(self._jobs.get(timeout=remaining))
            except queue.Empty:
                break
        return batch

    def _drain_nowait(self) -> list[Job]:
        drained: list[Job] = []
        while True:
            try:
                drained.append(self._jobs.get_nowait())
            except queue.Empty:
                return drained

    def _process(self, batch: list[Job]) -> bool:
        """Writes the batch; returns True when it held the stop job."""
        records: list[PreparedRecord] = []
        signals: list[PendingSignal] = []
        stop = False
        for job in batch:
            if isinstance(job, RecordJob):
                prepared = self._prepare(job)
                if prepared is not None:
                    records.append(prepared)
            elif isinstance(job, SignalJob):
                pending = self._prepare_signal(job)
                if pending is not None:
                    signals.append(pending)
            else:
                # Control jobs come last in a batch (see _next_batch): commit what precedes them.
                self._commit(records, signals)
                records, signals = [], []
                if isinstance(job, FeedbackJob):
                    self._feedback(job)
                elif isinstance(job, BarrierJob):
                    job.done.set()
                else:
                    stop = True
        self._commit(records, signals)
        if self._jobs.empty():
            self._state.end_drop_episode()
        return stop

    def _prepare(self, job: RecordJob) -> Optional[PreparedRecord]:
        try:
            return self._preparer.prepare(job, self._state)
        except Exception:
            self._state.add(failed_writes=1)
            self._state.warn_once("prepare", "ledger: a record could not be turned into rows; it "
                                  "was skipped", exc_info=True)
            return None

    def _prepare_signal(self, job: SignalJob) -> Optional[PendingSignal]:
        try:
            row = signal_row(job.signal, self._preparer.content, format_time(job.received_at))
        except Exception:  # a detail that is not JSON, say: this signal is lost, not the batch
            self._state.add(failed_writes=1)
            self._state.warn_once("prepare-signal", "ledger: a signal could not be turned into a row; it "
                                  "was skipped", exc_info=True)
            return None
        return PendingSignal(request_id=job.request_id, signal=row)

    def _connected(self) -> LedgerStore:
        if self._store is None:
            self._store = self._open_store()
        return self._store

    def _commit(self, records: list[PreparedRecord], signals: list[PendingSignal]) -> None:
        if not records and not signals:
            return
        try:
            outcome = self._connected().write_batch(records, signals)
        except Exception as exc:  # sqlite3.Error, OSError, and whatever else: the batch is lost either way
            self._state.add(failed_writes=len(records) + len(signals))
            self._state.degrade(describe_failure(exc, self._path))
            return
        self._state.add(written=outcome.written, signals_written=outcome.signals_written,
                        duplicates=outcome.duplicates, orphan_signals=outcome.orphan_signals,
                        failed_writes=outcome.rejected, batches=1)
        self._state.set_ok()
        # Here, not only between batches: a flush or feedback behind this batch then finds the cap kept.
        self._sweep_if_due()
        if outcome.duplicates:
            self._state.warn_once("duplicates", "ledger: a request id was recorded twice; the later "
                                  "record was skipped (metrics.duplicates counts them)")
        if outcome.errors:
            self._state.warn_once("rejected", "ledger: SQLite refused a record (%s); it was skipped",
                                  outcome.errors[0])

    def _sweep_if_due(self) -> None:
        schedule = self._retention
        if schedule is None:
            return
        outcome: Optional[SweepOutcome] = None
        try:
            conn = self._connected().conn
            if not schedule.due(conn):
                return
            outcome = sweep(conn, schedule.policy, time.time(), may_rewrite=schedule.may_rewrite)
        except Exception as exc:  # retention must never stop the writer; the next sweep tries again
            self._state.warn_once("retention", "ledger: a retention sweep failed (%s); it is tried again "
                                  "later", describe_failure(exc, self._path))
        schedule.swept(outcome)
        if outcome is None:
            return
        if outcome.deleted:
            self._state.add(retention_deleted=outcome.deleted)
            self._state.info("ledger retention: deleted %d requests past retention_days and %d more for "
                             "retention_max_bytes", outcome.deleted_by_age, outcome.deleted_by_size)
        if outcome.rewritten:
            self._state.info("ledger retention: rewrote %s once so that it gives freed space back from now on",
                             self._path)
        if outcome.rewrite_error:
            self._state.warn_once("retention-rewrite", "ledger: could not rewrite %s to give freed space back "
                                  "(%s); freed pages are reused instead, so the file stops growing but does not "
                                  "shrink", self._path, outcome.rewrite_error)

    def _feedback(self, job: FeedbackJob) -> None:
        try:
            self._connected().add_feedback(job.request_id, job.signal)
        except LedgerNotFoundError as exc:
            job.done.set_exception(exc)
        except Exception as exc:
            reason = describe_failure(exc, self._path)
            self._state.degrade(reason)
            job.done.set_exception(LedgerUnavailableError(reason))
        else:
            self._state.add(signals_written=1)
            job.done.set_result(None)
