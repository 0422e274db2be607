"""Training PRE_ARBITRATION's router (`hybrid-router train-router`): the deferral model's pipeline
(router/core/arbiters/training.py: ridge on standardized features and the embedding's principal
components, chosen by cross-validation, exported to ONNX, checked, versioned), fed the request's
features instead of the edge answer's. Its baseline is the default rule. Needs the `[train]` extra."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from router.core.arbiters.corpus import CorpusRow, TrainingError
from router.core.arbiters.learned import ROUTER_KIND
from router.core.arbiters.training import FeatureSet, train_from_rows
from router.core.routing.features import ROUTER_FEATURE_NAMES, embedding_text, router_features
from router.core.routing.model import rule_score

ROUTER_FEATURES = FeatureSet(kind=ROUTER_KIND, names=ROUTER_FEATURE_NAMES, of=lambda row: router_features(row.text),
                             baseline_name="rule", baseline=lambda row: rule_score(router_features(row.text)))


def train_router(rows: Sequence[CorpusRow], out: Path, *, provenance: Mapping[str, Any],
                 encode: Optional[Callable[[str], np.ndarray]] = None, embedding_model: Optional[str] = None,
                 components: Optional[int] = None) -> Path:
    """A new versioned router artifact under `out`; its features come from each row's text, so every
    row needs one (a ledger kept under log_content = none has none to give)."""
    untexted = [f"{row.dataset}:{row.item_id}" for row in rows if not row.text]
    if untexted:
        raise TrainingError(f"{len(untexted)} row(s) have no request text (first: {untexted[0]}); the router "
                            "reads the request alone, so export the corpus again, or leave out a ledger kept "
                            "under log_content = none")
    # The daemon embeds only the text's end (routing/features.py): so does training.
    embed = None if encode is None else (lambda text: encode(embedding_text(text)))
    return train_from_rows(rows, out, provenance=provenance, encode=embed, embedding_model=embedding_model,
                           feature_set=ROUTER_FEATURES, components=components)
