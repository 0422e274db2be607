"""Training-data export (router/core/learning/sft.py): each format loads back with the expected schema, rows are chosen by the
evidence, duplicates go, and the seeded split is by prompt and reproducible."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from router.domain.errors import InvalidRequestError
from router.core.learning.sft import export_training_set, validation_path_for
from router.core.ledger import AccuracySignal, Ledger, SignalKind, SignalTarget
from router.domain.types import BackendKind, Mode
from tests.unit.test_ledger_support import a_moment_between, SYSTEM, make_exchange, make_run, make_unanswered, open_ledger

CLOUD, EDGE = BackendKind.CLOUD, BackendKind.EDGE
POST = Mode.POST_ARBITRATION


def _load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture()
def ledger(tmp_path: Path) -> Ledger:
    ledger = open_ledger(tmp_path / "ledger.db")
    record = ledger.record
    # Cloud served and right, edge wrong: SFT row; DPO prefers the cloud.
    record(*make_exchange("cloud-right", question="q1", edge="#### 8", cloud="#### 7", served_by=CLOUD,
                          mode=POST, reference="7"))
    # Same exchange again under another id: an exact duplicate in every format.
    record(*make_exchange("cloud-right-again", question="q1", edge="#### 8", cloud="#### 7", served_by=CLOUD,
                          mode=POST, reference="7"))
    # Cloud served but wrong, edge right: no SFT row; DPO prefers the edge, not the cloud.
    record(*make_exchange("cloud-wrong", question="q2", edge="#### 5", cloud="#### 6", served_by=CLOUD,
                          mode=POST, reference="5"))
    # Both right: SFT row (cloud served), no DPO pair.
    record(*make_exchange("both-right", question="q3", edge="It is 9", cloud="#### 9", served_by=CLOUD,
                          mode=POST, reference="9"))
    # Edge served and right, cloud never ran: nothing.
    record(*make_exchange("edge-only", question="q4", edge="#### 4", reference="4"))
    # Edge served, user corrected it: SFT row with the correction; DPO correction over the answer.
    record(*make_exchange("corrected", question="q5", edge="Lyon"))
    # Cloud served, no reference: judged good / judged poor.
    record(*make_exchange("judged-good", question="q6", cloud="Paris", served_by=CLOUD, mode=Mode.CLOUD_ONLY))
    record(*make_exchange("judged-poor", question="q7", cloud="Berlin", served_by=CLOUD, mode=Mode.CLOUD_ONLY))
    # Cloud served, no reference, user scored it well.
    record(*make_exchange("liked", question="q8", cloud="Madrid", served_by=CLOUD, mode=Mode.CLOUD_ONLY))
    # Both ran, no reference; the judge graded each backend's answer: edge good, cloud poor.
    record(*make_exchange("judge-pair", question="q9", edge="Rome", cloud="Milan", served_by=CLOUD, mode=POST))
    ledger.add_signal("judged-good", AccuracySignal(kind=SignalKind.JUDGE, score=0.9))
    ledger.add_signal("judged-poor", AccuracySignal(kind=SignalKind.JUDGE, score=0.5))
    ledger.add_signal("judge-pair", AccuracySignal(kind=SignalKind.JUDGE, score=0.95, target=SignalTarget.EDGE))
    ledger.add_signal("judge-pair", AccuracySignal(kind=SignalKind.JUDGE, score=0.1, target=SignalTarget.CLOUD))
    assert ledger.flush()
    ledger.feedback("corrected", score=None, thumbs_up=False, corrected_answer="Paris")
    ledger.feedback("liked", score=0.9, thumbs_up=None, corrected_answer=None)
    yield ledger
    ledger.close()


def _user_turn(messages: list[dict[str, str]]) -> str:
    return [m["content"] for m in messages if m["role"] == "user"][-1]


def test_openai_format(ledger: Ledger, tmp_path: Path) -> None:
    report = export_training_set(ledger, "openai", tmp_path / "sft.jsonl")
    rows = _load(report.path)
    assert report.rows == len(rows) and report.considered == 10 and report.duplicates_removed == 1
    for row in rows:
        assert set(row) == {"messages"}
        assert all(set(m) == {"role", "content"} and isinstance(m["content"], str) for m in row["messages"])
        assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
        assert row["messages"][0] == {"role": "system", "content": SYSTEM.content}
    answers = {_user_turn(row["messages"]): row["messages"][-1]["content"] for row in rows}
    assert answers == {"q1": "#### 7", "q3": "#### 9", "q5": "Paris", "q6": "Paris", "q8": "Madrid"}
    assert report.sources == {"cloud_good": 4, "correction": 1}


def test_sharegpt_format(ledger: Ledger, tmp_path: Path) -> None:
    rows = _load(export_training_set(ledger, "sharegpt", tmp_path / "sft.jsonl").path)
    assert len(rows) == 5
    for row in rows:
        assert set(row) == {"conversations"}
        assert [turn["from"] for turn in row["conversations"]] == ["system", "human", "gpt"]
        assert all(set(turn) == {"from", "value"} for turn in row["conversations"])
    assert {row["conversations"][1]["value"]: row["conversations"][2]["value"] for row in rows}["q5"] == "Paris"


def test_dpo_format_prefers_the_answer_that_was_actually_better(ledger: Ledger, tmp_path: Path) -> None:
    report = export_training_set(ledger, "dpo", tmp_path / "dpo.jsonl")
    rows = _load(report.path)
    for row in rows:
        assert set(row) == {"prompt", "chosen", "rejected"}
        assert isinstance(row["chosen"], str) and isinstance(row["rejected"], str)
        assert row["chosen"] != row["rejected"]
        assert row["prompt"][-1]["role"] == "user"
    pairs = {_user_turn(row["prompt"]): (row["chosen"], row["rejected"]) for row in rows}
    assert pairs == {
        "q1": ("#### 7", "#### 8"),    # cloud right, edge wrong
        "q2": ("#### 5", "#### 6"),    # edge right, cloud wrong: the cloud is not chosen
        "q5": ("Paris", "Lyon"),       # correction over the served answer
        "q9": ("Rome", "Milan"),       # per-backend judge scores
    }
    assert report.duplicates_removed == 1
    assert report.sources == {"cloud_better": 1, "edge_better": 2, "correction": 1}


def test_only_answers_make_pairs_never_samples_nor_an_unanswered_request(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path / "ledger.db")
    request, result = make_exchange("sampled", question="q1", edge="#### 8", cloud="#### 7", served_by=CLOUD,
                                    mode=POST, reference="7")
    # A right self-consistency sample ran before the (wrong) edge answer: it is no answer of the edge's.
    sample = make_run(EDGE, "#### 7", purpose="sample")
    ledger.record(request, dataclasses.replace(result, runs=(sample, *result.runs)))
    # A request cancelled mid-answer, then corrected by its user: its partial text is no rejected answer.
    ledger.record(*make_unanswered("cut", [make_run(CLOUD, "#### 6 bec", finish_reason="cancelled")]))
    assert ledger.flush()
    ledger.feedback("cut", score=None, thumbs_up=None, corrected_answer="#### 7")
    rows = _load(export_training_set(ledger, "dpo", tmp_path / "dpo.jsonl").path)
    assert [(row["chosen"], row["rejected"]) for row in rows] == [("#### 7", "#### 8")]
    ledger.close()


def test_min_score_moves_the_judge_threshold(ledger: Ledger, tmp_path: Path) -> None:
    rows = _load(export_training_set(ledger, "openai", tmp_path / "sft.jsonl", min_score=0.4).path)
    assert "q7" in {_user_turn(row["messages"]) for row in rows}


def test_filters_by_mode_and_time(ledger: Ledger, tmp_path: Path) -> None:
    rows = _load(export_training_set(ledger, "openai", tmp_path / "cloud.jsonl", mode="cloud").path)
    assert {_user_turn(row["messages"]) for row in rows} == {"q6", "q8"}
    cutoff = a_moment_between()
    ledger.record(*make_exchange("new", question="q10", cloud="Oslo", served_by=CLOUD, reference="Oslo"))
    assert ledger.flush()
    recent = export_training_set(ledger, "openai", tmp_path / "recent.jsonl", since=cutoff)
    assert recent.considered == 1
    assert [_user_turn(row["messages"]) for row in _load(recent.path)] == ["q10"]


def test_seeded_split_is_by_prompt_and_reproducible(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path / "ledger.db")
    for index in range(40):
        # Two answers per prompt (a correction makes the second differ), so prompts repeat.
        for copy in range(2):
            ledger.record(*make_exchange(f"p{index}-{copy}", question=f"question {index}",
                                         cloud=f"answer {index} v{copy}", served_by=CLOUD,
                                         reference=f"answer {index} v{copy}"))
    assert ledger.flush()
    whole = _load(export_training_set(ledger, "openai", tmp_path / "all.jsonl").path)
    assert len(whole) == 80

    first = export_training_set(ledger, "openai", tmp_path / "sft.jsonl", split_seed=7, validation_fraction=0.25)
    assert first.validation_path == tmp_path / "sft.val.jsonl" == validation_path_for(tmp_path / "sft.jsonl")
    train, validation = _load(first.path), _load(first.validation_path)
    assert (first.rows, first.validation_rows) == (len(train), len(validation)) == (60, 20)
    assert sorted(map(json.dumps, train + validation)) == sorted(map(json.dumps, whole))
    train_prompts = {_user_turn(row["messages"]) for row in train}
    assert not train_prompts & {_user_turn(row["messages"]) for row in validation}

    again = export_training_set(ledger, "openai", tmp_path / "again.jsonl", split_seed=7, validation_fraction=0.25)
    assert _load(again.validation_path) == validation
    other = export_training_set(ledger, "openai", tmp_path / "other.jsonl", split_seed=8, validation_fraction=0.25)
    assert _load(other.validation_path) != validation
    ledger.close()


def test_bad_options_are_refused(ledger: Ledger, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="openai, sharegpt, dpo"):
        export_training_set(ledger, "alpaca", tmp_path / "x.jsonl")
    with pytest.raises(InvalidRequestError):
        export_training_set(ledger, "openai", tmp_path / "x.jsonl", min_score=1.5)
    with pytest.raises(InvalidRequestError):
        export_training_set(ledger, "openai", tmp_path / "x.jsonl", split_seed=1, validation_fraction=1.0)
    with pytest.raises(ValueError, match="unknown mode"):
        export_training_set(ledger, "openai", tmp_path / "x.jsonl", mode="teleport")
    assert not (tmp_path / "x.jsonl").exists()


def test_validation_path_naming() -> None:
    assert validation_path_for(Path("out/data.jsonl")) == Path("out/data.val.jsonl")
    assert validation_path_for(Path("data")) == Path("data.val")


def test_a_later_ungraded_judge_call_does_not_hide_the_grade(ledger: Ledger, tmp_path: Path) -> None:
    ledger.add_signal("judged-good", AccuracySignal(kind=SignalKind.JUDGE, score=None,
                                                    detail={"graded": False, "cost_usd": 1e-6}))
    assert ledger.flush()
    rows = _load(export_training_set(ledger, "openai", tmp_path / "sft.jsonl").path)
    assert "q6" in {_user_turn(row["messages"]) for row in rows}  # still judged good at 0.9
