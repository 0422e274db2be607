"""Training rows for the learned deferral model from the ledger (router/core/learning/deferral.py), and
`hybrid-router train-arbiter --ledger`: labels by evidence precedence, skip counts, the split, old schemas."""
from __future__ import annotations

import collections
import dataclasses
import json
import logging
import random
import sqlite3
import time
from pathlib import Path
from typing import Optional, Sequence

import pytest

from router.core.arbiters.corpus import TrainingError
from router.core.arbiters.features import FEATURE_NAMES
from router.core.ledger import AccuracySignal, SignalKind, SignalTarget
from router.core.learning.deferral import deferral_rows, split_of
from router.core.ledger.redaction import ContentFilter, ContentPolicy
from router.core.ledger.schema import MIGRATIONS, migrate, schema_version
from router.core.ledger.store import LedgerStore
from router.core.ledger.writer import LedgerState, RecordJob, RecordPreparer
from router.doors.cli import main as cli_main
from router.domain.scoring import token_f1
from router.domain.types import BackendKind, Decision, GenerateRequest, GenerateResult, Mode
from tests.unit.test_ledger_support import make_exchange, make_run, make_unanswered, open_ledger

FEATURES = {name: 0.5 for name in FEATURE_NAMES}
EDGE, CLOUD, FINAL = SignalTarget.EDGE, SignalTarget.CLOUD, SignalTarget.FINAL


def _post(request_id: str, *, edge: str = "I think 8. #### 8", cloud: Optional[str] = "3 + 4 = 7. #### 7",
          served_by: BackendKind = BackendKind.CLOUD, reference: Optional[str] = None,
          features: Optional[dict] = None, score: Optional[float] = 0.3, question: str = "What is 3 + 4?",
          mode: Mode = Mode.POST_ARBITRATION) -> tuple[GenerateRequest, GenerateResult]:
    request, result = make_exchange(request_id, question=question, edge=edge, cloud=cloud, served_by=served_by,
                                    mode=mode, reference=reference)
    decision = Decision(mode=mode, arbiter="shadow", score=score, scorer="rule", threshold=0.5,
                        threshold_kind="fixed", escalated=served_by == BackendKind.CLOUD,
                        features=FEATURES if features is None else features)
    return request, dataclasses.replace(result, decision=decision)


def _judge(score: Optional[float], target: SignalTarget) -> AccuracySignal:
    return AccuracySignal(kind=SignalKind.JUDGE, score=score, target=target, source="test-judge")


def _agreement(score: float) -> AccuracySignal:
    return AccuracySignal(kind=SignalKind.AGREEMENT, score=score, target=SignalTarget.PAIR, source="test")


def _write_with_signals(path: Path, exchange: tuple[GenerateRequest, GenerateResult],
                        signals: Sequence[AccuracySignal], *, policy: str = "full") -> None:
    """Records through the writer's own preparer with exactly these signals (no computed agreement)."""
    preparer = RecordPreparer(ContentFilter(ContentPolicy.parse(policy)), score=lambda _req, _res: list(signals))
    prepared = preparer.prepare(RecordJob(*exchange, received_at=time.time()), LedgerState(logging.getLogger("t")))
    with LedgerStore.open(path) as store:
        outcome = store.write_batch([prepared])
    assert outcome.written == 1, outcome.errors


def _rows(path: Path, **options: object) -> tuple[dict, collections.Counter]:
    rows, skipped = deferral_rows(path, **options)  # type: ignore[arg-type]
    return {row.item_id: row for row in rows}, skipped


