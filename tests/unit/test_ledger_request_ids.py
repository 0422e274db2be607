"""Ledger.contains: a request id is found while its record is queued, once it is written, and at
every moment in between; a record that was never stored leaves its id free."""
from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from router.domain.config import LedgerSettings
from router.core.daemon_ledger import DaemonLedger
from router.core.ledger import Ledger
from router.core.ledger.store import LedgerStore
from router.core.ledger.writer import LedgerWriter
from tests.unit.test_ledger_support import make_exchange, open_ledger


def test_a_queued_record_is_found_before_the_writer_takes_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Fault injection: the writer thread never starts, so the record stays queued.
    monkeypatch.setattr(LedgerWriter, "start", lambda self: None)
    ledger = open_ledger(tmp_path / "ledger.db")
    ledger.record(*make_exchange("queued", edge="x"))
    assert ledger.contains("queued")
    assert not ledger.contains("never-sent")


def test_a_written_record_is_found_in_the_database_and_leaves_the_queue_set(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path / "ledger.db")
    ledger.record(*make_exchange("written", edge="x"))
    assert ledger.flush()
    assert "written" not in ledger._pending_ids and len(ledger._pending_ids) == 0
    assert ledger.contains("written")
    assert not ledger.contains("never-sent")
    ledger.close()
    assert ledger.contains("written")  # the database outlives the writer (and the daemon)
    reopened = open_ledger(tmp_path / "ledger.db")
    assert reopened.contains("written")
    reopened.close()


def test_the_id_is_found_while_its_batch_commits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, bool] = {}
    real_write_batch = LedgerStore.write_batch

    def write_batch_observed(store: LedgerStore, records, signals=()):
        # Observes, from inside the writer, the moments just before and just after the commit.
        seen["before commit"] = ledger.contains("moving")
        outcome = real_write_batch(store, records, signals)
        seen["after commit"] = ledger.contains("moving")
        return outcome

    monkeypatch.setattr(LedgerStore, "write_batch", write_batch_observed)
    ledger = open_ledger(tmp_path / "ledger.db")
    ledger.record(*make_exchange("moving", edge="x"))
    assert ledger.flush()
    assert seen == {"before commit": True, "after commit": True}
    ledger.close()


def test_a_record_lost_to_a_failed_batch_frees_its_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fault_injecting_write_batch(store: LedgerStore, records, signals=()):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(LedgerStore, "write_batch", fault_injecting_write_batch)
    ledger = open_ledger(tmp_path / "ledger.db")
    ledger.record(*make_exchange("lost", edge="x"))
    assert ledger.flush()
    assert ledger.metrics.failed_writes == 1
    assert not ledger.contains("lost")
    assert len(ledger._pending_ids) == 0
    ledger.close()


def test_a_dropped_record_frees_its_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LedgerWriter, "start", lambda self: None)  # fault injection: nothing drains
    ledger = open_ledger(tmp_path / "ledger.db", queue_size=1)
    ledger.record(*make_exchange("kept", edge="x"))
    ledger.record(*make_exchange("dropped", edge="x"))
    assert ledger.metrics.dropped_writes == 1
    assert ledger.contains("kept")
    assert not ledger.contains("dropped")


def test_the_same_id_queued_twice_stays_found_until_both_are_settled(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LedgerWriter, "start", lambda self: None)
    ledger = open_ledger(tmp_path / "ledger.db")
    ledger.record(*make_exchange("twice", edge="first"))
    ledger.record(*make_exchange("twice", edge="second"))
    ledger._pending_ids.settle("twice")
    assert ledger.contains("twice")
    ledger._pending_ids.settle("twice")
    assert not ledger.contains("twice")


def test_an_unreadable_ledger_answers_false_and_never_raises(tmp_path: Path) -> None:
    (tmp_path / "ledger.db").mkdir()  # a directory where the file should be: degraded at open
    ledger = Ledger(tmp_path / "ledger.db")
    ledger.open()
    assert not ledger.health.ok
    ledger.record(*make_exchange("unrecorded", edge="x"))
    assert not ledger.contains("unrecorded")


def test_a_disabled_ledger_holds_no_id(tmp_path: Path) -> None:
    disabled = DaemonLedger(LedgerSettings(enabled=False, path=tmp_path / "ledger.db"),
                            logging.getLogger("test"))
    disabled.open()
    disabled.record(*make_exchange("anything", edge="x"))
    assert not disabled.contains("anything")
    disabled.close()


def test_the_daemon_ledger_answers_from_its_ledger(tmp_path: Path) -> None:
    enabled = DaemonLedger(LedgerSettings(enabled=True, path=tmp_path / "ledger.db"), logging.getLogger("test"))
    enabled.open()
    enabled.record(*make_exchange("recorded", edge="x"))
    assert enabled.contains("recorded")
    assert not enabled.contains("other")
    enabled.close()
