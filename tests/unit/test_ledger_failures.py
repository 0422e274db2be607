"""Ledger failure behaviour: requests are always served, health says why, the error is logged once.

The tests run as root, where chmod does not stop writes, so unwritable paths are made in ways that
fail for root too: a path under a regular file, a path that is a directory, a file of junk bytes.
Mid-run write failures come from SQLite itself (`max_bytes` sets PRAGMA max_page_count, after
which inserts fail with SQLITE_FULL, "database or disk is full", exactly as on a full disk), and,
for recovery, from a fault-injecting wrapper around LedgerStore.write_batch.
"""
from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from router.core.ledger import AccuracySignal, Ledger, LedgerNotFoundError, LedgerUnavailableError, SignalKind
from router.core.ledger.redaction import ContentFilter, ContentPolicy
from router.core.ledger.store import LedgerStore
from router.core.ledger.writer import LedgerState, RecordJob, RecordPreparer
from tests.unit.test_ledger_support import make_exchange, open_ledger


def _errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR and r.name == "hybrid_router.ledger"]


def _serve_many(ledger: Ledger, count: int, text: str = "x") -> None:
    for index in range(count):
        ledger.record(*make_exchange(f"r{index}", edge=text))  # must never raise


def _assert_degraded_at_open(ledger: Ledger, caplog: pytest.LogCaptureFixture, words: str) -> None:
    assert not ledger.health.ok
    assert words in ledger.health.reason
    _serve_many(ledger, 50)
    assert ledger.metrics.dropped_writes == 50
    assert len(_errors(caplog)) == 1
    with pytest.raises(LedgerUnavailableError):
        ledger.feedback("r1", score=1.0, thumbs_up=None, corrected_answer=None)
    with pytest.raises(LedgerUnavailableError):
        ledger.get("r1")
    ledger.close()


