"""Training data from the ledger: SFT sets (OpenAI chat, ShareGPT) and DPO preference pairs.

Formats, one JSON object a line:
- openai:   {"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...,
             {"role": "assistant", "content": <answer>}]}   (OpenAI chat fine-tuning)
- sharegpt: {"conversations": [{"from": "system"|"human"|"gpt", "value": ...}, ...]}
- dpo:      {"prompt": [<the request's messages, as in openai>], "chosen": str, "rejected": str}

Which answer is good: router/core/learning/evidence.py's `verdict` (reference, then feedback on the
served answer, then the judge's score against min_score).

SFT rows: a user's corrected answer (it becomes the answer, whoever served), else the cloud's served
answer when its evidence says good. DPO pairs: a corrected answer (chosen) over the served one
(rejected); else edge and cloud answers where one is judged good and the other bad, so the cloud's
answer is chosen only when it actually was better. Cancelled and failed runs (partial text), runs
that were no answer (samples, verifications), and the partial text of a request that ended without
an answer (served by no one) are never used.

Rows that are exact duplicates (same JSON line) are written once. With `split_seed`, a seeded
split writes FILE (train) and FILE with `.val` before its suffix (`sft.jsonl` -> `sft.val.jsonl`)
for validation; the split is by prompt, so one prompt never lands in both files. Files are written
to a temporary name and renamed, so a reader never sees half a file.

Requests are read through the ledger's read API (router/core/ledger/records.py): `export_dataset` on a
connection, `export_training_set` through a Ledger (its `read` hook), `export_ledger_file` from a path.
"""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import numpy as np

from router.core.learning.evidence import verdict
from router.core.ledger import ContentPolicy, Ledger
from router.core.ledger.records import UNANSWERED, Evidence, LoggedRequest, read_requests
from router.core.ledger.store import format_time
from router.domain.errors import ErrorKind, InvalidRequestError, RouterError
from router.domain.types import Mode

FORMATS = ("openai", "sharegpt", "dpo")
_SHAREGPT_ROLES = MappingProxyType({"system": "system", "user": "human", "assistant": "gpt"})


class LedgerExportRefusedError(RouterError):
    """The ledger holds no text to export (log_content = none)."""

    kind = ErrorKind.PRECONDITION_FAILED


@dataclass(frozen=True)
class ExportReport:
    fmt: str
    path: Path
    rows: int                              # rows in `path`
    validation_path: Optional[Path] = None
    validation_rows: int = 0
    considered: int = 0                    # requests that matched since/mode
    duplicates_removed: int = 0
    skipped_hashed: int = 0                # requests stored under log_content = none
    sources: Mapping[str, int] = field(default_factory=dict)   # why rows were made, e.g. correction: 3


def validation_path_for(out: Path) -> Path:
    """`sft.jsonl` -> `sft.val.jsonl`; `sft` -> `sft.val`."""
    return out.with_name(f"{out.stem}.val{out.suffix}") if out.suffix else out.with_name(out.name + ".val")


@dataclass(frozen=True)
class _Request:
    id: str
    served_by: str
    messages: list[dict[str, str]]
    final_text: str
    answers: Mapping[str, str]          # backend name -> its finished run's text
    evidence: Evidence
    correction: Optional[str]


def _verdict(request: _Request, backend: str, min_score: float) -> Optional[bool]:
    return verdict(request.evidence, backend, request.served_by, min_score)


def _sft_answer(request: _Request, min_score: float) -> Optional[tuple[str, str]]:
    if request.correction:
        return request.correction, "correction"
    if request.served_by == "CLOUD" and request.final_text and _verdict(request, "CLOUD", min_score):
        return request.final_text, "cloud_good"
    return None


def _dpo_pair(request: _Request, min_score: float) -> Optional[tuple[str, str, str]]:
    if request.correction and request.final_text and request.correction.strip() != request.final_text.strip():
        return request.correction, request.final_text, "correction"
    edge, cloud = request.answers.get("EDGE"), request.answers.get("CLOUD")
    if not edge or not cloud or edge.strip() == cloud.strip():
        return None
    edge_good, cloud_good = _verdict(request, "EDGE", min_score), _verdict(request, "CLOUD", min_score)
    if cloud_good is True and edge_good is False:
        return cloud, edge, "cloud_better"
    if edge_good is True and cloud_good is False:
        return edge, cloud, "edge_better"
    return None


