"""The LoRA's training set from the ledger (router/core/learning/lora.py), the one export that `finetune --ledger`
and `improve` share: OpenAI chat rows the fine-tuner reads, the seeded held-out split, since, and refusal of
a ledger kept as hashes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.lora_training import read_chat_examples
from router.core.learning.lora import lora_training_set
from router.core.learning.sft import LedgerExportRefusedError, export_training_set
from router.doors.adapter_cli import _export_ledger
from router.domain.config import LedgerSettings, Settings
from router.domain.types import BackendKind, Mode
from tests.unit.test_ledger_support import a_moment_between, make_exchange, open_ledger

CLOUD = BackendKind.CLOUD


def _graded_ledger(path: Path, count: int, *, log_content: str = "full", first: int = 0) -> Path:
    ledger = open_ledger(path, log_content=log_content)
    for index in range(first, first + count):
        answer = f"The code word is {index}"
        ledger.record(*make_exchange(f"door-{index}", question=f"What is the code word for door {index}?",
                                     cloud=answer, served_by=CLOUD, mode=Mode.CLOUD_ONLY, reference=answer))
    # Graded wrong: no row at min_score or any other.
    ledger.record(*make_exchange(f"wrong-{first}", question="What is 3 + 4?", cloud="#### 8", served_by=CLOUD,
                                 mode=Mode.CLOUD_ONLY, reference="7"))
    assert ledger.flush()
    ledger.close()
    return path


def test_the_set_is_the_ledgers_openai_export_and_the_finetuner_reads_it(tmp_path: Path) -> None:
    path = _graded_ledger(tmp_path / "ledger.db", 10)
    report = lora_training_set(path, tmp_path / "data" / "sft.jsonl", log_content="full", min_score=0.8,
                               split_seed=0, validation_fraction=0.2)
    assert (report.fmt, report.considered, report.rows, report.validation_rows) == ("openai", 11, 8, 2)
    assert report.validation_path == tmp_path / "data" / "sft.val.jsonl"
    train, held_out = read_chat_examples(report.path), read_chat_examples(report.validation_path)
    assert len(train) == 8 and len(held_out) == 2
    assert {example.answer for example in train + held_out} == {f"The code word is {i}" for i in range(10)}
    # Byte for byte what `hybrid-router export --format openai` writes from the same ledger.
    ledger = open_ledger(path)
    try:
        same = export_training_set(ledger, "openai", tmp_path / "export.jsonl", min_score=0.8, split_seed=0,
                                   validation_fraction=0.2)
    finally:
        ledger.close()
    assert same.path.read_bytes() == report.path.read_bytes()
    assert same.validation_path.read_bytes() == report.validation_path.read_bytes()


def test_since_keeps_the_requests_made_after_it(tmp_path: Path) -> None:
    path = _graded_ledger(tmp_path / "ledger.db", 3)
    cutoff = a_moment_between()
    _graded_ledger(path, 2, first=100)
    report = lora_training_set(path, tmp_path / "sft.jsonl", log_content="full", min_score=0.8, since=cutoff)
    assert report.considered == 3 and report.validation_path is None
    assert [example.answer for example in read_chat_examples(report.path)] == ["The code word is 100",
                                                                                "The code word is 101"]


def test_a_ledger_kept_as_hashes_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    path = _graded_ledger(tmp_path / "ledger.db", 3, log_content="none")
    with pytest.raises(LedgerExportRefusedError, match="log_content = none"):
        lora_training_set(path, tmp_path / "sft.jsonl", log_content="none", min_score=0.8)
    assert not (tmp_path / "sft.jsonl").exists()


def test_finetune_ledger_exports_through_it_and_a_resumed_run_keeps_its_set(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _graded_ledger(tmp_path / "ledger.db", 4)
    settings = Settings(ledger=LedgerSettings(path=path, log_content="full"))
    out = tmp_path / "run"
    target = _export_ledger(settings, out, min_score=0.8)
    assert target == out / "data" / "ledger-export.jsonl"
    assert len(read_chat_examples(target)) == 4
    exported = json.loads(capsys.readouterr().err.split(": ", 1)[1])
    assert (exported["fmt"], exported["rows"], exported["considered"]) == ("openai", 4, 5)
    # A run under way (a checkpoint exists) trains on the set it began with, though the ledger has grown.
    (out / "checkpoint").mkdir()
    _graded_ledger(path, 3, first=100)
    assert _export_ledger(settings, out, min_score=0.8) == target
    assert len(read_chat_examples(target)) == 4
    assert "resuming on the training set exported when the run began" in capsys.readouterr().err
