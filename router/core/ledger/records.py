"""The ledger's read API for whatever learns from it: each logged request with its answers and evidence.

    conn = open_read_only(path)                         # SQLite URI mode=ro: never written, never migrated
    for request in read_requests(conn, since=since, mode="POST_ARBITRATION"):
        request.answers.get("EDGE"), request.evidence.get(("judge", "edge")), ...

or, through the facade, `ledger.read(lambda conn: list(read_requests(conn)))`.

Requests come in the order they were made (created_at, then id), those created at or after `since`
(ISO-8601 UTC text as the ledger stores it) and, when `mode` is given, in that mode.

An answer is the text of a backend run that finished (a cancelled or failed run left partial text) and
whose purpose answers the request (`answer`, `draft`; never a sample or a verification): the first such
run of each backend. Signals are kept in the order they were written (signal id), less the judge calls that
gave no grade: such a call is spend, not evidence, and must not hide a grade written before it.
`evidence` is the latest of those signals for each (kind, target).

Old ledgers read as they are: one written before schema v4 has no run purposes (every run reads as an
answer), one before v5 no decision (no features). The ledger records; what is learnt from these requests
lives in router/core/learning, which this package never imports.
"""
from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Optional

from router.domain.errors import ErrorKind, RouterError

PARTIAL = ("cancelled", "error")         # finish reasons of runs cut short
ANSWERING = ("answer", "draft")          # run purposes whose text answers the request
UNANSWERED = "UNSPECIFIED"               # served_by of a request that ended without an answer
_LEDGER_TABLES = frozenset({"requests", "backend_runs", "signals"})


class LedgerReadError(RouterError):
    """The file cannot be read as a ledger: it is not there, not a hybrid-router ledger, or unreadable."""

    kind = ErrorKind.PRECONDITION_FAILED


@dataclass(frozen=True)
class LoggedSignal:
    """One stored accuracy signal (router/core/ledger/signals.py), flags as booleans."""

    kind: str
    target: str
    score: Optional[float]
    correct: Optional[bool]
    f1: Optional[float]
    thumbs_up: Optional[bool]
    corrected_answer: Optional[str]


Evidence = Mapping[tuple[str, str], LoggedSignal]


@dataclass(frozen=True)
class LoggedRequest:
    """One logged request as the learners read it. See the module docstring."""

    id: str
    created_at: str
    mode: str                              # a Mode name
    served_by: str                         # a BackendKind name; UNANSWERED when none answered
    decision_score: Optional[float]
    decision_features: Mapping[str, float]  # the scorer's finite features (schema v5), else empty
    content_policy: str                    # full | redacted | none (only hashes of texts are stored)
    messages_json: str                     # the request's messages as stored
    final_text: Optional[str]              # the served text as stored (partial text when UNANSWERED)
    answers: Mapping[str, str]             # backend name -> its first finished answering run's text
    signals: tuple[LoggedSignal, ...]      # in the order written, ungraded judge calls left out
    evidence: Evidence                     # the latest of `signals` for each (kind, target)


def open_read_only(path: Path) -> sqlite3.Connection:
    """The ledger at `path`, opened read-only (SQLite URI mode=ro, query_only): it can be read beside
    a running daemon and is never migrated. Raises LedgerReadError."""
    path = Path(path)
    if not path.is_file():
        raise LedgerReadError(f"no ledger database at {path}; give the daemon's ledger.path")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise LedgerReadError(f"cannot open the ledger {path} read-only: {exc}") from None
    try:
        conn.execute("PRAGMA query_only = ON")
        if not _LEDGER_TABLES <= {
                name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}:
            raise LedgerReadError(f"{path} is not a hybrid-router ledger (no requests, backend_runs and signals "
                                  "tables)")
    except sqlite3.Error as exc:
        conn.close()
        raise LedgerReadError(f"cannot read the ledger {path}: {exc}") from None
    except BaseException:
        conn.close()
        raise
    return conn


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def _features(decision_json: Optional[str]) -> dict[str, float]:
    try:
        decision = json.loads(decision_json or "{}")
        recorded = decision.get("features") or {}
        return {str(name): float(value) for name, value in recorded.items()
                if isinstance(value, (int, float)) and math.isfinite(float(value))}
    except (ValueError, AttributeError, TypeError):
        return {}


def _flag(value: Optional[int]) -> Optional[bool]:
    return None if value is None else bool(value)


_WINDOW = "r.created_at >= ? AND (? IS NULL OR r.mode = ?)"


def read_requests(conn: sqlite3.Connection, *, since: str = "",
                  mode: Optional[str] = None) -> Iterator[LoggedRequest]:
    """The requests created at or after `since`, in `mode` when given, oldest first. Reads the runs and
    signals of the window when iteration starts; raises sqlite3.Error as SQLite does."""
    params = (since, mode, mode)
    decision = "r.decision_json" if "decision_json" in _columns(conn, "requests") else "'{}'"
    purpose = "b.purpose" if "purpose" in _columns(conn, "backend_runs") else "'answer'"
    answers: dict[str, dict[str, str]] = {}
    for request_id, backend, text, finish_reason, run_purpose in conn.execute(
            f"SELECT b.request_id, b.backend, b.text, b.finish_reason, {purpose} FROM backend_runs AS b "
            f"JOIN requests AS r ON r.id = b.request_id WHERE {_WINDOW} ORDER BY b.request_id, b.ordinal", params):
        if text and finish_reason not in PARTIAL and run_purpose in ANSWERING:
            answers.setdefault(request_id, {}).setdefault(backend, text)
    signals: dict[str, list[LoggedSignal]] = {}
    for request_id, kind, target, score, correct, f1, thumbs_up, corrected in conn.execute(
            "SELECT s.request_id, s.kind, s.target, s.score, s.correct, s.f1, s.thumbs_up, s.corrected_answer "
            f"FROM signals AS s JOIN requests AS r ON r.id = s.request_id WHERE {_WINDOW} ORDER BY s.id", params):
        if kind == "judge" and score is None and correct is None:
            continue  # a judge call that gave no grade is spend, not evidence: it must not hide a grade
        signals.setdefault(request_id, []).append(LoggedSignal(
            kind=kind, target=target, score=score, correct=_flag(correct), f1=f1, thumbs_up=_flag(thumbs_up),
            corrected_answer=corrected))
    for (request_id, created_at, request_mode, served_by, score, messages_json, final_text, policy,
         decision_json) in conn.execute(
            "SELECT r.id, r.created_at, r.mode, r.served_by, r.decision_score, r.messages_json, r.final_text, "
            f"r.content_policy, {decision} FROM requests AS r WHERE {_WINDOW} ORDER BY r.created_at, r.id", params):
        written = tuple(signals.get(request_id, ()))
        # In the order written, so a later signal of the same (kind, target) replaces an earlier one.
        evidence = {(signal.kind, signal.target): signal for signal in written}
        yield LoggedRequest(id=request_id, created_at=created_at, mode=request_mode, served_by=served_by,
                            decision_score=score, decision_features=_features(decision_json),
                            content_policy=policy, messages_json=messages_json, final_text=final_text,
                            answers=answers.get(request_id, {}), signals=written, evidence=evidence)
