"""bench.runner's results file: torn lines after a kill, text with unusual line breaks, rescoring."""
import json

import pytest

from bench.datasets import BenchItem
from bench.run_meta import RunMetaError
from bench.runner import (cut_torn_tail, latest_records, load_records, refuse_other_questions_under_the_same_ids,
                          request_id_for, rescore, write_records)
from router.domain.types import Mode
from router.domain.validation import validate_request_id


def record(item_id, text="", correct=False, f1=None, error=None, dataset="gsm8k"):
    return {"dataset": dataset, "item_id": item_id, "mode": "EDGE_ONLY", "text": text, "correct": correct,
            "f1": f1, "error": error}


def test_a_torn_last_line_is_cut_before_the_next_record_is_appended(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(record("a")) + "\n" + '{"dataset": "gsm8k", "item_id": "b", "mo')
    cut_torn_tail(path)
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(record("b")) + "\n")
    assert [r["item_id"] for r in load_records(path)] == ["a", "b"]


def test_a_complete_file_is_left_alone(tmp_path):
    path = tmp_path / "results.jsonl"
    content = json.dumps(record("a")) + "\n"
    path.write_text(content)
    cut_torn_tail(path)
    assert path.read_text() == content


def test_model_text_with_unicode_line_separators_survives_a_reload(tmp_path):
    path = tmp_path / "results.jsonl"
    odd = "line\u2028separator\u2029paragraph\x85next"
    write_records(path, [record("a", text=odd), record("b")])
    assert [r["text"] for r in load_records(path)] == [odd, ""]


def test_rescore_applies_the_current_scorer_and_counts_changes():
    items = [BenchItem(dataset="gsm8k", item_id="a", question="q", golds=("-2",), context=None, scoring="numeric"),
             BenchItem(dataset="squad", item_id="s", question="q", golds=("Denver Broncos",), context=None,
                       scoring="text")]
    stored = [record("a", text="\\boxed{-2}. Dora made 2 more.", correct=False),  # scored by an older scorer
              record("s", text="the Denver Broncos", correct=True, f1=1.0, dataset="squad"),
              record("z", text="7", correct=True),  # not among the items: kept as stored
              record("a", error="UNAVAILABLE", correct=False)]
    rescored, changed = rescore(stored, items)
    assert changed == 1
    assert [r["correct"] for r in rescored] == [True, True, True, False]
    assert latest_records(rescored)[0]["error"] == "UNAVAILABLE"  # a later error still supersedes


def test_another_question_under_a_recorded_id_is_refused(tmp_path):
    write_records(tmp_path / "results.jsonl", [{**record("gsm8k-7"), "question": "How many apples?"}])
    other_file_item = BenchItem(dataset="gsm8k", item_id="gsm8k-7", question="How many pears?", golds=("3",),
                                context=None, scoring="numeric")
    with pytest.raises(RunMetaError, match="another question under gsm8k/gsm8k-7.*new --out"):
        refuse_other_questions_under_the_same_ids([other_file_item], tmp_path)
    same_file_item = BenchItem(dataset="gsm8k", item_id="gsm8k-7", question="How many apples?", golds=("3",),
                               context=None, scoring="numeric")
    refuse_other_questions_under_the_same_ids([same_file_item], tmp_path)


def bench_item(dataset: str, item_id: str) -> BenchItem:
    return BenchItem(dataset=dataset, item_id=item_id, question="q", golds=("1",), context=None, scoring="numeric")


def test_request_ids_follow_the_daemons_rules_and_never_repeat():
    # A JSONL data set names its items as it likes, and its name is the file's stem.
    items = [bench_item("gsm8k", "gsm8k-1"), bench_item("my data", "ünï code/1"), bench_item("my data", "ünï_code_1"),
             bench_item("long", "x" * 500), bench_item("long", "x" * 499 + "y")]
    ids = [request_id_for(item, mode, "0123456789ab") for item in items
           for mode in (Mode.EDGE_ONLY, Mode.EDGE_AGENT_CLOUD_INFO)]
    for request_id in ids:
        validate_request_id(request_id)  # raises InvalidRequestError otherwise
    assert len(set(ids)) == len(ids)
    # The daemon's ledger outlives a bench run: another run never reuses an id.
    assert request_id_for(items[0], Mode.EDGE_ONLY, "0123456789ab") != request_id_for(items[0], Mode.EDGE_ONLY, "ba9876543210")
    assert request_id_for(items[0], Mode.EDGE_ONLY, "0123456789ab").startswith("bench-0123456789ab-EDGE_ONLY-gsm8k-gsm8k-1-")