def _chat(messages: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _row(fmt: str, request: _Request, min_score: float) -> Optional[tuple[dict[str, Any], str]]:
    if fmt == "dpo":
        pair = _dpo_pair(request, min_score)
        if pair is None:
            return None
        chosen, rejected, source = pair
        return {"prompt": _chat(request.messages), "chosen": chosen, "rejected": rejected}, source
    found = _sft_answer(request, min_score)
    if found is None:
        return None
    answer, source = found
    conversation = _chat(request.messages) + [{"role": "assistant", "content": answer}]
    if fmt == "openai":
        return {"messages": conversation}, source
    return {"conversations": [{"from": _SHAREGPT_ROLES.get(m["role"], m["role"]), "value": m["content"]}
                              for m in conversation]}, source


def _correction(request: LoggedRequest) -> Optional[str]:
    """The latest corrected answer a user gave (a later feedback without one does not take it back)."""
    return next((signal.corrected_answer for signal in reversed(request.signals)
                 if signal.kind == "feedback" and signal.corrected_answer), None)


def _requests(conn: sqlite3.Connection, since: str, mode: Optional[str],
              counts: dict[str, int]) -> Iterator[_Request]:
    for request in read_requests(conn, since=since, mode=mode):
        counts["considered"] += 1
        if request.content_policy == "none":
            counts["skipped_hashed"] += 1
            continue
        served_text = "" if request.served_by == UNANSWERED else request.final_text or ""
        yield _Request(id=request.id, served_by=request.served_by, messages=json.loads(request.messages_json),
                       final_text=served_text, answers=request.answers, evidence=request.evidence,
                       correction=_correction(request))


def _prompt_key(row: Mapping[str, Any]) -> str:
    if "prompt" in row:
        prompt = row["prompt"]
    elif "messages" in row:
        prompt = row["messages"][:-1]
    else:
        prompt = row["conversations"][:-1]
    return json.dumps(prompt, sort_keys=True, ensure_ascii=False)


def _split(lines: list[tuple[str, str]], seed: int, fraction: float) -> tuple[list[str], list[str]]:
    """Seeded split by prompt: returns (train, validation) lines, each in export order."""
    prompts = sorted({key for key, _ in lines})
    order = np.random.default_rng(seed).permutation(len(prompts))
    wanted = int(round(len(prompts) * fraction))
    if fraction > 0 and wanted == 0 and len(prompts) > 1:
        wanted = 1
    validation_prompts = {prompts[i] for i in order[:wanted]}
    train = [line for key, line in lines if key not in validation_prompts]
    validation = [line for key, line in lines if key in validation_prompts]
    return train, validation


def _write_atomically(path: Path, lines: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as temp:
            for line in lines:
                temp.write(line)
                temp.write("\n")
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise


def check_options(fmt: str, min_score: float, validation_fraction: float) -> None:
    if fmt not in FORMATS:
        raise InvalidRequestError(f"unknown export format {fmt!r}; known formats: {', '.join(FORMATS)}")
    if not 0.0 <= min_score <= 1.0:
        raise InvalidRequestError(f"min_score must be between 0 and 1, got {min_score!r}")
    if not 0.0 <= validation_fraction < 1.0:
        raise InvalidRequestError(f"validation_fraction must be in [0, 1), got {validation_fraction!r}")


def export_dataset(conn: sqlite3.Connection, fmt: str, out: Path, *, since: str = "",
                   mode: Optional[str] = None, min_score: float = 0.8, split_seed: Optional[int] = None,
                   validation_fraction: float = 0.1) -> ExportReport:
    """Writes the `fmt` dataset built from requests created at or after `since` (ISO-8601 UTC),
    in `mode` (a Mode name) when given. See the module docstring for what goes in."""
    check_options(fmt, min_score, validation_fraction)
    counts = {"considered": 0, "skipped_hashed": 0}
    sources: dict[str, int] = {}
    seen: set[str] = set()
    lines: list[tuple[str, str]] = []
    duplicates = 0
    for request in _requests(conn, since, mode, counts):
        made = _row(fmt, request, min_score)
        if made is None:
            continue
        row, source = made
        # Rows are built by one code path, so key order is stable and equal rows give equal lines.
        line = json.dumps(row, ensure_ascii=False)
        if line in seen:
            duplicates += 1
            continue
        seen.add(line)
        sources[source] = sources.get(source, 0) + 1
        lines.append((_prompt_key(row), line))
    validation_path: Optional[Path] = None
    validation: list[str] = []
    if split_seed is None:
        train = [line for _, line in lines]
    else:
        train, validation = _split(lines, split_seed, validation_fraction)
        validation_path = validation_path_for(out)
        _write_atomically(validation_path, validation)
    _write_atomically(out, train)
    return ExportReport(fmt=fmt, path=out, rows=len(train), validation_path=validation_path,
                        validation_rows=len(validation), considered=counts["considered"],
                        duplicates_removed=duplicates, skipped_hashed=counts["skipped_hashed"],
                        sources=sources)


def export_training_set(ledger: Ledger, fmt: str, out: Path, *, since: Optional[datetime] = None,
                        mode: Union[Mode, str, None] = None, min_score: float = 0.8,
                        split_seed: Optional[int] = None, validation_fraction: float = 0.1) -> ExportReport:
    """Writes the `fmt` training set from an open ledger (see the module docstring for formats and row
    selection), read through `Ledger.read`. Raises InvalidRequestError (bad options), ValueError (an unknown
    mode), LedgerExportRefusedError under log_content = none (only hashes are stored),
    LedgerUnavailableError (the ledger cannot be read)."""
    check_options(fmt, min_score, validation_fraction)
    if ledger.content.policy is ContentPolicy.NONE:
        raise LedgerExportRefusedError(
            "the ledger runs with log_content = none: it stores SHA-256 hashes instead of text, "
            "so there is nothing to train on; set ledger.log_content to full or redacted and "
            "collect new requests to export")
    mode_name = None if mode is None else (mode.name if isinstance(mode, Mode) else Mode.parse(mode).name)
    since_text = "" if since is None else format_time(since)
    return ledger.read(lambda conn: export_dataset(
        conn, fmt, Path(out), since=since_text, mode=mode_name, min_score=min_score,
        split_seed=split_seed, validation_fraction=validation_fraction))


def export_ledger_file(path: Path, fmt: str, out: Path, *, log_content: str, since: Optional[datetime] = None,
                       mode: Union[Mode, str, None] = None, min_score: float = 0.8,
                       split_seed: Optional[int] = None, validation_fraction: float = 0.1) -> ExportReport:
    """`export_training_set` on the ledger file at `path`, kept under `log_content` (ledger.log_content),
    opened for this export and closed after it: no daemon needed, and WAL lets it run beside one. Opening
    brings an older file's schema up to date, as the daemon's start would."""
    ledger = Ledger(path, log_content=log_content)
    ledger.open()
    try:
        return export_training_set(ledger, fmt, out, since=since, mode=mode, min_score=min_score,
                                   split_seed=split_seed, validation_fraction=validation_fraction)
    finally:
        ledger.close()
