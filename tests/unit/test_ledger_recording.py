"""Ledger recording: rows, signals, batching, feedback, late signals, content policies, close."""
from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path

import pytest

from router.domain.errors import InvalidRequestError
from router.core.learning.sft import LedgerExportRefusedError, export_training_set
from router.core.ledger import (AccuracySignal, Ledger, LedgerNotFoundError, LedgerUnavailableError, SignalKind,
                                SignalTarget)
from router.core.ledger.writer import LedgerWriter
from router.domain.types import BackendKind, ChatMessage, Mode
from tests.unit.test_ledger_support import make_exchange, make_run, make_unanswered, open_ledger


def _signals(record: dict, kind: str) -> dict[str, dict]:
    return {s["target"]: s for s in record["signals"] if s["kind"] == kind}


def test_a_request_is_stored_with_its_runs_costs_latency_and_decision(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path / "ledger.db", edge_parameters=0.5e9)
    request, result = make_exchange(
        "req-1", edge="I think 8. #### 8", cloud="3 + 4 = 7. #### 7", served_by=BackendKind.CLOUD,
        mode=Mode.POST_ARBITRATION, reference="7", metadata={"dataset": "gsm8k"},
        edge_cost=0.0001, cloud_cost=0.002, total_s=2.5, ttft_s=0.3)
    ledger.record(request, result)
    assert ledger.flush()

    stored = ledger.get("req-1")
    assert stored is not None
    assert stored["mode"] == "POST_ARBITRATION"
    assert (stored["arbiter"], stored["decision_score"], stored["decision_reason"]) == ("test-arbiter", 0.5, "because")
    assert stored["served_by"] == "CLOUD"
    assert stored["backends_run"] == ["EDGE", "CLOUD"]
    assert stored["final_text"] == "3 + 4 = 7. #### 7"
    assert stored["messages"] == [{"role": m.role, "content": m.content} for m in request.messages]
    assert stored["reference_answer"] == "7"
    assert stored["metadata"] == {"dataset": "gsm8k"}
    assert stored["edge_cost_usd"] == pytest.approx(0.0001)
    assert stored["cloud_cost_usd"] == pytest.approx(0.002)
    assert stored["total_cost_usd"] == pytest.approx(0.0021)
    assert (stored["ttft_s"], stored["total_s"]) == (0.3, 2.5)
    assert stored["edge_parameters"] == 0.5e9
    assert stored["content_policy"] == "full"
    assert len(stored["content_hash"]) == 64
    assert [run["backend"] for run in stored["backend_runs"]] == ["EDGE", "CLOUD"]
    cloud_run = stored["backend_runs"][1]
    assert cloud_run["model"] == "cloud-model"
    assert cloud_run["text"] == "3 + 4 = 7. #### 7"
    assert cloud_run["cost_usd"] == pytest.approx(0.002)
    assert cloud_run["completion_tokens"] == len("3 + 4 = 7. #### 7".split())
    ledger.close()


def test_reference_signals_score_the_served_answer_and_each_backend(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path / "ledger.db")
    # A GSM8K-style reference with its reasoning: scored on the number after ####.
    ledger.record(*make_exchange("r", edge="#### 8", cloud="so 7 apples. #### 7", served_by=BackendKind.CLOUD,
                                 reference="She has 3 + 4 = 7 apples.\n#### 7"))
    assert ledger.flush()
    reference = _signals(ledger.get("r"), "reference")
    assert set(reference) == {"final", "edge", "cloud"}
    assert reference["final"]["correct"] is True and reference["final"]["score"] == 1.0
    assert reference["cloud"]["correct"] is True
    assert reference["edge"]["correct"] is False and reference["edge"]["score"] == 0.0
    assert reference["edge"]["detail"] == {"method": "numeric"}
    ledger.close()


def test_text_references_carry_token_f1(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path / "ledger.db")
    ledger.record(*make_exchange("squad", edge="the Denver Broncos", reference="Denver Broncos"))
    ledger.record(*make_exchange("partial", edge="Broncos of Denver city", reference="Denver Broncos"))
    assert ledger.flush()
    exact = _signals(ledger.get("squad"), "reference")["final"]
    assert exact["correct"] is True and exact["f1"] == 1.0 and exact["detail"] == {"method": "text"}
    partial = _signals(ledger.get("partial"), "reference")["final"]
    assert partial["correct"] is False
    assert 0.0 < partial["f1"] < 1.0 and partial["score"] == partial["f1"]
    ledger.close()


