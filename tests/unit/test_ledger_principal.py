"""Who asked: the principal of every request in the ledger (schema v7), the owner lookup Feedback's
authorization needs, and the size limit on a corrected answer."""
from __future__ import annotations

import dataclasses
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from router.core.daemon_ledger import DaemonLedger
from router.core.ledger import MAX_FEEDBACK_BYTES, LedgerUnavailableError
from router.core.ledger.schema import MIGRATIONS, migrate, schema_version
from router.core.ledger.store import LedgerStore
from router.domain.config import LedgerSettings
from router.domain.errors import InvalidRequestError
from router.domain.types import Caller
from tests.unit.test_ledger_support import make_exchange, open_ledger

WAIT_S = 10.0


def _exchange_by(request_id: str, principal: str, *, cloud_cost: float = 0.0) -> tuple[Any, Any]:
    request, result = make_exchange(request_id, edge="7", cloud_cost=cloud_cost)
    return dataclasses.replace(request, caller=Caller(user=principal, groups=("hr",))), result


def test_each_request_row_records_its_principal(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path / "ledger.db")
    ledger.record(*_exchange_by("by-alice", "alice"))
    ledger.record(*_exchange_by("by-bob", "bob"))
    ledger.record(*make_exchange("by-nobody", edge="7"))  # no caller: auth = none
    assert ledger.flush()
    assert ledger.get("by-alice")["principal"] == "alice"
    assert ledger.get("by-bob")["principal"] == "bob"
    assert ledger.get("by-nobody")["principal"] == ""
    ledger.close()


def test_budgets_can_sum_cloud_spend_per_principal_through_an_index(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = open_ledger(path)
    for index in range(3):
        ledger.record(*_exchange_by(f"a{index}", "alice", cloud_cost=0.25))
    ledger.record(*_exchange_by("b0", "bob", cloud_cost=1.0))
    assert ledger.flush()
    ledger.close()
    spend = "SELECT SUM(cloud_cost_usd) FROM requests WHERE principal = ? AND created_at >= ?"
    with sqlite3.connect(path) as conn:
        assert conn.execute(spend, ("alice", "2000-01-01")).fetchone()[0] == pytest.approx(0.75)
        plan = " ".join(str(row[-1]) for row in conn.execute("EXPLAIN QUERY PLAN " + spend, ("alice", "2000")))
    assert "requests_by_principal_time" in plan
    conn.close()


def test_a_v6_database_gains_an_empty_principal_and_new_rows_keep_theirs(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with sqlite3.connect(path, isolation_level=None) as conn:
        migrate(conn, MIGRATIONS[:6])
        conn.execute(
            "INSERT INTO requests (id, created_at, mode, served_by, messages_json, content_hash, "
            "content_policy) VALUES ('old-1', '2024-01-01T00:00:00.000000+00:00', 'EDGE_ONLY', 'EDGE', "
            "'[]', 'abc', 'full')")
    conn.close()
    ledger = open_ledger(path)
    ledger.record(*_exchange_by("new-1", "alice"))
    assert ledger.flush()
    assert ledger.owner("old-1") == ""
    assert ledger.owner("new-1") == "alice"
    ledger.close()
    with sqlite3.connect(path) as conn:
        assert schema_version(conn) == 7
    conn.close()


def test_owner_answers_for_a_request_still_queued_for_the_writer(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # A write that stalls (a slow disk) keeps the record in the writer's hands, not yet in the file.
    entered, release = threading.Event(), threading.Event()
    real_write_batch = LedgerStore.write_batch

    def stalled_write_batch_fault_injection(self: LedgerStore, *args: Any, **kwargs: Any) -> Any:
        entered.set()
        assert release.wait(WAIT_S)
        return real_write_batch(self, *args, **kwargs)

    ledger = open_ledger(tmp_path / "ledger.db")
    monkeypatch.setattr(LedgerStore, "write_batch", stalled_write_batch_fault_injection)
    ledger.record(*_exchange_by("queued", "alice"))
    assert entered.wait(WAIT_S)
    with LedgerStore.open_reader(ledger.path) as store:
        assert store.owner("queued") is None  # not in the file yet
    assert ledger.owner("queued") == "alice"
    release.set()
    assert ledger.flush()
    assert ledger.owner("queued") == "alice"
    assert ledger.owner("never-made") is None
    ledger.close()


def test_the_first_record_of_an_id_owns_it(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path / "ledger.db")
    ledger.record(*_exchange_by("shared", "alice"))
    assert ledger.flush()
    ledger.record(*_exchange_by("shared", "mallory"))  # a reused id: the ledger keeps the first
    assert ledger.owner("shared") == "alice"
    assert ledger.flush()
    assert ledger.owner("shared") == "alice"
    ledger.close()


def test_owner_of_a_ledger_that_cannot_be_read_is_an_error_not_nobody(tmp_path: Path) -> None:
    (tmp_path / "ledger.db").mkdir()  # degraded at open
    settings = LedgerSettings(enabled=True, path=tmp_path / "ledger.db")
    daemon_ledger = DaemonLedger(settings, logging.getLogger("test"))
    daemon_ledger.open()
    with pytest.raises(LedgerUnavailableError):
        daemon_ledger.owner("anything")
    disabled = DaemonLedger(LedgerSettings(enabled=False, path=tmp_path / "other.db"), logging.getLogger("test"))
    with pytest.raises(LedgerUnavailableError, match="ledger.enabled"):
        disabled.owner("anything")


def test_the_daemon_ledger_answers_owner_from_its_ledger(tmp_path: Path) -> None:
    daemon_ledger = DaemonLedger(LedgerSettings(enabled=True, path=tmp_path / "ledger.db"), logging.getLogger("test"))
    daemon_ledger.open()
    daemon_ledger.record(*_exchange_by("mine", "alice"))
    assert daemon_ledger.owner("mine") == "alice"
    assert daemon_ledger.owner("unknown") is None
    daemon_ledger.close()


def test_a_corrected_answer_over_the_limit_is_refused_and_one_at_it_is_kept(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path / "ledger.db")
    ledger.record(*_exchange_by("labelled", "alice"))
    limit = 64
    # Bytes, not characters: 33 two-byte characters are 66 bytes.
    with pytest.raises(InvalidRequestError, match="66 bytes; the limit is 64"):
        ledger.feedback("labelled", corrected_answer="é" * 33, max_bytes=limit)
    ledger.feedback("labelled", corrected_answer="é" * 32, max_bytes=limit)
    with pytest.raises(InvalidRequestError, match="server.max_request_bytes"):
        ledger.feedback("labelled", corrected_answer="x" * (MAX_FEEDBACK_BYTES + 1))
    signals = [s for s in ledger.get("labelled")["signals"] if s["kind"] == "feedback"]
    assert [s["corrected_answer"] for s in signals] == ["é" * 32]
    ledger.close()


def test_the_daemon_ledger_applies_its_feedback_limit(tmp_path: Path) -> None:
    daemon_ledger = DaemonLedger(LedgerSettings(enabled=True, path=tmp_path / "ledger.db"),
                                 logging.getLogger("test"), max_feedback_bytes=10)
    daemon_ledger.open()
    daemon_ledger.record(*_exchange_by("labelled", "alice"))
    with pytest.raises(InvalidRequestError, match="11 bytes; the limit is 10"):
        daemon_ledger.feedback("labelled", score=None, thumbs_up=None, corrected_answer="x" * 11)
    daemon_ledger.feedback("labelled", score=None, thumbs_up=None, corrected_answer="x" * 10)
    daemon_ledger.close()
