"""Ledger schema: fresh creation, migration of an older file, refusal of a newer one."""
from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest

from router.core.ledger import SCHEMA_VERSION, Ledger
from router.core.ledger.schema import MIGRATIONS, migrate, schema_version
from router.domain.types import AgentStep, BackendKind, Decision, InfoCall, Mode
from tests.unit.test_ledger_support import make_exchange, make_run, make_unanswered, open_ledger


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _indexes(conn: sqlite3.Connection) -> set[str]:
    return {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}


def test_fresh_database_is_created_at_current_version_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "ledger.db"
    ledger = open_ledger(path)
    ledger.close()
    with sqlite3.connect(path) as conn:
        assert schema_version(conn) == SCHEMA_VERSION == len(MIGRATIONS)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert {"requests", "backend_runs", "signals"} <= _tables(conn)
        assert "requests_by_mode_time" in _indexes(conn)


def test_older_database_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with sqlite3.connect(path, isolation_level=None) as conn:
        migrate(conn, MIGRATIONS[:1])
        assert schema_version(conn) == 1
        conn.execute(
            "INSERT INTO requests (id, created_at, mode, served_by, messages_json, content_hash, "
            "content_policy) VALUES ('old-1', '2024-01-01T00:00:00.000000+00:00', 'EDGE_ONLY', 'EDGE', "
            "'[]', 'abc', 'full')")
        assert "requests_by_mode_time" not in _indexes(conn)
    conn.close()

    ledger = open_ledger(path)
    ledger.record(*make_exchange("new-1", edge="7"))
    assert ledger.flush()
    assert ledger.get("old-1")["mode"] == "EDGE_ONLY"
    assert ledger.get("old-1")["decision"] == {}  # v5: rows from before it hold an empty decision
    assert ledger.get("new-1")["decision"]["arbiter"] == "test-arbiter"
    ledger.close()
    with sqlite3.connect(path) as conn:
        assert schema_version(conn) == SCHEMA_VERSION == 7
        assert "requests_by_mode_time" in _indexes(conn)
        assert "decision_json" in {row[1] for row in conn.execute("PRAGMA table_info(requests)")}


