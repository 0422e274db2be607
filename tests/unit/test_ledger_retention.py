"""Retention on real SQLite files: requests past their age go with their runs, signals and Info calls; a
ledger above its size cap loses its oldest requests and gives the space back, new and old databases
alike; and the writer sweeps when it starts, after commits that pass the cap, and on its interval."""
from __future__ import annotations

import dataclasses
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from router.core.ledger.redaction import ContentFilter, ContentPolicy
from router.core.ledger.retention import (AUTO_VACUUM_INCREMENTAL, AUTO_VACUUM_NONE, LOW_WATER, RetentionPolicy,
                                          RetentionSchedule, SweepOutcome, bytes_in_use, file_bytes, sweep)
from router.core.ledger.schema import migrate
from router.core.ledger.store import LedgerStore
from router.core.ledger.writer import LedgerState, RecordJob, RecordPreparer
from router.domain.types import InfoCall
from tests.unit.test_ledger_support import make_exchange, open_ledger

DAY_S = 86_400.0
WAIT_S = 10.0
CHILD_TABLES = ("backend_runs", "signals", "info_calls")


def _job(request_id: str, received_at: float, *, answer: str = "7") -> RecordJob:
    # An edge and a cloud run, a reference (so reference and agreement signals), and an Info call.
    request, result = make_exchange(request_id, edge=answer, cloud=answer, reference="7")
    call = InfoCall("retrieve", "a question", ("doc#0",), (0.5,), 0.01, 0.0001)
    return RecordJob(request, dataclasses.replace(result, info_calls=(call,)), received_at)


def _write(store: LedgerStore, jobs: list[RecordJob]) -> None:
    preparer = RecordPreparer(ContentFilter(ContentPolicy.FULL))
    state = LedgerState(logging.getLogger("test"))
    outcome = store.write_batch([preparer.prepare(job, state) for job in jobs])
    assert outcome.written == len(jobs), outcome.errors


def _ids(conn: sqlite3.Connection) -> list[str]:
    return [row[0] for row in conn.execute("SELECT id FROM requests ORDER BY created_at")]


def _children(conn: sqlite3.Connection, request_id: str) -> dict[str, int]:
    return {table: conn.execute(f"SELECT COUNT(*) FROM {table} WHERE request_id = ?", (request_id,)).fetchone()[0]
            for table in CHILD_TABLES}


def test_requests_past_their_age_go_with_their_runs_signals_and_info_calls(tmp_path: Path) -> None:
    now = time.time()
    with LedgerStore.open(tmp_path / "ledger.db") as store:
        _write(store, [_job(f"old{i}", now - 10 * DAY_S + i) for i in range(3)]
               + [_job(f"new{i}", now - 1 * DAY_S + i) for i in range(2)])
        assert all(count > 0 for count in _children(store.conn, "old0").values())
        outcome = sweep(store.conn, RetentionPolicy(max_age_days=7), now)
        assert (outcome.deleted_by_age, outcome.deleted_by_size, outcome.finished) == (3, 0, True)
        assert _ids(store.conn) == ["new0", "new1"]
        assert _children(store.conn, "old0") == {table: 0 for table in CHILD_TABLES}
        assert all(count > 0 for count in _children(store.conn, "new0").values())
        for table in CHILD_TABLES:  # nothing left behind by any deleted request
            assert store.conn.execute(f"SELECT COUNT(*) FROM {table} WHERE request_id NOT IN "
                                      "(SELECT id FROM requests)").fetchone()[0] == 0


def test_a_sweep_stops_at_its_bound_and_the_next_one_goes_on(tmp_path: Path) -> None:
    now = time.time()
    with LedgerStore.open(tmp_path / "ledger.db") as store:
        _write(store, [_job(f"old{i:02d}", now - 30 * DAY_S + i) for i in range(10)] + [_job("new", now)])
        policy = RetentionPolicy(max_age_days=7)
        first = sweep(store.conn, policy, now, chunk_rows=3, max_chunks=2)
        assert (first.deleted_by_age, first.finished) == (6, False)
        assert _ids(store.conn)[:2] == ["old06", "old07"]  # the oldest went first
        second = sweep(store.conn, policy, now, chunk_rows=3, max_chunks=2)
        assert (second.deleted_by_age, second.finished) == (4, True)
        assert _ids(store.conn) == ["new"]


