"""Training a probe (`hybrid-router train-probe`): the learned models' pipeline (router/core/arbiters/
training.py: standardized features, the state's principal components, then ridge on the gain of asking
the cloud or logistic regression on "the cloud is strictly better" (router/core/arbiters/heads.py), all
chosen by grouped cross-validation, exported to ONNX, checked, versioned), fed the edge's hidden state
where the others take a text embedding.

A hidden state has hundreds of dimensions where the text embedding's few principal components sufficed,
so more components are tried. The baseline a probe is compared with is the rule its mode uses today: the
default rule's score for the draft probe, the pre-router's rule for the prefill probe. Needs the
`[train]` extra.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from router.core.arbiters.corpus import CorpusRow, TrainingError
from router.core.arbiters.heads import HEADS
from router.core.arbiters.training import FeatureSet, train_from_rows
from router.core.probes.features import DRAFT_PROBE_FEATURE_NAMES, PREFILL_PROBE_FEATURE_NAMES
from router.core.probes.model import DRAFT_PROBE_KIND, PREFILL_PROBE_KIND, STATE_AT, EdgeBinding
from router.core.probes.states_file import HiddenStatesFile, first_missing
from router.core.routing.features import router_features
from router.core.routing.model import rule_score

# Principal components of the state tried by cross-validation (0: the features alone).
STATE_COMPONENTS = (0, 16, 32, 64, 128)

FEATURE_SETS = {
    DRAFT_PROBE_KIND: FeatureSet(kind=DRAFT_PROBE_KIND, names=DRAFT_PROBE_FEATURE_NAMES, of=lambda row: row.features,
                                 baseline_name="rule", baseline=lambda row: row.rule_score),
    PREFILL_PROBE_KIND: FeatureSet(kind=PREFILL_PROBE_KIND, names=PREFILL_PROBE_FEATURE_NAMES,
                                   of=lambda row: router_features(row.text), baseline_name="pre_rule",
                                   baseline=lambda row: rule_score(router_features(row.text))),
}


def train_probe(rows: Sequence[CorpusRow], states: HiddenStatesFile, out: Path, *, kind: str,
                provenance: Mapping[str, Any], components: Optional[int] = None) -> Path:
    """A new versioned probe of `kind` under `out`, bound to the edge model whose states `states` holds."""
    if kind not in FEATURE_SETS:
        raise TrainingError(f"no probe kind {kind!r}; there are {', '.join(FEATURE_SETS)}")
    missing = first_missing(list(rows), states)
    if missing:
        raise TrainingError(f"{missing} have no hidden state in the states file: relabel the corpus "
                            "(python -m bench.hidden_states) with the edge the probe is for")
    if kind == PREFILL_PROBE_KIND:
        untexted = [f"{row.dataset}:{row.item_id}" for row in rows if not row.text]
        if untexted:
            raise TrainingError(f"{len(untexted)} row(s) have no request text (first: {untexted[0]})")
    at = STATE_AT[kind]
    binding = EdgeBinding(edge_model=states.edge_model, edge_model_sha256=states.edge_model_sha256,
                          layer=states.layer, at=at, dims=states.dims)
    return train_from_rows(
        rows, out, provenance=provenance, feature_set=FEATURE_SETS[kind], components=components,
        embed_row=lambda row: states.state(row, at), component_candidates=STATE_COMPONENTS,
        embedding_model=f"{states.edge_model} hidden state ({states.layer}, at the {at})",
        embedding_text=f"the edge's {states.layer} state at the {at}'s last token",
        extra_meta={"hidden_state": binding.to_meta()}, heads=HEADS)
