"""Training rows for the learned deferral model, from the ledger (`hybrid-router train-arbiter --ledger`).

One row (router/core/arbiters/corpus.py's `CorpusRow`) per answered POST_ARBITRATION request whose
decision recorded the scorer's features (schema v5's `decision_json`) and whose edge answer and cloud
answer can both be given a quality in [0, 1]. Labels, strongest first, for one backend's answer:

1. reference: the latest reference signal on that backend's target (or on `final` when it served):
   its F1 when it has one, else correct (1/0);
2. feedback (only for the backend that served, target `final`): correct (thumbs) 1/0, else its score,
   else a corrected answer alone means 0;
3. judge: the latest judge signal's score on that backend's target (or `final` when it served); a judge
   call that gave no grade is not evidence;
4. agreement (target `pair`) is the weakest and speaks for the pair, not for one answer: when either
   side has no label above and the two answers were compared, the cloud is taken as the teacher: the
   cloud's quality is its own label if it has one, else 1.0; the edge's is the agreement score unless
   it has a label of its own.

Within a kind the latest signal of each (kind, target) wins, as in export.py. Requests that give no row
are counted by reason. Each row's split is a hash of its request id (a quarter goes to test), fixed
for the id, so retraining on a grown ledger keeps every old row on its side. Text is the last user
message as stored: under log_content = none only a hash is stored, so the row has no text and serves
`--features-only` training.

The file is opened read-only (SQLite URI mode=ro) and never migrated: a ledger written before schema v5
has no decision features, and its requests are counted as such. Needs neither scikit-learn nor models.
"""
from __future__ import annotations

import collections
import hashlib
import json
import math
import sqlite3
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from router.core.arbiters.corpus import CorpusRow, TrainingError
from router.core.arbiters.features import FEATURE_NAMES, refreshed_text_features
from router.core.arbiters.scorers import current_rule_score

DATASET = "ledger"
TEST_SHARE = 0.25
MODE = "POST_ARBITRATION"
_PARTIAL = ("cancelled", "error")
_ANSWERING = ("answer", "draft")
_UNANSWERED = "UNSPECIFIED"

# Skip reasons, in the order they are checked: a request is counted under the first that applies.
NOT_ANSWERED = "not_answered"        # served by no one (cancelled, failed)
OTHER_MODE = "other_mode"            # not POST_ARBITRATION: its features (if any) are not the arbiter's
PARTIAL_FEATURES = "partial_features"  # recorded by a scorer that computes only some of them (rule, logprob)
NO_FEATURES = "no_features"          # no decision features (or a ledger older than schema v5)
NO_EDGE_ANSWER = "no_edge_answer"    # the edge gave no finished answer
NO_CLOUD_ANSWER = "no_cloud_answer"  # the cloud was not asked (the edge's answer was kept), or was cut short
NO_EDGE_LABEL = "no_edge_label"
NO_CLOUD_LABEL = "no_cloud_label"


def split_of(request_id: str) -> str:
    """"train" or "test", fixed by the request id (the spirit of bench/datasets.py split_of)."""
    key = f"{DATASET}:{request_id}"
    bucket = int.from_bytes(hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()[:4], "big") / 2**32
    return "test" if bucket < TEST_SHARE else "train"


Evidence = Mapping[tuple[str, str], Mapping[str, Any]]


def _reference(signal: Mapping[str, Any]) -> Optional[float]:
    if signal["f1"] is not None:
        return float(signal["f1"])
    if signal["correct"] is not None:
        return float(bool(signal["correct"]))
    return None if signal["score"] is None else float(signal["score"])


def _feedback(signal: Mapping[str, Any]) -> Optional[float]:
    if signal["correct"] is not None:
        return float(bool(signal["correct"]))
    if signal["score"] is not None:
        return float(signal["score"])
    if signal["thumbs_up"] is not None:
        return float(bool(signal["thumbs_up"]))
    if signal["corrected_answer"]:
        return 0.0
    return None


def _judge(signal: Mapping[str, Any]) -> Optional[float]:
    if signal["score"] is not None:
        return float(signal["score"])
    return None if signal["correct"] is None else float(bool(signal["correct"]))