def _labels(rows: dict, request_id: str) -> tuple[float, float]:
    row = rows[request_id]
    return row.edge_quality, row.cloud_quality


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    """One ledger holding a request for every evidence level and every reason to skip one."""
    path = tmp_path / "ledger.db"
    ledger = open_ledger(path)
    record = ledger.record
    # Reference beats feedback and judge: the judge would give the edge 0.9, the thumbs-down the cloud 0.
    record(*_post("reference", reference="#### 7"))
    # A text reference gives F1, not the correct flag (which is False for a partial match).
    record(*_post("reference-f1", edge="Lyon is the capital of France", cloud="Paris",
                  reference="Paris is the capital of France", question="What is the capital of France?"))
    # Feedback beats judge (and agreement) for the served answer; the edge's own judge beats agreement.
    record(*_post("feedback-thumbs"))
    record(*_post("feedback-score"))
    record(*_post("feedback-correction"))
    # Judge beats agreement, which here would say 1.0: both end in 7.
    record(*_post("judge", edge="#### 7", cloud="so #### 7"))
    record(*_post("judge-final", edge="#### 7", cloud="so #### 7"))
    # Agreement alone: the cloud is the teacher.
    record(*_post("agreement", edge="Paris is a city", cloud="Paris is the capital"))
    record(*_post("agreement-cloud-judged", edge="Paris is a city", cloud="Paris is the capital"))
    record(*_post("agreement-edge-judged", edge="Paris is a city", cloud="Paris is the capital"))
    # Skipped.
    record(*_post("kept-edge", cloud=None, served_by=BackendKind.EDGE, reference="#### 7"))
    record(*_post("no-features", reference="#### 7", features={}))
    record(*_post("cloud-only", reference="#### 7", mode=Mode.CLOUD_ONLY))
    record(*make_unanswered("cancelled", [make_run(BackendKind.EDGE, "#### 7"),
                                          make_run(BackendKind.CLOUD, "#### 7")], mode=Mode.POST_ARBITRATION))
    assert ledger.flush()
    ledger.add_signal("reference", _judge(0.9, EDGE))
    ledger.feedback("reference", thumbs_up=False)
    ledger.add_signal("feedback-thumbs", _judge(0.9, CLOUD))
    ledger.add_signal("feedback-thumbs", _judge(0.3, EDGE))
    ledger.feedback("feedback-thumbs", thumbs_up=False)
    ledger.add_signal("feedback-score", _judge(0.9, CLOUD))
    ledger.add_signal("feedback-score", _judge(0.2, EDGE))
    ledger.feedback("feedback-score", score=0.6)
    ledger.add_signal("feedback-correction", _judge(0.4, EDGE))
    ledger.feedback("feedback-correction", corrected_answer="#### 7")
    ledger.add_signal("judge", _judge(0.35, EDGE))
    ledger.add_signal("judge", _judge(None, EDGE))  # a judge that gave no grade must not hide the grade
    ledger.add_signal("judge", _judge(0.75, CLOUD))
    ledger.add_signal("judge-final", _judge(0.1, EDGE))
    ledger.add_signal("judge-final", _judge(0.8, FINAL))
    ledger.add_signal("agreement-cloud-judged", _judge(0.6, CLOUD))
    ledger.add_signal("agreement-edge-judged", _judge(0.3, EDGE))
    assert ledger.flush()
    ledger.close()
    # No agreement (e.g. a ledger whose scoring failed): nothing can stand in for a missing label.
    _write_with_signals(path, _post("unlabelled"), [])
    _write_with_signals(path, _post("edge-judged-only"), [_judge(0.5, EDGE)])
    _write_with_signals(path, _post("cloud-judged-only"), [_judge(0.5, CLOUD)])
    return path


def test_a_reference_match_is_the_strongest_label(ledger_path: Path) -> None:
    rows, _ = _rows(ledger_path)
    assert _labels(rows, "reference") == (0.0, 1.0)


def test_a_text_reference_labels_with_its_f1(ledger_path: Path) -> None:
    rows, _ = _rows(ledger_path)
    edge, cloud = _labels(rows, "reference-f1")
    expected = token_f1("Lyon is the capital of France", "Paris is the capital of France")
    assert 0 < expected < 1 and edge == pytest.approx(expected)
    assert cloud == pytest.approx(token_f1("Paris", "Paris is the capital of France"))


