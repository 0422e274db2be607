"""The rows the learned deferral model is trained on, and the corpus file that holds them.

A row is one request with both answers graded: what the edge's answer was worth, what the cloud's
was, the `all` scorer's features of the edge's answer, and the text the daemon embeds. The labelled
corpus (bench/corpus/arbitration.jsonl, bench/arbitration.py's export) holds one per line; the
ledger gives more (router/core/ledger/). Reading them needs neither scikit-learn nor the models.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from router.domain.jsonl import split_lines


class TrainingError(Exception):
    """Training refused or failed; the message says which input is wrong and how to fix it."""


@dataclass(frozen=True)
class CorpusRow:
    dataset: str
    item_id: str
    split: str
    edge_quality: float
    cloud_quality: float
    features: Mapping[str, float]
    rule_score: float
    text: str = ""
    group: str = ""  # items that must stay on one side of a split (a SQuAD article); "" : the item alone

    @property
    def gain(self) -> float:
        return self.cloud_quality - self.edge_quality

    @property
    def fold_group(self) -> str:
        return self.group or f"{self.dataset}:{self.item_id}"


def read_corpus(path: Path) -> list[CorpusRow]:
    rows = []
    try:
        lines = split_lines(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise TrainingError(f"cannot read the corpus {path}: {exc}; write it with the bench's arbitration "
                            "export (bench/arbitration.py)") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            rows.append(CorpusRow(dataset=str(record["dataset"]), item_id=str(record["item_id"]),
                                  split=str(record["split"]), edge_quality=float(record["edge_quality"]),
                                  cloud_quality=float(record["cloud_quality"]),
                                  features={k: float(v) for k, v in record["features"].items()},
                                  rule_score=float(record["rule_score"]), text=str(record.get("text") or ""),
                                  group=f"{record['dataset']}:{record['group']}" if record.get("group") else ""))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise TrainingError(f"{path}:{number}: not a corpus item ({type(exc).__name__}: {exc}); each line "
                                "needs dataset, item_id, split, edge_quality, cloud_quality, features, "
                                "rule_score") from None
    return rows
