"""The LoRA's training set from the ledger: what `hybrid-router finetune --ledger` and `hybrid-router improve`
train the edge on.

The SFT rows of router/core/learning/sft.py in OpenAI chat form (what edge/lora_training.py reads): users'
corrections and the cloud's served answers that the evidence calls good (min_score for scores). With
`split_seed`, a seeded split by prompt holds a share out for evaluation (`validation_path_for(out)`).
"""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Optional

from router.core.learning.sft import ExportReport, export_ledger_file

LORA_FORMAT = "openai"


def lora_training_set(ledger_path: Path, out: Path, *, log_content: str, min_score: float,
                      since: Optional[datetime] = None, split_seed: Optional[int] = None,
                      validation_fraction: float = 0.1) -> ExportReport:
    """Writes the training set from the ledger file at `ledger_path` (ledger.path, kept under `log_content`)
    to `out`, from requests made at or after `since`. Raises as sft.export_ledger_file does: under
    log_content = none there is no text to train on (LedgerExportRefusedError)."""
    return export_ledger_file(ledger_path, LORA_FORMAT, out, log_content=log_content, since=since,
                              min_score=min_score, split_seed=split_seed, validation_fraction=validation_fraction)