def test_feedback_labels_the_served_answer_before_a_judge(ledger_path: Path) -> None:
    rows, _ = _rows(ledger_path)
    assert _labels(rows, "feedback-thumbs") == (0.3, 0.0)
    assert _labels(rows, "feedback-score") == (0.2, 0.6)
    assert _labels(rows, "feedback-correction") == (0.4, 0.0)


def test_a_judge_labels_before_agreement_and_an_ungraded_judge_hides_nothing(ledger_path: Path) -> None:
    rows, _ = _rows(ledger_path)
    assert _labels(rows, "judge") == (0.35, 0.75)
    assert _labels(rows, "judge-final") == (0.1, 0.8)  # the served answer's judge speaks for the cloud


def test_agreement_alone_takes_the_cloud_as_the_teacher(ledger_path: Path) -> None:
    rows, _ = _rows(ledger_path)
    agreement = token_f1("Paris is a city", "Paris is the capital")
    assert 0 < agreement < 1
    assert _labels(rows, "agreement") == (pytest.approx(agreement), 1.0)
    assert _labels(rows, "agreement-cloud-judged") == (pytest.approx(agreement), 0.6)
    assert _labels(rows, "agreement-edge-judged") == (0.3, 1.0)


def test_requests_without_a_row_are_counted_by_reason(ledger_path: Path) -> None:
    rows, skipped = _rows(ledger_path)
    assert set(rows) == {"reference", "reference-f1", "feedback-thumbs", "feedback-score", "feedback-correction",
                         "judge", "judge-final", "agreement", "agreement-cloud-judged", "agreement-edge-judged"}
    assert skipped == {"no_cloud_answer": 1, "no_features": 1, "other_mode": 1, "not_answered": 1,
                       "no_edge_label": 2, "no_cloud_label": 1}


def test_rows_carry_features_text_rule_score_and_a_stable_hash_split(ledger_path: Path) -> None:
    rows, _ = _rows(ledger_path)
    row = rows["reference-f1"]
    # The text-only features are drawn afresh from the stored request and edge answer (no passage, no
    # equality: 0), and so is the default rule's score: the samples' agreement (0.5) of a numeric answer,
    # not the decision's 0.3.
    refreshed = {**FEATURES, "span_in_focus": 0.0, "arithmetic_checked": 0.0, "arithmetic_wrong": 0.0}
    assert (row.dataset, row.features, row.rule_score) == ("ledger", refreshed, 0.5)
    assert row.text == "What is the capital of France?"  # the last user message, not the system prompt
    assert all(r.split == split_of(r.item_id) for r in rows.values())
    # Pinned: a change of the hash would move rows of a grown ledger across the split.
    assert [split_of(f"req-{i}") for i in range(12)] == ["train"] * 8 + ["test", "train", "train", "test"]
    shares = collections.Counter(split_of(f"id-{i}") for i in range(2000))
    assert 0.21 < shares["test"] / 2000 < 0.29


def test_since_selects_requests_by_time(ledger_path: Path) -> None:
    rows, skipped = _rows(ledger_path, since="2000-01-01T00:00:00.000000+00:00")
    assert len(rows) == 10
    with pytest.raises(TrainingError, match="since 2999"):
        deferral_rows(ledger_path, since="2999-01-01T00:00:00.000000+00:00")