def test_agreement_is_numeric_when_both_answers_end_in_a_number_else_token_f1(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path / "ledger.db")
    ledger.record(*make_exchange("same", edge="It is 1,000.", cloud="#### 1000", mode=Mode.POST_ARBITRATION))
    ledger.record(*make_exchange("differ", edge="#### 12", cloud="#### 13", mode=Mode.POST_ARBITRATION))
    ledger.record(*make_exchange("words", edge="Paris is the capital", cloud="the capital is Paris, France",
                                 mode=Mode.POST_ARBITRATION))
    ledger.record(*make_exchange("edge-only", edge="#### 12"))
    assert ledger.flush()
    same = _signals(ledger.get("same"), "agreement")["pair"]
    assert (same["score"], same["correct"], same["detail"]) == (1.0, True, {"method": "final_number"})
    assert _signals(ledger.get("differ"), "agreement")["pair"]["score"] == 0.0
    words = _signals(ledger.get("words"), "agreement")["pair"]
    assert words["detail"] == {"method": "token_f1"} and 0.5 < words["score"] < 1.0 and words["correct"] is None
    assert _signals(ledger.get("edge-only"), "agreement") == {}
    ledger.close()


def test_a_cancelled_run_is_not_scored(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path / "ledger.db")
    ledger.record(*make_exchange("race", edge="#### 7", cloud="Let me th", cloud_finish="cancelled",
                                 reference="7"))
    assert ledger.flush()
    stored = ledger.get("race")
    assert set(_signals(stored, "reference")) == {"final", "edge"}
    assert _signals(stored, "agreement") == {}
    assert [run["finish_reason"] for run in stored["backend_runs"]] == ["stop", "cancelled"]
    ledger.close()


def test_a_request_that_ended_without_an_answer_is_stored_with_its_spend_and_no_signals(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path / "ledger.db")
    runs = [make_run(BackendKind.EDGE, "#### 7", cost=0.0001, purpose="sample"),
            make_run(BackendKind.CLOUD, "Let me th", cost=0.002, finish_reason="cancelled")]
    ledger.record(*make_unanswered("gone", runs, reference="7"))
    assert ledger.flush()
    stored = ledger.get("gone")
    assert (stored["served_by"], stored["finish_reason"], stored["final_text"]) == ("UNSPECIFIED", "cancelled",
                                                                                  "Let me th")
    assert stored["cloud_cost_usd"] == 0.002 and stored["edge_cost_usd"] == 0.0001
    assert [(run["purpose"], run["finish_reason"]) for run in stored["backend_runs"]] == [
        ("sample", "stop"), ("answer", "cancelled")]
    assert stored["signals"] == []  # no answer to score: neither the partial text nor the sample
    ledger.close()


def test_writes_are_batched_up_to_batch_size(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path / "ledger.db", batch_size=4)
    for index in range(10):
        ledger.record(*make_exchange(f"r{index}", edge=str(index)))
    assert ledger.flush()
    metrics = ledger.metrics
    assert metrics.written == 10
    assert metrics.batches >= 3  # ten rows, at most four a transaction
    assert metrics.queue_depth == 0 and metrics.dropped_writes == 0 and metrics.failed_writes == 0
    ledger.close()


def test_late_signals_are_attached_and_orphans_counted(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path / "ledger.db")
    ledger.record(*make_exchange("r1", edge="Paris"))
    judge = AccuracySignal(kind=SignalKind.JUDGE, score=0.9, detail={"rubric": "v1"}, source="cloud-judge")
    ledger.add_signal("r1", judge)
    ledger.add_signal("never-recorded", judge)
    assert ledger.flush()
    stored = _signals(ledger.get("r1"), "judge")["final"]
    assert (stored["score"], stored["source"], stored["detail"]) == (0.9, "cloud-judge", {"rubric": "v1"})
    assert ledger.metrics.orphan_signals == 1
    ledger.close()


def test_a_signal_outside_zero_to_one_is_refused_where_it_is_made() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        AccuracySignal(kind=SignalKind.JUDGE, score=1.5)
    with pytest.raises(ValueError, match="needs a score or a correct flag"):
        AccuracySignal(kind="reference", score=None)  # type: ignore[arg-type]
    # A judge call that gave no grade is recorded for its cost alone.
    assert AccuracySignal(kind="judge", score=None).score is None  # type: ignore[arg-type]
    assert AccuracySignal(kind="judge", score=1, target="edge").target is SignalTarget.EDGE  # type: ignore[arg-type]