def answer_quality(evidence: Evidence, backend: str, served_by: str) -> Optional[tuple[float, str]]:
    """The quality of `backend`'s ("EDGE"/"CLOUD") answer from its own signals, with the kind of
    evidence that gave it, or None. Agreement is not read here (see `labels`)."""
    served = served_by == backend
    targets = [backend.lower()] + (["final"] if served else [])
    for target in targets:
        signal = evidence.get(("reference", target))
        if signal is not None and (value := _reference(signal)) is not None:
            return value, "reference"
    if served:
        signal = evidence.get(("feedback", "final"))
        if signal is not None and (value := _feedback(signal)) is not None:
            return value, "feedback"
    for target in targets:
        signal = evidence.get(("judge", target))
        if signal is not None and (value := _judge(signal)) is not None:
            return value, "judge"
    return None


def labels(evidence: Evidence, served_by: str) -> tuple[Optional[float], Optional[float]]:
    """(edge quality, cloud quality), each None when nothing labels it. See the module docstring."""
    edge = answer_quality(evidence, "EDGE", served_by)
    cloud = answer_quality(evidence, "CLOUD", served_by)
    edge_q = None if edge is None else edge[0]
    cloud_q = None if cloud is None else cloud[0]
    agreement = evidence.get(("agreement", "pair"))
    if (edge_q is None or cloud_q is None) and agreement is not None and agreement["score"] is not None:
        # The cloud is the teacher: agreement with it is the edge's quality.
        cloud_q = 1.0 if cloud_q is None else cloud_q
        edge_q = float(agreement["score"]) if edge_q is None else edge_q
    return edge_q, cloud_q


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def _open_read_only(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise TrainingError(f"no ledger database at {path}; give the daemon's ledger.path")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise TrainingError(f"cannot open the ledger {path} read-only: {exc}") from None
    try:
        conn.execute("PRAGMA query_only = ON")
        if not {"requests", "backend_runs", "signals"} <= {
                name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}:
            raise TrainingError(f"{path} is not a hybrid-router ledger (no requests, backend_runs and signals "
                                "tables)")
    except sqlite3.Error as exc:
        conn.close()
        raise TrainingError(f"cannot read the ledger {path}: {exc}") from None
    except BaseException:
        conn.close()
        raise
    return conn


def _features(decision_json: Optional[str]) -> dict[str, float]:
    try:
        decision = json.loads(decision_json or "{}")
        recorded = decision.get("features") or {}
        return {str(name): float(value) for name, value in recorded.items()
                if isinstance(value, (int, float)) and math.isfinite(float(value))}
    except (ValueError, AttributeError, TypeError):
        return {}


def _messages(messages_json: str, policy: str) -> list[dict[str, str]]:
    """The request's messages as stored; none when only `sha256:<hex>` of each text is (policy none)."""
    if policy == "none":
        return []
    try:
        messages = json.loads(messages_json)
    except ValueError:
        return []
    if not isinstance(messages, list):
        return []
    return [{"role": str(m.get("role") or ""), "content": str(m.get("content") or "")}
            for m in messages if isinstance(m, dict)]


def _last_user_text(messages: Sequence[Mapping[str, str]]) -> str:
    users = [m["content"] for m in messages if m["role"] == "user"]
    return users[-1] if users else ""


def deferral_rows(path: Path, *, since: Optional[str] = None, require_rows: bool = True,
                  need_features: Sequence[str] = FEATURE_NAMES) -> tuple[list[CorpusRow], collections.Counter[str]]:
    """The training rows the ledger at `path` holds (requests created at or after `since`, ISO-8601 UTC
    text as the ledger stores it), and how many requests were skipped, by reason. A request whose
    decision lacks any of `need_features` is skipped (`partial_features`): a missing feature would be
    read as 0, which is a claim (no sample agreed, the verifier said no), not an absence. The pre-router
    reads the text alone and needs none. Raises TrainingError when the file cannot be read, or (with
    `require_rows`) gives no row."""
    path = Path(path)
    conn = _open_read_only(path)
    skipped: collections.Counter[str] = collections.Counter()
    rows: list[CorpusRow] = []
    try:
        rows = _read(conn, since or "", skipped, need_features)
    except sqlite3.Error as exc:
        raise TrainingError(f"cannot read the ledger {path}: {exc}") from None
    finally:
        conn.close()
    if not rows and require_rows:
        counts = ", ".join(f"{reason} {count}" for reason, count in sorted(skipped.items())) or "no requests"
        window = f" since {since}" if since else ""
        raise TrainingError(
            f"the ledger {path} gives no training row{window} ({counts}): a row needs an answered "
            "POST_ARBITRATION request with its decision's features (recorded from schema v5 on) and a label for "
            "both the edge's and the cloud's answer. Run POST_ARBITRATION (the shadow arbiter asks the cloud "
            "every time) with a reference answer, send feedback, or set ledger.judge_sample_rate > 0; or train "
            "on the labelled corpus (--corpus bench/corpus/arbitration.jsonl)")
    return rows, skipped


def _read(conn: sqlite3.Connection, since: str, skipped: collections.Counter[str],
          need_features: Sequence[str]) -> list[CorpusRow]:
    request_columns = _columns(conn, "requests")
    decision = "decision_json" if "decision_json" in request_columns else "'{}'"
    purpose = "b.purpose" if "purpose" in _columns(conn, "backend_runs") else "'answer'"
    answers: dict[str, set[str]] = collections.defaultdict(set)
    edge_texts: dict[str, str] = {}  # the edge's answer: what the text-only features are read from
    for request_id, backend, text, finish_reason, run_purpose in conn.execute(
            f"SELECT b.request_id, b.backend, b.text, b.finish_reason, {purpose} FROM backend_runs AS b "
            "JOIN requests AS r ON r.id = b.request_id WHERE r.created_at >= ? ORDER BY b.request_id, b.ordinal",
            (since,)):
        if text and finish_reason not in _PARTIAL and run_purpose in _ANSWERING:
            answers[request_id].add(backend)
            if backend == "EDGE":
                edge_texts.setdefault(request_id, text)
    evidence: dict[str, dict[tuple[str, str], dict[str, Any]]] = collections.defaultdict(dict)
    for request_id, kind, target, score, correct, f1, thumbs_up, corrected in conn.execute(
            "SELECT s.request_id, s.kind, s.target, s.score, s.correct, s.f1, s.thumbs_up, s.corrected_answer "
            "FROM signals AS s JOIN requests AS r ON r.id = s.request_id WHERE r.created_at >= ? ORDER BY s.id",
            (since,)):
        if kind == "judge" and score is None and correct is None:
            continue  # a judge call that gave no grade is spend, not evidence: it must not hide a grade
        # In id order, so a later signal of the same (kind, target) replaces an earlier one.
        evidence[request_id][(kind, target)] = {"score": score, "correct": correct, "f1": f1,
                                                "thumbs_up": thumbs_up, "corrected_answer": corrected}
    rows = []
    for request_id, mode, served_by, score, messages_json, policy, decision_json in conn.execute(
            f"SELECT id, mode, served_by, decision_score, messages_json, content_policy, {decision} "
            "FROM requests WHERE created_at >= ? ORDER BY created_at, id", (since,)):
        features = _features(decision_json)
        messages = _messages(messages_json, policy)
        if features and messages and request_id in edge_texts:
            # A row recorded before a text-only feature existed gains it here, as a corpus line does.
            features = refreshed_text_features(messages, edge_texts[request_id], features)
        answered = answers.get(request_id, set())
        edge_q: Optional[float] = None
        cloud_q: Optional[float] = None
        if served_by == _UNANSWERED:
            reason = NOT_ANSWERED
        elif mode != MODE:
            reason = OTHER_MODE
        elif need_features and not features:
            reason = NO_FEATURES
        elif any(name not in features for name in need_features):
            reason = PARTIAL_FEATURES
        elif "EDGE" not in answered:
            reason = NO_EDGE_ANSWER
        elif "CLOUD" not in answered:
            reason = NO_CLOUD_ANSWER
        else:
            edge_q, cloud_q = labels(evidence.get(request_id, {}), served_by)
            reason = NO_EDGE_LABEL if edge_q is None else NO_CLOUD_LABEL if cloud_q is None else ""
        if reason or edge_q is None or cloud_q is None:
            skipped[reason] += 1
            continue
        # The learned scorer records the default rule's score beside its own; any other scorer's score is
        # the rule's (or the scorer's own) score.
        recorded = features.get("rule_score", score if score is not None else 0.5)
        rows.append(CorpusRow(dataset=DATASET, item_id=request_id, split=split_of(request_id),
                              edge_quality=edge_q, cloud_quality=cloud_q, features=features,
                              rule_score=current_rule_score(features, float(recorded)),
                              text=_last_user_text(messages)))
    return rows