def test_without_the_rules_inputs_the_recorded_rule_score_stands_and_without_any_score_it_is_neutral(
        tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    logprob_only = {"lp_exp_mean": 0.7}  # a scorer that recorded less than the rule reads
    _write_with_signals(path, _post("unscored", score=None, features=logprob_only),
                        [_judge(0.2, EDGE), _judge(0.9, CLOUD)])
    _write_with_signals(path, _post("learned", score=0.45, features={**logprob_only, "rule_score": 0.8}),
                        [_judge(0.2, EDGE), _judge(0.9, CLOUD)])
    rows, _ = _rows(path, need_features=())
    assert rows["unscored"].rule_score == 0.5
    assert rows["learned"].rule_score == 0.8  # the learned scorer records the rule's score beside its own


def test_a_row_recorded_before_span_in_focus_existed_gains_it_from_the_stored_texts(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    before = {name: value for name, value in FEATURES.items() if name != "span_in_focus"}
    passage = ("Passage: The Rhine rises in the Alps. It flows into the North Sea at Rotterdam.\n"
               "Question: Where does the Rhine flow into the North Sea?")
    _write_with_signals(path, _post("in-focus", question=passage, edge="Rotterdam", features=before),
                        [_judge(0.9, EDGE), _judge(0.9, CLOUD)])
    _write_with_signals(path, _post("elsewhere", question=passage, edge="the Alps", features=before),
                        [_judge(0.1, EDGE), _judge(0.9, CLOUD)])
    rows, skipped = _rows(path)
    assert not skipped.get("partial_features")
    assert rows["in-focus"].features["span_in_focus"] == 1.0 and rows["elsewhere"].features["span_in_focus"] == 0.0
    hashed = tmp_path / "hashed.db"  # policy none: no text to read it from, so the row stays partial
    _write_with_signals(hashed, _post("in-focus", question=passage, edge="Rotterdam", features=before),
                        [_judge(0.9, EDGE), _judge(0.9, CLOUD)], policy="none")
    with pytest.raises(TrainingError, match="partial_features 1"):
        deferral_rows(hashed)


def test_a_hashed_only_ledger_gives_rows_without_text(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    _write_with_signals(path, _post("hashed"), [_judge(0.2, EDGE), _judge(0.9, CLOUD)], policy="none")
    rows, _ = _rows(path)
    assert rows["hashed"].text == "" and rows["hashed"].features == FEATURES


def test_an_unlabelled_ledger_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    _write_with_signals(path, _post("unlabelled"), [])
    with pytest.raises(TrainingError) as raised:
        deferral_rows(path)
    message = str(raised.value)
    assert str(path) in message and "no_edge_label 1" in message
    assert "judge_sample_rate" in message and "--corpus" in message
    assert deferral_rows(path, require_rows=False) == ([], collections.Counter(no_edge_label=1))
    with pytest.raises(TrainingError, match="no ledger database"):
        deferral_rows(tmp_path / "absent.db")


def test_a_schema_v4_ledger_is_read_without_being_migrated(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with sqlite3.connect(path, isolation_level=None) as conn:
        migrate(conn, MIGRATIONS[:4])
        conn.execute(
            "INSERT INTO requests (id, created_at, mode, arbiter, decision_score, served_by, messages_json, "
            "content_hash, content_policy) VALUES ('v4', '2024-01-01T00:00:00.000000+00:00', 'POST_ARBITRATION', "
            "'cascade', 0.3, 'CLOUD', '[]', 'abc', 'full')")
        for ordinal, backend in enumerate(("EDGE", "CLOUD")):
            conn.execute("INSERT INTO backend_runs (request_id, ordinal, backend, text) VALUES ('v4', ?, ?, '7')",
                         (ordinal, backend))
            conn.execute("INSERT INTO signals (request_id, kind, target, score, correct, created_at) "
                         "VALUES ('v4', 'reference', ?, 1, 1, '2024-01-01T00:00:00.000000+00:00')",
                         (backend.lower(),))
    conn.close()
    before = path.read_bytes()

    assert deferral_rows(path, require_rows=False) == ([], collections.Counter(no_features=1))
    with pytest.raises(TrainingError, match="no_features 1"):
        deferral_rows(path)
    with sqlite3.connect(path) as conn:
        assert schema_version(conn) == 4
        assert "decision_json" not in {row[1] for row in conn.execute("PRAGMA table_info(requests)")}
    conn.close()
    assert path.read_bytes() == before


# -- hybrid-router train-arbiter --ledger ------------------------------------------------------------


def _labelled_ledger(path: Path, count: int = 40) -> Path:
    rng = random.Random(0)
    ledger = open_ledger(path)
    for i in range(count):
        confidence = rng.random()
        features = {**{name: rng.random() for name in FEATURE_NAMES}, "lp_exp_mean": confidence}
        ledger.record(*_post(f"req-{i}", features=features, score=confidence))
    assert ledger.flush()
    for i in range(count):
        ledger.add_signal(f"req-{i}", _judge(1.0 if i % 2 else 0.0, EDGE))
        ledger.add_signal(f"req-{i}", _judge(1.0, CLOUD))
    ledger.record(*_post("no-features", features={}))
    ledger.close()
    return path


def test_train_arbiter_from_the_ledger_writes_an_artifact_that_names_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("sklearn")
    pytest.importorskip("skl2onnx")
    ledger = _labelled_ledger(tmp_path / "ledger.db")
    out = tmp_path / "models"
    assert cli_main(["train-arbiter", "--ledger", str(ledger), "--out", str(out), "--features-only"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out / "v0001")
    assert "40 row(s); skipped no_features 1" in captured.err
    meta = json.loads((out / "v0001" / "meta.json").read_text())
    trained_on = meta["training_corpus"]
    assert trained_on["path"] == str(ledger) and trained_on["lines"] == 40
    assert trained_on["ledger"] == {"path": str(ledger), "rows": 40, "since": None, "skipped": {"no_features": 1},
                                    "repeats_of_corpus_items": 0}
    assert trained_on["train_items"] + trained_on["test_items"] == 40


def test_train_arbiter_concatenates_the_corpus_and_the_ledger(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    from tests.learned_arbiter_corpus import write_synthetic_corpus

    corpus = write_synthetic_corpus(tmp_path / "corpus.jsonl", train=20, test=10)
    ledger = _labelled_ledger(tmp_path / "ledger.db", count=12)
    out = tmp_path / "models"
    assert cli_main(["train-arbiter", "--corpus", str(corpus), "--ledger", str(ledger), "--since", "1h",
                     "--out", str(out), "--features-only"]) == 0
    trained_on = json.loads((out / "v0001" / "meta.json").read_text())["training_corpus"]
    assert trained_on["lines"] == 42 and trained_on["corpus"]["lines"] == 30
    assert len(trained_on["corpus"]["sha256"]) == 64 and trained_on["ledger"]["rows"] == 12
    assert trained_on["ledger"]["since"].startswith("20")


def test_a_ledger_request_repeating_a_corpus_item_is_left_to_the_corpus(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The labelling daemon's ledger holds the corpus's own requests: with their own split (a hash of
    the request id) a corpus test item would be trained on, so the corpus's row and split stand."""
    pytest.importorskip("sklearn")
    from tests.learned_arbiter_corpus import write_synthetic_corpus

    corpus = write_synthetic_corpus(tmp_path / "corpus.jsonl", train=20, test=10)
    test_texts = [row["text"] for row in map(json.loads, corpus.read_text().splitlines()) if row["split"] == "test"]
    ledger_path = _labelled_ledger(tmp_path / "ledger.db", count=12)
    ledger = open_ledger(ledger_path)
    ledger.record(*_post("repeat", question=test_texts[0], features={name: 0.5 for name in FEATURE_NAMES}))
    assert ledger.flush()
    ledger.add_signal("repeat", _judge(0.0, EDGE))
    ledger.add_signal("repeat", _judge(1.0, CLOUD))
    ledger.close()
    out = tmp_path / "models"
    assert cli_main(["train-arbiter", "--corpus", str(corpus), "--ledger", str(ledger_path), "--out", str(out),
                     "--features-only"]) == 0
    assert "12 row(s); skipped no_features 1; 1 left out as repeats of corpus items" in capsys.readouterr().err
    trained_on = json.loads((out / "v0001" / "meta.json").read_text())["training_corpus"]
    assert trained_on["lines"] == 42 and trained_on["ledger"]["repeats_of_corpus_items"] == 1


@pytest.mark.parametrize("verb", ["train-arbiter", "train-router"])
def test_training_on_an_unlabelled_ledger_says_why_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], verb: str) -> None:
    pytest.importorskip("sklearn")
    path = tmp_path / "ledger.db"
    _write_with_signals(path, _post("unlabelled"), [])
    out = tmp_path / "models"
    assert cli_main([verb, "--ledger", str(path), "--out", str(out), "--features-only"]) == 1
    err = capsys.readouterr().err
    assert str(path) in err and "no_edge_label 1" in err and "--corpus" in err
    assert not out.exists()


@pytest.mark.parametrize("verb", ["train-arbiter", "train-router"])
def test_training_on_an_empty_ledger_says_why_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], verb: str) -> None:
    pytest.importorskip("sklearn")
    path = tmp_path / "ledger.db"
    open_ledger(path).close()  # a ledger the daemon created and nothing was asked of
    out = tmp_path / "models"
    assert cli_main([verb, "--ledger", str(path), "--out", str(out), "--features-only"]) == 1
    err = capsys.readouterr().err
    assert str(path) in err and "no requests" in err
    assert not out.exists()


def test_train_arbiter_with_an_encoder_refuses_ledger_rows_without_text(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("sklearn")
    path = tmp_path / "ledger.db"
    for i in range(4):
        _write_with_signals(path, _post(f"hashed-{i}"), [_judge(0.2, EDGE), _judge(0.9, CLOUD)], policy="none")
    out = tmp_path / "models"
    assert cli_main(["train-arbiter", "--ledger", str(path), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "--features-only" in err and "log_content" in err
    assert not out.exists()


def test_train_arbiter_needs_a_corpus_or_a_ledger(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["train-arbiter", "--out", str(tmp_path / "models")]) == 2
    err = capsys.readouterr().err
    assert "--corpus" in err and "--ledger" in err
    assert cli_main(["train-arbiter", "--corpus", "c.jsonl", "--since", "2h", "--out", str(tmp_path)]) == 2
    assert "--ledger" in capsys.readouterr().err


def test_train_router_from_the_ledger_reads_the_requests_text(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    ledger = _labelled_ledger(tmp_path / "ledger.db")
    out = tmp_path / "routers"
    assert cli_main(["train-router", "--ledger", str(ledger), "--out", str(out), "--features-only"]) == 0
    meta = json.loads((out / "v0001" / "meta.json").read_text())
    # The request without decision features is a row too: the router reads the text alone.
    assert meta["kind"] == "router" and meta["training_corpus"]["ledger"]["rows"] == 41
    hashed = tmp_path / "hashed.db"
    for i in range(4):
        _write_with_signals(hashed, _post(f"hashed-{i}"), [_judge(0.2, EDGE), _judge(0.9, CLOUD)], policy="none")
    # The router reads the request alone: a ledger kept as hashes has nothing to give it, even features-only.
    assert cli_main(["train-router", "--ledger", str(hashed), "--out", str(tmp_path / "none"), "--features-only"]) == 1
    assert "no request text" in capsys.readouterr().err and not (tmp_path / "none").exists()


def test_a_decision_with_only_some_features_trains_the_router_not_the_arbiter(tmp_path: Path) -> None:
    # The rule scorer records no verification: reading its absence as verify_p_yes = 0 would be a claim.
    path = tmp_path / "ledger.db"
    partial = {name: 0.5 for name in FEATURE_NAMES if not name.startswith(("verify", "has_verification"))}
    _write_with_signals(path, _post("partial", features=partial), [_judge(0.2, EDGE), _judge(0.9, CLOUD)])
    assert deferral_rows(path, require_rows=False) == ([], collections.Counter(partial_features=1))
    rows, skipped = deferral_rows(path, need_features=())
    assert [row.item_id for row in rows] == ["partial"] and not skipped