def test_a_path_under_a_regular_file_degrades(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("I am a file")
    ledger = Ledger(blocker / "ledger.db")
    ledger.open()
    _assert_degraded_at_open(ledger, caplog, "cannot open or create")


def test_a_path_that_is_a_directory_degrades(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "ledger.db").mkdir()
    ledger = Ledger(tmp_path / "ledger.db")
    ledger.open()
    _assert_degraded_at_open(ledger, caplog, "cannot open or create")


def test_a_corrupt_file_degrades_and_is_left_untouched(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "ledger.db"
    junk = bytes(range(256)) * 64
    path.write_bytes(junk)
    ledger = Ledger(path)
    ledger.open()
    _assert_degraded_at_open(ledger, caplog, "corrupt")
    assert path.read_bytes() == junk


def test_disk_full_mid_run_degrades_once_and_keeps_what_was_committed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # max_bytes caps the file via PRAGMA max_page_count: past it SQLite fails with SQLITE_FULL.
    ledger = open_ledger(tmp_path / "ledger.db", max_bytes=96 * 1024, batch_size=8)
    ledger.record(*make_exchange("early", edge="fits"))
    assert ledger.flush()
    big_answer = "lorem ipsum " * 2_000
    _serve_many(ledger, 200, text=big_answer)
    assert ledger.flush()
    assert not ledger.health.ok
    assert "disk full" in ledger.health.reason
    metrics = ledger.metrics
    assert metrics.failed_writes > 0
    assert metrics.written + metrics.failed_writes == 201
    assert len(_errors(caplog)) == 1
    assert ledger.get("early")["final_text"] == "fits"
    ledger.close()


def test_a_write_failure_then_recovery(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      caplog: pytest.LogCaptureFixture) -> None:
    failures_left = {"count": 3}
    real_write_batch = LedgerStore.write_batch

    def fault_injecting_write_batch(self: LedgerStore, *args: Any, **kwargs: Any) -> Any:
        if failures_left["count"] > 0:
            failures_left["count"] -= 1
            raise sqlite3.OperationalError("disk I/O error")
        return real_write_batch(self, *args, **kwargs)

    ledger = open_ledger(tmp_path / "ledger.db")
    monkeypatch.setattr(LedgerStore, "write_batch", fault_injecting_write_batch)
    for index in range(3):  # three batches, each failing
        ledger.record(*make_exchange(f"lost{index}", edge="x"))
        assert ledger.flush()
    assert not ledger.health.ok and "disk I/O error" in ledger.health.reason
    assert ledger.metrics.failed_writes == 3
    ledger.record(*make_exchange("kept", edge="x"))
    assert ledger.flush()
    assert ledger.health.ok
    assert ledger.get("kept") is not None and ledger.get("lost0") is None
    assert len(_errors(caplog)) == 1
    assert sum("recovered" in r.getMessage() for r in caplog.records) == 1
    with pytest.raises(LedgerNotFoundError):
        ledger.feedback("lost1", score=1.0, thumbs_up=None, corrected_answer=None)
    ledger.close()


def test_a_feedback_write_failure_is_reported_as_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fault_injecting_add_feedback(self: LedgerStore, *args: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    ledger = open_ledger(tmp_path / "ledger.db")
    ledger.record(*make_exchange("r1", edge="x"))
    monkeypatch.setattr(LedgerStore, "add_feedback", fault_injecting_add_feedback)
    with pytest.raises(LedgerUnavailableError, match="disk full"):
        ledger.feedback("r1", score=1.0, thumbs_up=None, corrected_answer=None)
    assert not ledger.health.ok
    ledger.close()


def test_a_scoring_failure_keeps_the_record_without_signals() -> None:
    def fault_injecting_scorer(*_: Any) -> list:
        raise RuntimeError("scorer bug")

    state = LedgerState(logging.getLogger("test"))
    preparer = RecordPreparer(ContentFilter(ContentPolicy.FULL), score=fault_injecting_scorer)
    request, result = make_exchange("r1", edge="7", reference="7")
    prepared = preparer.prepare(RecordJob(request, result, 0.0), state)
    assert prepared.request.id == "r1" and prepared.signals == ()
    assert state.metrics(0).signal_errors == 1


def test_fault_injected_signal_row_failure_skips_that_signal_and_feedback_behind_it_still_answers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import router.core.ledger.writer as writer

    real_signal_row = writer.signal_row

    def signal_row_failing_for_judge(signal, *args, **kwargs):  # the injected fault
        if signal.kind == SignalKind.JUDGE:
            raise RuntimeError("injected: this signal cannot become a row")
        return real_signal_row(signal, *args, **kwargs)

    monkeypatch.setattr(writer, "signal_row", signal_row_failing_for_judge)
    ledger = open_ledger(tmp_path / "ledger.db")
    ledger.record(*make_exchange("r1", edge="7"))
    assert ledger.flush()
    ledger.add_signal("r1", AccuracySignal(kind=SignalKind.JUDGE, score=0.5))
    ledger.feedback("r1", score=1.0, thumbs_up=None, corrected_answer=None)  # must answer, not hang
    assert ledger.flush()
    assert ledger.metrics.failed_writes == 1 and ledger.health.ok
    assert [s["kind"] for s in ledger.get("r1")["signals"] if s["kind"] in ("judge", "feedback")] == ["feedback"]
    ledger.close()


def test_fault_injected_batch_failure_answers_the_feedback_waiting_in_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import router.core.ledger.writer as writer

    def commit_that_fails(self, records, signals):  # the injected fault: a bug deep in a batch
        if records:
            raise RuntimeError("injected: the batch breaks")

    ledger = open_ledger(tmp_path / "ledger.db", flush_interval_s=1.0)  # record and feedback share a batch
    ledger.record(*make_exchange("r1", edge="7"))
    assert ledger.flush()
    monkeypatch.setattr(writer.LedgerWriter, "_commit", commit_that_fails)
    ledger.record(*make_exchange("r2", edge="8"))
    with pytest.raises(LedgerUnavailableError, match="failed on this batch; retry"):  # not the 10 s timeout
        ledger.feedback("r1", score=1.0, thumbs_up=None, corrected_answer=None)
    monkeypatch.undo()
    ledger.feedback("r1", score=1.0, thumbs_up=None, corrected_answer=None)  # the writer lives on
    assert ledger.metrics.failed_writes == 1
    ledger.close()