def test_feedback_right_after_record_finds_the_request(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path / "ledger.db", flush_interval_s=1.0)
    ledger.record(*make_exchange("r1", edge="#### 8"))
    # No flush: feedback is ordered behind the queued record.
    ledger.feedback("r1", score=None, thumbs_up=False, corrected_answer="#### 7")
    ledger.feedback("r1", score=0.75, thumbs_up=None, corrected_answer=None)
    feedback = [s for s in ledger.get("r1")["signals"] if s["kind"] == "feedback"]
    assert [(s["score"], s["thumbs_up"], s["corrected_answer"]) for s in feedback] == [
        (0.0, False, "#### 7"), (0.75, None, None)]
    assert feedback[0]["correct"] is False and feedback[0]["source"] == "user"
    ledger.close()


def test_feedback_errors(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path / "ledger.db")
    with pytest.raises(LedgerNotFoundError):
        ledger.feedback("nope", score=1.0, thumbs_up=None, corrected_answer=None)
    with pytest.raises(InvalidRequestError):
        ledger.feedback("nope", score=None, thumbs_up=None, corrected_answer=None)
    with pytest.raises(InvalidRequestError):
        ledger.feedback("nope", score=2.0, thumbs_up=None, corrected_answer=None)
    ledger.close()
    with pytest.raises(LedgerUnavailableError):
        ledger.feedback("nope", score=1.0, thumbs_up=None, corrected_answer=None)


def test_a_reused_request_id_keeps_the_first_record(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path / "ledger.db")
    ledger.record(*make_exchange("dup", edge="first"))
    ledger.record(*make_exchange("dup", edge="second"))
    ledger.record(*make_exchange("other", edge="third"))
    assert ledger.flush()
    assert ledger.get("dup")["final_text"] == "first"
    assert len(ledger.get("dup")["backend_runs"]) == 1
    assert ledger.get("other")["final_text"] == "third"
    assert (ledger.metrics.written, ledger.metrics.duplicates) == (2, 1)
    ledger.close()


def test_a_full_queue_drops_without_blocking_or_raising_and_logs_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # Fault injection: the writer thread never starts, so nothing drains the queue.
    monkeypatch.setattr(LedgerWriter, "start", lambda self: None)
    ledger = open_ledger(tmp_path / "ledger.db", queue_size=3)
    for index in range(20):
        ledger.record(*make_exchange(f"r{index}", edge="x"))
    metrics = ledger.metrics
    assert (metrics.queue_depth, metrics.dropped_writes) == (3, 17)
    assert sum("dropping writes" in r.getMessage() for r in caplog.records) == 1


