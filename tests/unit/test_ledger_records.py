"""The ledger's read API (router/core/ledger/records.py): answers are finished answering runs, the latest
signal of each (kind, target) is the evidence, old schemas read as they are, and the read hook cannot write."""
from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest

from router.core.ledger import AccuracySignal, Ledger, LedgerUnavailableError, SignalKind, SignalTarget
from router.core.ledger.records import LedgerReadError, LoggedRequest, open_read_only, read_requests
from router.core.ledger.schema import MIGRATIONS, migrate, schema_version
from router.domain.errors import ErrorKind
from router.domain.types import BackendKind, Mode
from tests.unit.test_learning_deferral import FEATURES, _post
from tests.unit.test_ledger_support import a_moment_between, make_exchange, make_run, make_unanswered, open_ledger

EDGE, CLOUD = BackendKind.EDGE, BackendKind.CLOUD


def _read(path: Path, **window: object) -> dict[str, LoggedRequest]:
    conn = open_read_only(path)
    try:
        return {request.id: request for request in read_requests(conn, **window)}  # type: ignore[arg-type]
    finally:
        conn.close()


def _judge(score: object, target: SignalTarget) -> AccuracySignal:
    return AccuracySignal(kind=SignalKind.JUDGE, score=score, target=target, source="test")  # type: ignore[arg-type]


def test_answers_are_each_backends_first_finished_answering_run(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path / "ledger.db")
    request, result = make_exchange("mixed", edge="the edge's answer", cloud="cut sh", served_by=EDGE,
                                    mode=Mode.POST_ARBITRATION, cloud_finish="cancelled")
    # A self-consistency sample before the answer and a second answer after it are not the edge's answer;
    # a draft is an answer (a draft the cloud then took over is still the edge's text).
    runs = (make_run(EDGE, "a sample", purpose="sample"), *result.runs, make_run(EDGE, "a later answer"),
            make_run(CLOUD, "a failed answer", finish_reason="error"), make_run(CLOUD, "", finish_reason="stop"))
    ledger.record(request, dataclasses.replace(result, runs=runs))
    ledger.record(*make_exchange("drafted", edge="a draft", served_by=EDGE))
    ledger.record(*make_unanswered("unanswered", [make_run(CLOUD, "#### 6 bec", finish_reason="cancelled")]))
    assert ledger.flush()
    ledger.close()
    requests = _read(tmp_path / "ledger.db")
    assert list(requests) == ["mixed", "drafted", "unanswered"]  # in the order they were made
    assert requests["mixed"].answers == {"EDGE": "the edge's answer"}
    assert requests["drafted"].answers == {"EDGE": "a draft"}
    unanswered = requests["unanswered"]
    assert (unanswered.answers, unanswered.served_by, unanswered.final_text) == ({}, "UNSPECIFIED", "#### 6 bec")


def test_the_latest_signal_of_each_kind_and_target_is_the_evidence(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path / "ledger.db")
    ledger.record(*_post("judged"))
    assert ledger.flush()
    ledger.add_signal("judged", _judge(0.2, SignalTarget.EDGE))
    ledger.add_signal("judged", _judge(0.7, SignalTarget.EDGE))
    ledger.add_signal("judged", _judge(None, SignalTarget.EDGE))  # no grade: spend, not evidence
    ledger.add_signal("judged", _judge(0.4, SignalTarget.CLOUD))
    assert ledger.flush()
    ledger.feedback("judged", corrected_answer="#### 7")
    ledger.feedback("judged", thumbs_up=True)
    ledger.close()
    request = _read(tmp_path / "ledger.db")["judged"]
    assert request.evidence[("judge", "edge")].score == 0.7
    assert request.evidence[("judge", "cloud")].score == 0.4
    latest_feedback = request.evidence[("feedback", "final")]
    assert (latest_feedback.thumbs_up, latest_feedback.correct, latest_feedback.corrected_answer) == (True, True, None)
    # Every graded signal stays, in the order written: an earlier correction is not lost to a later thumbs-up.
    written = [(s.kind, s.target, s.score, s.corrected_answer) for s in request.signals if s.kind != "agreement"]
    assert written == [("judge", "edge", 0.2, None), ("judge", "edge", 0.7, None), ("judge", "cloud", 0.4, None),
                       ("feedback", "final", None, "#### 7"), ("feedback", "final", 1.0, None)]
    assert (request.decision_features, request.decision_score, request.mode) == (FEATURES, 0.3, "POST_ARBITRATION")


