"""`hybrid-router augment` through a real daemon: the 135M model is the edge and, behind the stand-in's
OpenAI-compatible server, the cloud. Every question the augmenter asks is a CLOUD_ONLY request the daemon
prices and records; what is kept passes the checks (tests/unit/test_learning_augment.py); a rerun resumes
and asks nothing again."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from router.client import RouterClient
from router.core.learning.augment import (MATHS_INSTRUCTION, READING, Example, new_question_fault,
                                          retold_problem_fault, solution_fault, task_of)
from router.domain.jsonl import read_records
from router.doors.augment_cli import CloudAsker, progress_path, run_augment
from tests.conftest import ServerThread, make_settings
from tests.unit.test_learning_augment import maths_row, reading_row


def test_augment_asks_the_cloud_through_the_daemon_records_every_request_and_resumes(tmp_path: Path,
                                                                                      smollm_path: Path) -> None:
    ledger = tmp_path / "ledger.db"
    server = ServerThread(make_settings({"HYBRID_ROUTER_LEDGER__ENABLED": "true",
                                         "HYBRID_ROUTER_LEDGER__PATH": str(ledger)}))
    rows = [maths_row(), reading_row()]
    out = tmp_path / "augmented.jsonl"
    try:
        with RouterClient(server.address, timeout_s=600) as client:
            asker = CloudAsker(client.generate)
            first = run_augment(rows, asker, out=out, variants=1, min_f1=0.8, log=lambda line: None)
            again = run_augment(rows, CloudAsker(client.generate), out=out, variants=1, min_f1=0.8,
                                log=lambda line: None)
    finally:
        server.stop()
    records = read_records(progress_path(out))
    assert sum(first.values()) == 2 and sum(again.values()) == 0  # the rerun found both pairs done
    assert [record["source_line"] for record in records] == [1, 2]
    asked = [request_id for record in records for request_id in record["request_ids"]]
    assert all(record["request_ids"] and record["usd"] > 0 and "rewrite" in record for record in records)
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    assert kept == [record["row"] for record in records if record["row"]]
    for row in kept:  # whatever the small model managed to keep passes every check
        example = Example.from_row(row)
        if task_of(example) == READING:
            passages, _, new_question = example.user.rpartition("\nQuestion: ")
            original = reading_row()["messages"][1]["content"].rpartition("\nQuestion: ")[2]
            assert new_question_fault(passages, original, example.answer, new_question) is None
        else:
            retold = example.user.removesuffix(f"\n{MATHS_INSTRUCTION}")
            original = maths_row()["messages"][1]["content"].removesuffix(f"\n{MATHS_INSTRUCTION}")
            assert retold_problem_fault(original, retold) is None
            assert solution_fault("#### 7", example.answer) is None
    with sqlite3.connect(ledger) as conn:
        logged = dict(conn.execute(f"SELECT id, metadata_json FROM requests WHERE id IN "
                                   f"({','.join('?' * len(asked))})", asked).fetchall())
        modes = {mode for (mode,) in conn.execute("SELECT DISTINCT mode FROM requests")}
        cloud_usd = conn.execute(f"SELECT SUM(cloud_cost_usd) FROM requests WHERE id IN "
                                 f"({','.join('?' * len(asked))})", asked).fetchone()[0]
    assert set(logged) == set(asked) and all(json.loads(m) == {"purpose": "augment"} for m in logged.values())
    assert modes == {"CLOUD_ONLY"} and cloud_usd == pytest.approx(sum(record["usd"] for record in records))