def test_close_writes_everything_queued(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = open_ledger(path, batch_size=7, flush_interval_s=5.0)
    for index in range(100):
        ledger.record(*make_exchange(f"r{index}", edge=str(index)))
    ledger.close(timeout_s=30)
    assert ledger.health.reason == "closed"
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 100
    conn.close()
    # Recording after close is a counted no-op, and reads still work.
    ledger.record(*make_exchange("late", edge="x"))
    assert ledger.metrics.dropped_writes == 1
    assert ledger.get("r99")["final_text"] == "99"


# Long enough for an unguarded close() to finish (its writer stops within milliseconds); a guarded
# close() waits on the recording thread instead, which then goes on after this bound.
RACE_WINDOW_S = 2.0


def test_a_record_racing_close_is_written_or_counted_never_lost(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = open_ledger(tmp_path / "ledger.db")
    in_put = threading.Event()
    close_returned = threading.Event()
    real_put_nowait = ledger._jobs.put_nowait

    def put_nowait_stalled_until_close_ran(job: object) -> None:
        # Fault injection: the recording thread is preempted between the ledger's closed check and
        # its put, and close() runs meanwhile as far as it can.
        in_put.set()
        close_returned.wait(RACE_WINDOW_S)
        real_put_nowait(job)

    monkeypatch.setattr(ledger._jobs, "put_nowait", put_nowait_stalled_until_close_ran)
    recorder = threading.Thread(target=ledger.record, args=make_exchange("racer", edge="x"))
    recorder.start()
    assert in_put.wait(30)

    def close_then_say_so() -> None:
        ledger.close(timeout_s=30)
        close_returned.set()

    closer = threading.Thread(target=close_then_say_so)
    closer.start()
    recorder.join(60)
    closer.join(60)
    assert not recorder.is_alive() and not closer.is_alive()
    metrics = ledger.metrics
    assert metrics.written + metrics.dropped_writes + metrics.failed_writes == 1, metrics
    assert metrics.queue_depth == 0  # nothing stranded behind the writer's stop


SECRET_QUESTION = "My e-mail is alice@example.com, what is 3 + 4?"


def _database_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def test_log_content_none_keeps_only_hashes_and_numbers(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = open_ledger(path, log_content="none")
    ledger.record(*make_exchange("r1", question=SECRET_QUESTION, edge="The answer is 7", cloud="#### 7",
                                 served_by=BackendKind.CLOUD, reference="7",
                                 metadata={"user": "alice", "patient-bob-smith": "x"}, cloud_cost=0.01))
    assert ledger.flush()
    ledger.feedback("r1", score=None, thumbs_up=None, corrected_answer="Seven, alice")
    stored = ledger.get("r1")
    digest = "sha256:" + hashlib.sha256(SECRET_QUESTION.encode()).hexdigest()
    assert stored["messages"][-1] == {"role": "user", "content": digest}
    assert stored["final_text"] == "sha256:" + hashlib.sha256(b"#### 7").hexdigest()
    assert stored["reference_answer"].startswith("sha256:")
    # The caller's metadata keys are content too: hashed, like the values.
    assert all(key.startswith("sha256:") and value.startswith("sha256:")
               for key, value in stored["metadata"].items()) and len(stored["metadata"]) == 2
    assert all(run["text"].startswith("sha256:") for run in stored["backend_runs"])
    assert stored["cloud_cost_usd"] == 0.01
    # Signals are computed from the real text before it is hashed.
    assert _signals(stored, "reference")["final"]["correct"] is True
    with pytest.raises(LedgerExportRefusedError, match="log_content = none"):
        export_training_set(ledger, "openai", tmp_path / "out.jsonl")
    ledger.close()
    raw = _database_bytes(path)
    for secret in (b"alice", b"3 + 4", b"The answer is 7", b"Seven", b"bob-smith"):
        assert secret not in raw


def test_log_content_redacted_masks_every_stored_text(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path / "ledger.db", log_content="redacted")
    ledger.record(*make_exchange(
        "r1", question="Call me at +1 415-555-0132 or mail bob@corp.io; my key is sk-abcdefghijklmnopqrstuv",
        edge="Sure bob@corp.io, card 4111 1111 1111 1111 noted. It costs 1,000 dollars, 42 each.",
        reference="bob@corp.io", metadata={"auth": "Bearer abcdef0123456789abcdef"}))
    assert ledger.flush()
    ledger.feedback("r1", score=None, thumbs_up=None, corrected_answer="write to bob@corp.io")
    stored = ledger.get("r1")
    assert stored["messages"][-1]["content"] == "Call me at [PHONE] or mail [EMAIL]; my key is [API_KEY]"
    assert stored["final_text"] == "Sure [EMAIL], card [CARD] noted. It costs 1,000 dollars, 42 each."
    assert stored["backend_runs"][0]["text"] == stored["final_text"]
    assert stored["reference_answer"] == "[EMAIL]"
    assert stored["metadata"] == {"auth": "Bearer [API_KEY]"}
    assert [s["corrected_answer"] for s in stored["signals"] if s["kind"] == "feedback"] == ["write to [EMAIL]"]
    ledger.close()


def test_signals_are_computed_on_the_raw_text_not_the_masked_one(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path / "ledger.db", log_content="redacted")
    # Masked, both would read "[EMAIL]" and match.
    ledger.record(*make_exchange("r1", edge="bob@corp.io", reference="alice@corp.io"))
    assert ledger.flush()
    stored = ledger.get("r1")
    assert (stored["final_text"], stored["reference_answer"]) == ("[EMAIL]", "[EMAIL]")
    assert _signals(stored, "reference")["final"]["correct"] is False
    ledger.close()


def test_log_content_is_validated() -> None:
    with pytest.raises(ValueError, match="full, redacted, none"):
        Ledger(Path("unused.db"), log_content="some")


def test_history_messages_are_stored_in_order(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path / "ledger.db")
    history = (ChatMessage("user", "Hi"), ChatMessage("assistant", "Hello! How can I help?"))
    ledger.record(*make_exchange("r1", edge="7", extra_messages=history))
    assert ledger.flush()
    assert [m["role"] for m in ledger.get("r1")["messages"]] == ["system", "user", "assistant", "user"]
    ledger.close()


def test_the_edge_size_learned_after_open_applies_to_later_rows(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path / "ledger.db")  # the daemon opens the ledger before the model loads
    ledger.record(*make_exchange("before-load", edge="7"))
    assert ledger.flush()
    ledger.set_edge_parameters(4.9e8)
    ledger.record(*make_exchange("after-load", edge="7"))
    assert ledger.flush()
    assert ledger.get("before-load")["edge_parameters"] is None
    assert ledger.get("after-load")["edge_parameters"] == 4.9e8
    ledger.close()
