"""Training rows for the learned deferral model, from the ledger (`hybrid-router train-arbiter --ledger`).

One row (router/core/arbiters/corpus.py's `CorpusRow`) per answered POST_ARBITRATION request whose
decision recorded the scorer's features (schema v5's `decision_json`) and whose edge answer and cloud
answer can both be given a quality in [0, 1]: router/core/learning/evidence.py's `labels`, strongest
first: reference, feedback (the served answer only), judge, and agreement, the weakest, with the cloud
as the teacher.

Within a kind the latest signal of each (kind, target) wins, as in sft.py. Requests that give no row
are counted by reason. Each row's split is a hash of its request id (a quarter goes to test), fixed
for the id, so retraining on a grown ledger keeps every old row on its side. Text is the last user
message as stored: under log_content = none only a hash is stored, so the row has no text and serves
`--features-only` training.

The file is opened read-only (SQLite URI mode=ro) and never migrated (router/core/ledger/records.py): a
ledger written before schema v5 has no decision features, and its requests are counted as such. Needs
neither scikit-learn nor models.
"""
from __future__ import annotations

import collections
import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Mapping, Optional, Sequence

from router.core.arbiters.corpus import CorpusRow, TrainingError
from router.core.arbiters.features import FEATURE_NAMES, refreshed_text_features
from router.core.arbiters.scorers import current_rule_score
from router.core.learning.evidence import labels
from router.core.ledger.records import UNANSWERED, LedgerReadError, open_read_only, read_requests

DATASET = "ledger"
TEST_SHARE = 0.25
MODE = "POST_ARBITRATION"

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
    try:
        conn = open_read_only(path)
    except LedgerReadError as exc:
        raise TrainingError(str(exc)) from None
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
    rows = []
    for request in read_requests(conn, since=since):
        request_id, served_by, answered = request.id, request.served_by, request.answers
        features = dict(request.decision_features)
        messages = _messages(request.messages_json, request.content_policy)
        edge_text = answered.get("EDGE")  # the edge's answer: what the text-only features are read from
        if features and messages and edge_text is not None:
            # A row recorded before a text-only feature existed gains it here, as a corpus line does.
            features = refreshed_text_features(messages, edge_text, features)
        edge_q: Optional[float] = None
        cloud_q: Optional[float] = None
        if served_by == UNANSWERED:
            reason = NOT_ANSWERED
        elif request.mode != MODE:
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
            edge_q, cloud_q = labels(request.evidence, served_by)
            reason = NO_EDGE_LABEL if edge_q is None else NO_CLOUD_LABEL if cloud_q is None else ""
        if reason or edge_q is None or cloud_q is None:
            skipped[reason] += 1
            continue
        # The learned scorer records the default rule's score beside its own; any other scorer's score is
        # the rule's (or the scorer's own) score.
        score = request.decision_score
        recorded = features.get("rule_score", score if score is not None else 0.5)
        rows.append(CorpusRow(dataset=DATASET, item_id=request_id, split=split_of(request_id),
                              edge_quality=edge_q, cloud_quality=cloud_q, features=features,
                              rule_score=current_rule_score(features, float(recorded)),
                              text=_last_user_text(messages)))
    return rows