def test_newer_database_is_refused_clearly_and_left_alone(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "ledger.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()

    ledger = Ledger(path)
    ledger.open()
    assert not ledger.health.ok
    assert f"schema version {SCHEMA_VERSION + 1}" in ledger.health.reason
    assert "upgrade hybrid-router" in ledger.health.reason
    ledger.record(*make_exchange("r1", edge="7"))  # must not raise
    assert ledger.metrics.dropped_writes == 1
    ledger.close()
    with sqlite3.connect(path) as conn:
        assert schema_version(conn) == SCHEMA_VERSION + 1
        assert "requests" not in _tables(conn)


def test_migrating_twice_is_a_no_op(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "ledger.db", isolation_level=None) as conn:
        assert migrate(conn) == 0
        assert migrate(conn) == SCHEMA_VERSION
        assert schema_version(conn) == SCHEMA_VERSION


def test_a_failing_migration_step_leaves_the_previous_version_intact(tmp_path: Path) -> None:
    broken = (MIGRATIONS[0], ("CREATE TABLE half_done (x INTEGER)", "THIS IS NOT SQL"))
    with sqlite3.connect(tmp_path / "ledger.db", isolation_level=None) as conn:
        with pytest.raises(sqlite3.OperationalError):
            migrate(conn, broken)
        assert schema_version(conn) == 1
        assert "half_done" not in _tables(conn)
        assert "requests" in _tables(conn)


def test_v2_runs_gain_usage_estimated_false_and_new_rows_keep_the_flag(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with sqlite3.connect(path, isolation_level=None) as conn:
        migrate(conn, MIGRATIONS[:2])
        conn.execute(
            "INSERT INTO requests (id, created_at, mode, served_by, messages_json, content_hash, "
            "content_policy) VALUES ('v2-1', '2024-01-01T00:00:00.000000+00:00', 'CLOUD_ONLY', 'CLOUD', "
            "'[]', 'abc', 'full')")
        conn.execute("INSERT INTO backend_runs (request_id, ordinal, backend) VALUES ('v2-1', 0, 'CLOUD')")
    conn.close()

    ledger = open_ledger(path)
    ledger.record(*make_exchange("v3-1", cloud="7", served_by=BackendKind.CLOUD, mode=Mode.CLOUD_ONLY,
                                usage_estimated=True))
    assert ledger.flush()
    assert [run["usage_estimated"] for run in ledger.get("v2-1")["backend_runs"]] == [0]
    assert [run["usage_estimated"] for run in ledger.get("v3-1")["backend_runs"]] == [1]
    ledger.close()


def test_v3_runs_gain_purpose_answer_and_new_rows_keep_theirs(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with sqlite3.connect(path, isolation_level=None) as conn:
        migrate(conn, MIGRATIONS[:3])
        conn.execute(
            "INSERT INTO requests (id, created_at, mode, served_by, messages_json, content_hash, "
            "content_policy) VALUES ('v3-1', '2024-01-01T00:00:00.000000+00:00', 'EDGE_ONLY', 'EDGE', "
            "'[]', 'abc', 'full')")
        conn.execute("INSERT INTO backend_runs (request_id, ordinal, backend) VALUES ('v3-1', 0, 'EDGE')")
    conn.close()

    ledger = open_ledger(path)
    runs = [make_run(BackendKind.EDGE, "#### 7", purpose="sample"), make_run(BackendKind.CLOUD, "#### 7")]
    ledger.record(*make_unanswered("v4-1", runs))
    assert ledger.flush()
    assert [run["purpose"] for run in ledger.get("v3-1")["backend_runs"]] == ["answer"]
    assert [run["purpose"] for run in ledger.get("v4-1")["backend_runs"]] == ["sample", "answer"]
    ledger.close()


def test_v4_requests_gain_an_empty_decision_and_new_rows_keep_theirs(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with sqlite3.connect(path, isolation_level=None) as conn:
        migrate(conn, MIGRATIONS[:4])
        conn.execute(
            "INSERT INTO requests (id, created_at, mode, arbiter, decision_score, served_by, messages_json, "
            "content_hash, content_policy) VALUES ('v4-1', '2024-01-01T00:00:00.000000+00:00', "
            "'POST_ARBITRATION', 'cascade', 0.4, 'CLOUD', '[]', 'abc', 'full')")
    conn.close()

    ledger = open_ledger(path)
    ledger.record(*_post_arbitration("v5-1"))
    assert ledger.flush()
    old = ledger.get("v4-1")
    assert (old["arbiter"], old["decision_score"], old["decision"]) == ("cascade", 0.4, {})
    assert ledger.get("v5-1")["decision"]["features"] == FEATURES
    ledger.close()


FEATURES = {"lp_mean": -0.25, "lp_exp_mean": 0.7788, "has_passage": 0.0, "consistency_agree": 0.6}


def _post_arbitration(request_id: str, **decision: object):
    request, result = make_exchange(request_id, edge="I think 8. #### 8", cloud="3 + 4 = 7. #### 7",
                                    served_by=BackendKind.CLOUD, mode=Mode.POST_ARBITRATION, reference="7")
    fields: dict = dict(mode=Mode.POST_ARBITRATION, arbiter="cascade", score=0.31,
                        reason="score 0.310 < threshold 0.500", scorer="rule (no learned model: model_dir is unset)",
                        threshold=0.5, threshold_kind="fixed", escalated=True, features=FEATURES)
    fields.update(decision)
    return request, dataclasses.replace(result, decision=Decision(**fields))


@pytest.mark.parametrize("log_content", ["full", "redacted", "none"])
def test_a_post_arbitration_decision_round_trips_whole_under_every_content_policy(
        tmp_path: Path, log_content: str) -> None:
    path = tmp_path / "ledger.db"
    ledger = open_ledger(path, log_content=log_content)
    ledger.record(*_post_arbitration("post-1"))
    ledger.record(*_post_arbitration("post-2", score=None, threshold=None, escalated=False, features={},
                                     scorer="learned v0003", threshold_kind="target_share"))
    assert ledger.flush()
    stored = ledger.get("post-1")
    # Features are numbers, not content: kept even where every text is a hash.
    assert stored["decision"] == {
        "arbiter": "cascade", "scorer": "rule (no learned model: model_dir is unset)", "score": 0.31,
        "threshold": 0.5, "threshold_kind": "fixed", "escalated": True,
        "reason": "score 0.310 < threshold 0.500", "degraded": False, "features": FEATURES}
    assert (stored["arbiter"], stored["decision_score"]) == ("cascade", 0.31)
    assert ledger.get("post-2")["decision"] == {
        "arbiter": "cascade", "scorer": "learned v0003", "score": None, "threshold": None,
        "threshold_kind": "target_share", "escalated": False, "reason": "score 0.310 < threshold 0.500",
        "degraded": False, "features": {}}
    ledger.close()
    with sqlite3.connect(path) as conn:
        (raw,) = conn.execute("SELECT decision_json FROM requests WHERE id = 'post-1'").fetchone()
    conn.close()
    assert '"lp_exp_mean":0.7788' in raw


def test_a_feature_that_is_not_a_finite_number_is_stored_as_null_not_lost_with_its_record(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path / "ledger.db")
    ledger.record(*_post_arbitration("odd", features={"lp_min": float("-inf"), "lp_mean": float("nan"),
                                                      "lp_p10": -1.5}))
    assert ledger.flush()
    assert ledger.get("odd")["decision"]["features"] == {"lp_min": None, "lp_mean": None, "lp_p10": -1.5}
    assert ledger.metrics.failed_writes == 0
    ledger.close()


def _rag_exchange(request_id: str):
    request, result = make_exchange(request_id, edge="Denver Broncos", mode=Mode.EDGE_RAG_CLOUD_INFO,
                                    reference="Denver Broncos")
    calls = (InfoCall("retrieve", "Who won Super Bowl 50? mail bob@example.com", ("sb50-000#0", "sb50-001#0"), (0.031, 0.016), 0.004,
                      0.0001),
             InfoCall("search", "secret plans", (), (), 2.0, 0.0001, "info service timed out"))
    steps = (AgentStep(0, "I should search; bob@example.com asked.", "search", "Super Bowl 50 winner", "sb50-000#0: The Denver Broncos ...",
                       cost_usd=0.0001, latency_s=0.004),)
    decision = Decision(mode=Mode.EDGE_RAG_CLOUD_INFO, reason="rag", degraded=True, steps=steps)
    return request, dataclasses.replace(result, info_calls=calls, info_cost_usd=0.0002, citations=("sb50-000#0",),
                                        cost_usd=result.cost_usd + 0.0002, decision=decision,
                                        latency=dataclasses.replace(result.latency, info_s=2.004))


@pytest.mark.parametrize("log_content", ["full", "redacted", "none"])
def test_info_calls_citations_and_agent_steps_are_recorded_with_content_filtered(tmp_path: Path,
                                                                                 log_content: str) -> None:
    ledger = open_ledger(tmp_path / "ledger.db", log_content=log_content)
    request, result = _rag_exchange("rag-1")
    ledger.record(request, result)
    assert ledger.flush()
    stored = ledger.get("rag-1")
    assert stored["info_cost_usd"] == pytest.approx(0.0002) and stored["info_s"] == pytest.approx(2.004)
    assert stored["total_cost_usd"] == pytest.approx(result.cost_usd)
    assert stored["citations"] == ["sb50-000#0"]
    calls = stored["info_calls"]
    assert [(c["operation"], c["passage_ids"], c["error"]) for c in calls] == [
        ("retrieve", ["sb50-000#0", "sb50-001#0"], ""), ("search", [], "info service timed out")]
    assert sum(c["cost_usd"] for c in calls) == pytest.approx(0.0002)  # the failed call is priced too
    assert stored["decision"]["degraded"] is True
    step = stored["decision"]["steps"][0]
    assert (step["tool"], step["cost_usd"]) == ("search", 0.0001)
    # Queries and the agent's words are content, filtered like any request text.
    if log_content == "full":
        assert calls[0]["query"] == "Who won Super Bowl 50? mail bob@example.com"
        assert step["thought"] == "I should search; bob@example.com asked."
    elif log_content == "redacted":
        assert calls[0]["query"] == "Who won Super Bowl 50? mail [EMAIL]"
        assert step["thought"] == "I should search; [EMAIL] asked."
    else:
        assert calls[0]["query"].startswith("sha256:") and step["thought"].startswith("sha256:")
        assert step["observation"].startswith("sha256:") and step["arguments"].startswith("sha256:")