def _fill(store: LedgerStore, count: int, *, start: float, answer_bytes: int = 4_000, prefix: str = "r") -> None:
    answer = "lorem ipsum dolor sit amet " * (answer_bytes // 27)
    for first in range(0, count, 50):
        _write(store, [_job(f"{prefix}{i:04d}", start + i, answer=answer)
                       for i in range(first, min(count, first + 50))])


def test_a_new_database_above_its_cap_loses_its_oldest_requests_and_shrinks(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    now = time.time()
    with LedgerStore.open(path) as store:
        assert int(store.conn.execute("PRAGMA auto_vacuum").fetchone()[0]) == AUTO_VACUUM_INCREMENTAL
        _fill(store, 200, start=now - 1_000)
        before = bytes_in_use(store.conn)
        cap = before // 2
        outcome = sweep(store.conn, RetentionPolicy(max_bytes=cap), now)
        assert outcome.deleted_by_size > 0 and outcome.deleted_by_age == 0 and outcome.finished
        assert not outcome.rewritten  # a new database needs no rewrite
        kept = _ids(store.conn)
        assert kept == [f"r{i:04d}" for i in range(200 - len(kept), 200)]  # the newest, in one run
        assert bytes_in_use(store.conn) <= cap
        assert file_bytes(store.conn) <= cap  # the freed pages went back to the file system
        assert bytes_in_use(store.conn) > cap * LOW_WATER * 0.5  # it did not empty the ledger either
    assert os.path.getsize(path) <= cap


def test_a_database_under_its_cap_is_left_alone(tmp_path: Path) -> None:
    with LedgerStore.open(tmp_path / "ledger.db") as store:
        _fill(store, 20, start=time.time())
        outcome = sweep(store.conn, RetentionPolicy(max_bytes=bytes_in_use(store.conn) + 1), time.time())
        assert outcome == SweepOutcome()
        assert len(_ids(store.conn)) == 20


def _earlier_version_database(path: Path) -> None:
    """What an earlier version created: no auto_vacuum, since it never asked for it."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    migrate(conn)
    conn.close()


def test_an_earlier_versions_database_is_rewritten_once_to_give_space_back(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    _earlier_version_database(path)
    now = time.time()
    with LedgerStore.open(path) as store:
        assert int(store.conn.execute("PRAGMA auto_vacuum").fetchone()[0]) == AUTO_VACUUM_NONE
        _fill(store, 200, start=now - 1_000)
        cap = bytes_in_use(store.conn) // 2
        outcome = sweep(store.conn, RetentionPolicy(max_bytes=cap), now)
        assert outcome.deleted_by_size > 0 and outcome.rewritten and not outcome.rewrite_error
        assert int(store.conn.execute("PRAGMA auto_vacuum").fetchone()[0]) == AUTO_VACUUM_INCREMENTAL
        assert file_bytes(store.conn) <= cap
        again = sweep(store.conn, RetentionPolicy(max_bytes=cap), now)
        assert not again.rewritten and again.deleted == 0
    assert os.path.getsize(path) <= cap


def test_without_the_rewrite_freed_pages_are_reused_so_the_file_stops_growing(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    _earlier_version_database(path)
    now = time.time()
    with LedgerStore.open(path) as store:
        _fill(store, 200, start=now - 1_000)
        cap = bytes_in_use(store.conn) // 2
        sweep(store.conn, RetentionPolicy(max_bytes=cap), now, may_rewrite=False)
        high_water = file_bytes(store.conn)
        for round_ in range(3):  # more requests, each time swept back under the cap
            _write(store, [_job(f"more{round_}-{i:03d}", now + round_ * 100 + i, answer="x " * 2_000)
                           for i in range(40)])
            sweep(store.conn, RetentionPolicy(max_bytes=cap), now, may_rewrite=False)
            assert bytes_in_use(store.conn) <= cap
        assert file_bytes(store.conn) <= high_water
        assert int(store.conn.execute("PRAGMA auto_vacuum").fetchone()[0]) == AUTO_VACUUM_NONE


def test_the_writer_sweeps_old_requests_when_it_starts(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    now = time.time()
    with LedgerStore.open(path) as store:
        _write(store, [_job("ancient", now - 400 * DAY_S), _job("recent", now - DAY_S)])
    ledger = open_ledger(path, retention_days=30)
    assert ledger.flush()  # answered after the writer's first sweep
    assert ledger.get("ancient") is None and ledger.get("recent") is not None
    assert ledger.metrics.retention_deleted == 1
    ledger.close()
    with sqlite3.connect(path) as conn:
        assert _children(conn, "ancient") == {table: 0 for table in CHILD_TABLES}
    conn.close()


def test_the_writer_keeps_a_running_ledger_under_its_cap(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    cap = 512 * 1024
    ledger = open_ledger(path, retention_max_bytes=cap, batch_size=16)
    big_answer = "lorem ipsum " * 1_000
    for index in range(300):
        ledger.record(*make_exchange(f"r{index:03d}", edge=big_answer))
    assert ledger.flush()  # answered after the sweep that followed the last commit
    assert ledger.health.ok
    metrics = ledger.metrics
    assert metrics.written == 300 and metrics.retention_deleted > 0
    assert ledger.get("r299") is not None and ledger.get("r000") is None
    ledger.close()
    with sqlite3.connect(path) as conn:
        assert bytes_in_use(conn) <= cap
    conn.close()
    assert os.path.getsize(path) <= cap


class SteppedClock:
    """A clock the test moves by hand, so the schedule is checked without waiting."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_the_schedule_sweeps_at_start_on_its_interval_and_when_over_the_cap(tmp_path: Path) -> None:
    clock = SteppedClock()
    with LedgerStore.open(tmp_path / "ledger.db") as store:
        _fill(store, 10, start=time.time())
        used = bytes_in_use(store.conn)
        schedule = RetentionSchedule(RetentionPolicy(max_age_days=1, max_bytes=used + 1), interval_s=60,
                                     clock=clock)
        assert schedule.due(store.conn)  # at start
        schedule.swept(SweepOutcome())
        assert not schedule.due(store.conn) and schedule.seconds_until_due() == 60
        clock.now += 60
        assert schedule.due(store.conn)
        schedule.swept(SweepOutcome(finished=False))
        assert schedule.due(store.conn) and schedule.seconds_until_due() == 0  # unfinished: at once
        schedule.swept(SweepOutcome())
        _fill(store, 1, start=time.time(), prefix="over")  # past the cap now
        assert schedule.due(store.conn)
        schedule.swept(None)  # a failed sweep is not retried at every batch
        assert not schedule.due(store.conn)
        clock.now += 60
        assert schedule.due(store.conn)
        assert schedule.may_rewrite
        schedule.swept(SweepOutcome(rewrite_error="database or disk is full"))
        assert not schedule.may_rewrite


@pytest.mark.parametrize(("days", "max_bytes"), [(0, None), (-1.0, None), (None, 0)])
def test_a_policy_that_keeps_nothing_is_refused(days: object, max_bytes: object) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        RetentionPolicy(max_age_days=days, max_bytes=max_bytes)  # type: ignore[arg-type]


class RetentionLogWatch(logging.Handler):
    """Sets an event when the writer logs a retention sweep that deleted requests."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.deleted = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("ledger retention: deleted"):
            self.deleted.set()


def test_an_idle_writer_wakes_for_its_next_sweep(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    logger = logging.getLogger("test.ledger.retention")
    logger.setLevel(logging.INFO)
    watch = RetentionLogWatch()
    logger.addHandler(watch)
    try:
        ledger = open_ledger(path, retention_days=30, retention_interval_s=0.05, logger=logger)
        ledger.record(*make_exchange("recent", edge="7"))
        assert ledger.flush()
        # A request that turns old while nothing is being written: no batch will come to trigger a sweep.
        with sqlite3.connect(path, isolation_level=None) as conn:
            conn.execute("UPDATE requests SET created_at = '2001-01-01T00:00:00.000000+00:00' WHERE id = 'recent'")
        conn.close()
        assert watch.deleted.wait(WAIT_S)
        assert ledger.get("recent") is None
        assert ledger.metrics.retention_deleted == 1
        ledger.close()
    finally:
        logger.removeHandler(watch)