def test_since_and_mode_select_the_requests_and_their_runs_and_signals(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path / "ledger.db")
    ledger.record(*make_exchange("old", cloud="Oslo", served_by=CLOUD, mode=Mode.CLOUD_ONLY, reference="Oslo"))
    assert ledger.flush()
    cutoff = a_moment_between()
    ledger.record(*make_exchange("new-cloud", cloud="Oslo", served_by=CLOUD, mode=Mode.CLOUD_ONLY, reference="Oslo"))
    ledger.record(*make_exchange("new-edge", edge="Oslo", reference="Oslo"))
    assert ledger.flush()
    ledger.close()
    path = tmp_path / "ledger.db"
    assert list(_read(path)) == ["old", "new-cloud", "new-edge"]
    since = cutoff.isoformat(timespec="microseconds")
    recent = _read(path, since=since)
    assert list(recent) == ["new-cloud", "new-edge"]
    assert list(_read(path, since=since, mode="CLOUD_ONLY")) == ["new-cloud"]
    assert recent["new-cloud"].answers == {"CLOUD": "Oslo"}
    assert recent["new-cloud"].evidence[("reference", "final")].correct is True


def test_an_old_ledger_is_read_as_it_is_and_never_migrated(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with sqlite3.connect(path, isolation_level=None) as conn:
        migrate(conn, MIGRATIONS[:3])  # before v4's run purposes and v5's decisions
        conn.execute(
            "INSERT INTO requests (id, created_at, mode, decision_score, served_by, messages_json, final_text, "
            "content_hash, content_policy) VALUES ('v3', '2024-01-01T00:00:00.000000+00:00', 'POST_ARBITRATION', "
            "0.3, 'CLOUD', '[]', '7', 'abc', 'full')")
        for ordinal, (backend, finish) in enumerate((("EDGE", "stop"), ("CLOUD", "cancelled"), ("CLOUD", "stop"))):
            conn.execute("INSERT INTO backend_runs (request_id, ordinal, backend, text, finish_reason) "
                         "VALUES ('v3', ?, ?, ?, ?)", (ordinal, backend, f"{backend} {ordinal}", finish))
        conn.execute("INSERT INTO signals (request_id, kind, target, score, correct, created_at) "
                     "VALUES ('v3', 'reference', 'cloud', 1, 1, '2024-01-01T00:00:00.000000+00:00')")
    conn.close()
    before = path.read_bytes()
    request = _read(path)["v3"]
    assert request.answers == {"EDGE": "EDGE 0", "CLOUD": "CLOUD 2"}  # every finished run is an answer
    assert request.decision_features == {} and request.decision_score == 0.3
    assert request.evidence[("reference", "cloud")].correct is True
    with sqlite3.connect(path) as conn:
        assert schema_version(conn) == 3
    conn.close()
    assert path.read_bytes() == before


def test_opening_what_is_not_a_ledger_says_so(tmp_path: Path) -> None:
    with pytest.raises(LedgerReadError, match="no ledger database at") as raised:
        open_read_only(tmp_path / "absent.db")
    assert raised.value.kind is ErrorKind.PRECONDITION_FAILED
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    conn.close()
    with pytest.raises(LedgerReadError, match="is not a hybrid-router ledger"):
        open_read_only(other)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database, not even close" * 100)
    with pytest.raises(LedgerReadError, match="cannot read the ledger"):
        open_read_only(junk)


def test_the_ledgers_read_hook_reads_and_cannot_write(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path / "ledger.db")
    ledger.record(*make_exchange("r1", edge="Oslo"))
    assert ledger.flush()
    assert [r.id for r in ledger.read(lambda conn: list(read_requests(conn)))] == ["r1"]
    with pytest.raises(LedgerUnavailableError, match="readonly"):
        ledger.read(lambda conn: conn.execute("DELETE FROM requests"))
    assert ledger.get("r1") is not None
    ledger.close()
    never_opened = Ledger(tmp_path / "elsewhere.db")
    with pytest.raises(LedgerUnavailableError):
        never_opened.read(lambda conn: list(read_requests(conn)))
