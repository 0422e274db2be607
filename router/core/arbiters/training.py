"""Training the learned deferral model from the labelled arbitration corpus (`hybrid-router train-arbiter`).

Corpus: bench/corpus/arbitration.jsonl (bench/arbitration.py's export), one JSON object per item with
dataset, item_id, split, text (the user turn the edge saw, which the daemon embeds), edge_quality,
cloud_quality, features (the `all` scorer's) and rule_score.
Target: cloud_quality - edge_quality, the gain of asking the cloud.

Model: standardized features and, when an encoder is given, the text's embedding reduced to a few
principal components, then ridge regression. The number of components (none, 8 or 32) and the ridge
alpha are chosen by 5-fold cross-validation on the train split, each SQuAD article's questions kept in
one fold. A linear model because the corpus is small (hundreds to a few thousand items): a boosted tree
ensemble did no better on 860 items (histogram gradient boosting, depth 2 to 3, with and without the
embedding, in grouped cross-validation), and the linear pipeline's ONNX export matches sklearn to
float32 precision. When cross-validation keeps no component, the
embedding is dropped and meta.json says `embedding_dim` 0, so the daemon needs no encoder for it.

Trained on the train split; metrics on the test split, beside the same metrics for the default
rule's score, so a new model is judged against what it replaces. Needs the `[train]` extra
(scikit-learn, skl2onnx); nothing here is imported by the daemon.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
# The [train] extra: an ImportError here is what `hybrid-router train-arbiter` turns into the install hint.
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold, KFold, cross_val_score
from sklearn.pipeline import Pipeline

from router.core.arbiters.heads import (CV_LOSS, RIDGE, build_model, export_onnx, out_of_fold_auc, predicted_gain,
                                        target)

from router.core.arbiters.corpus import CorpusRow, TrainingError, read_corpus
from router.core.provenance import code_provenance
from router.core.arbiters.features import FEATURE_NAMES
from router.core.arbiters.learned import (ARTIFACT_FORMAT_VERSION, DEFERRAL_KIND, INPUT_NAME, META_FILE, MODEL_FILE,
                                          LearnedModel, gain_to_score)

RIDGE_ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)
EMBEDDING_COMPONENTS = (0, 8, 32)   # 0: the features alone
CV_FOLDS = 5
CLOUD_SHARES = (0.3, 0.5)
ONNX_TOLERANCE = 1e-4
CALIBRATION_POINTS = 101
ABOVE_EVERY_SCORE = 1.000001  # scores are in [0, 1]: the threshold at which every answer escalates
VERSION_PREFIX = "v"
MAX_VERSION_ATTEMPTS = 100


@dataclass(frozen=True)
class ModelSelection:
    components: int                      # principal components kept of the embedding; 0: features only
    alpha: float
    candidates: tuple[int, ...]
    scores: Mapping[str, float]          # mean cross-validated loss of each candidate (its head's own loss)
    head: str = RIDGE
    head_auc: Mapping[str, Optional[float]] = field(default_factory=dict)  # out-of-fold AUC of each head's best


@dataclass(frozen=True)
class FeatureSet:
    """What a model reads from a row, besides the text's embedding, and how the trained model is known."""

    kind: str
    names: tuple[str, ...]
    of: Callable[[CorpusRow], Mapping[str, float]]
    # The baseline a new model is compared with on the test split: higher keeps the edge.
    baseline_name: str
    baseline: Callable[[CorpusRow], float]


DEFERRAL_FEATURES = FeatureSet(kind=DEFERRAL_KIND, names=FEATURE_NAMES, of=lambda row: row.features,
                               baseline_name="rule", baseline=lambda row: row.rule_score)


def build_regressor(components: int, alpha: float, width: int, feature_count: int) -> Pipeline:
    """The ridge pipeline (router/core/arbiters/heads.py has both heads)."""
    return build_model(RIDGE, components, alpha, width, feature_count)


def cross_validation_folds(rows: int, groups: Optional[Sequence[str]] = None) -> tuple[Any, Optional[list[str]]]:
    """Folds that keep a group (a SQuAD article's questions) on one side, as the train/test split
    does: otherwise a fold is scored on questions whose article it was fitted on, and the embedding
    looks more useful than it is. Rows with no shared group are shuffled into plain folds."""
    if groups is not None and len(set(groups)) < len(groups) and len(set(groups)) >= 2:
        return GroupKFold(n_splits=min(CV_FOLDS, len(set(groups))), shuffle=True, random_state=0), list(groups)
    return KFold(n_splits=min(CV_FOLDS, rows), shuffle=True, random_state=0), None


def select_model(x: np.ndarray, y: np.ndarray, *, embedded: bool, feature_count: int,
                 components: Optional[int] = None, groups: Optional[Sequence[str]] = None,
                 component_candidates: Sequence[int] = EMBEDDING_COMPONENTS,
                 heads: Sequence[str] = (RIDGE,)) -> ModelSelection:
    """The embedding's size (none, or a few principal components) and the regularisation with the least
    cross-validated loss of each head on the training rows (`groups`: see cross_validation_folds); with
    more than one head, the head whose best candidate has the highest out-of-fold AUC for "the cloud is
    strictly better". `y`: the gains."""
    if components is not None:  # the caller's choice; only alpha is cross-validated
        if components and (not embedded or components >= min(len(x) // 2, x.shape[1])):
            raise TrainingError(f"cannot keep {components} principal components of the embedding "
                                f"({'no encoder' if not embedded else f'{len(x)} training rows'})")
        candidates: tuple[int, ...] = (components,)
    else:
        candidates = tuple(c for c in component_candidates
                           if c == 0 or (embedded and c < min(len(x) // 2, x.shape[1] - feature_count)))
    folds, fold_groups = cross_validation_folds(len(x), groups)
    scores: dict[str, float] = {}
    best_of_head: dict[str, tuple[float, int, float]] = {}
    for head in heads:
        labels = target(head, y)
        if head != RIDGE and len(set(labels.tolist())) < 2:
            continue  # one class only: nothing to classify
        for components in candidates:
            data = x if components else x[:, :feature_count]
            for alpha in RIDGE_ALPHAS:
                model = build_model(head, components, alpha, data.shape[1], feature_count)
                loss = -float(np.mean(cross_val_score(model, data, labels, cv=folds, groups=fold_groups,
                                                      scoring=CV_LOSS[head])))
                key = f"components={components},alpha={alpha:g}"
                scores[key if head == RIDGE else f"head={head},{key}"] = round(loss, 6)
                if head not in best_of_head or loss < best_of_head[head][0]:
                    best_of_head[head] = (loss, components, alpha)
    head_auc: dict[str, Optional[float]] = {}
    if len(best_of_head) > 1:
        for head, (_, components, alpha) in best_of_head.items():
            data = x if components else x[:, :feature_count]
            head_auc[head] = out_of_fold_auc(head, build_model(head, components, alpha, data.shape[1], feature_count),
                                             data, y, folds, fold_groups)
        chosen = max(best_of_head, key=lambda h: (head_auc[h] if head_auc[h] is not None else -1.0, h == RIDGE))
    else:
        chosen = next(iter(best_of_head))
    _, components, alpha = best_of_head[chosen]
    return ModelSelection(components=components, alpha=alpha, candidates=candidates, scores=scores, head=chosen,
                          head_auc=head_auc)


def calibration_points(scores: Sequence[float], edge_quality: Sequence[float], cloud_quality: Sequence[float],
                       *, max_points: int = CALIBRATION_POINTS) -> list[list[float]]:
    """[threshold, cloud share, mean quality served] for thresholds at the distinct scores (thinned to
    max_points by quantile), plus one above every score: keeping the edge at score >= threshold."""
    score = np.asarray(scores, dtype=np.float64)
    edge, cloud = np.asarray(edge_quality, dtype=np.float64), np.asarray(cloud_quality, dtype=np.float64)
    candidates = np.unique(score)
    if len(candidates) > max_points:
        candidates = np.unique(np.quantile(score, np.linspace(0, 1, max_points), method="lower"))
    points = []
    for threshold in [*candidates.tolist(), ABOVE_EVERY_SCORE]:
        kept = score >= threshold
        served = np.where(kept, edge, cloud)
        points.append([round(float(threshold), 6), round(float(1 - kept.mean()), 6), round(float(served.mean()), 6)])
    return points


def deferral_metrics(escalation_priority: Sequence[float], edge_quality: Sequence[float],
                     cloud_quality: Sequence[float]) -> dict[str, Optional[float]]:
    """How well a ranking picks the requests to send to the cloud.

    auc: of the priority for "cloud strictly better" (None with one class only). gap_recovered_at_S:
    the cloud answers the share S with the highest priority; the share of the edge-to-cloud quality
    gap this recovers (None when the cloud is not better on average: there is no gap).
    """
    priority = np.asarray(escalation_priority, dtype=np.float64)
    edge = np.asarray(edge_quality, dtype=np.float64)
    cloud = np.asarray(cloud_quality, dtype=np.float64)
    better = cloud > edge
    metrics: dict[str, Optional[float]] = {
        "auc": float(roc_auc_score(better, priority)) if 0 < better.sum() < len(better) else None}
    gap = cloud.mean() - edge.mean() if len(edge) else 0.0
    order = np.argsort(-priority, kind="stable")
    for share in CLOUD_SHARES:
        escalated = np.zeros(len(edge), dtype=bool)
        escalated[order[:round(share * len(edge))]] = True
        routed = np.where(escalated, cloud, edge).mean() if len(edge) else 0.0
        metrics[f"gap_recovered_at_{share}"] = float((routed - edge.mean()) / gap) if gap > 0 else None
    return metrics


def train_arbiter(corpus: Path, out: Path, *, encode: Optional[Callable[[str], np.ndarray]] = None,
                  embedding_model: Optional[str] = None) -> Path:
    """Train on the labelled corpus file; see train_from_rows."""
    rows = read_corpus(corpus)
    provenance = {"path": str(corpus), "lines": len(rows), "sha256": _sha256(corpus)}
    return train_from_rows(rows, out, provenance=provenance, encode=encode, embedding_model=embedding_model)


def train_from_rows(rows: Sequence[CorpusRow], out: Path, *, provenance: Mapping[str, Any],
                    encode: Optional[Callable[[str], np.ndarray]] = None,
                    embedding_model: Optional[str] = None, feature_set: FeatureSet = DEFERRAL_FEATURES,
                    components: Optional[int] = None, embed_row: Optional[Callable[[CorpusRow], np.ndarray]] = None,
                    component_candidates: Sequence[int] = EMBEDDING_COMPONENTS,
                    embedding_text: Optional[str] = None, extra_meta: Optional[Mapping[str, Any]] = None,
                    heads: Sequence[str] = (RIDGE,)) -> Path:
    """Train, export, check and write a new versioned artifact under `out`; returns its directory.

    `provenance` says where the rows came from (meta.json's training_corpus). With `encode`, each
    row's text is embedded and appended to its features; with `embed_row`, whatever vector it gives
    for the row is (the edge's hidden state, for a probe), described in meta.json by `embedding_text`.
    `extra_meta` adds keys to meta.json (a probe's binding to its edge model). `heads`: the heads
    cross-validation chooses from (router/core/arbiters/heads.py).
    """
    source = provenance.get("path", "the training rows")
    names = feature_set.names
    if encode is not None and embed_row is not None:
        raise TrainingError("give encode (a text's embedding) or embed_row (a row's vector), not both")
    if encode is not None:
        untexted = [f"{row.dataset}:{row.item_id}" for row in rows if not row.text]
        if untexted:
            raise TrainingError(f"{len(untexted)} corpus item(s) have no text to embed (first: {untexted[0]}); "
                                "export the corpus again (python -m bench.arbitration export), or train on the "
                                "features only with --features-only")
    train = [row for row in rows if row.split == "train"]
    test = [row for row in rows if row.split == "test"]
    if len(train) < 2:
        raise TrainingError(f"{source} has {len(train)} train item(s); at least 2 are needed (label more items)")

    # One text at a time, as the daemon encodes: the quantized encoder pads a batch.
    vector_of = embed_row if embed_row is not None else (
        None if encode is None else (lambda row: encode(row.text)))

    def matrix(part: Sequence[CorpusRow]) -> np.ndarray:
        features = np.asarray([[float(feature_set.of(row).get(name, 0.0)) for name in names] for row in part],
                              dtype=np.float32).reshape(len(part), len(names))
        if vector_of is None:
            return features
        embedded = [np.asarray(vector_of(row), dtype=np.float32) for row in part]
        return np.hstack([features, np.asarray(embedded, dtype=np.float32).reshape(len(part), -1)])

    x_train, x_test = matrix(train), matrix(test)
    y_train = np.asarray([row.gain for row in train])
    selection = select_model(x_train, y_train, embedded=vector_of is not None, feature_count=len(names),
                             components=components, groups=[row.fold_group for row in train],
                             component_candidates=component_candidates, heads=heads)
    if selection.components == 0 and vector_of is not None:
        # Cross-validation found the embedding no help: drop it, and the daemon needs no encoder.
        x_train, x_test = x_train[:, :len(names)], x_test[:, :len(names)]
    width = x_train.shape[1]
    embedding_dim = width - len(names)
    alpha, head = selection.alpha, selection.head
    model = build_model(head, selection.components, alpha, width, len(names)).fit(x_train, target(head, y_train))
    onnx_model = export_onnx(head, model, width, INPUT_NAME)

    check_rows = x_test if len(test) else x_train
    sklearn_gain = predicted_gain(head, model, check_rows)
    metrics = {"test_items": len(test), "train_items": len(train), "head": head, "head_auc": selection.head_auc,
               **({"ridge_alpha": float(alpha)} if head == RIDGE else {"logistic_c": 1.0 / float(alpha)}),
               "embedding_components": selection.components,
               # The candidates' cross-validated losses: squared error (ridge), log loss (head=logistic,...).
               "cv_mse": selection.scores,
               "learned": None, feature_set.baseline_name: None}
    if len(test):
        edge_q = [row.edge_quality for row in test]
        cloud_q = [row.cloud_quality for row in test]
        metrics["learned"] = deferral_metrics(sklearn_gain, edge_q, cloud_q)
        # The rule keeps the edge when its score is high: its escalation priority is the score's negation.
        metrics[feature_set.baseline_name] = deferral_metrics([-feature_set.baseline(row) for row in test],
                                                              edge_q, cloud_q)
        metrics["mean_abs_error"] = float(np.mean(np.abs(np.clip(sklearn_gain, -1, 1) -
                                                         np.asarray([row.gain for row in test]))))
        scores = [gain_to_score(float(gain)) for gain in np.clip(sklearn_gain, -1, 1)]
        calibration = {"split": "test", "items": len(test), "edge_quality": float(np.mean(edge_q)),
                       "cloud_quality": float(np.mean(cloud_q)),
                       "points": calibration_points(scores, edge_q, cloud_q)}
    else:
        calibration = None

    meta = {
        "version": ARTIFACT_FORMAT_VERSION,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "kind": feature_set.kind,
        "feature_names": list(names),
        "embedding_dim": embedding_dim,
        "embedding_model": embedding_model if embedding_dim else None,
        "embedding_text": (embedding_text or "the last user message (the prompt the edge saw)") if embedding_dim else
                          ("none: cross-validation dropped the embedding" if vector_of is not None
                           else "none: trained on the features only"),
        "target": ("cloud_quality - edge_quality (expected gain of asking the cloud), in [-1, 1]" if head == RIDGE
                   else "2 P(cloud_quality > edge_quality) - 1 (the cloud strictly better), in [-1, 1]"),
        "score": "(1 - gain) / 2 clipped to [0, 1]; higher keeps the edge",
        "regressor": (f"StandardScaler(features)"
                      + (f" + PCA({selection.components}) + StandardScaler(embedding)" if selection.components else "")
                      + (f" -> Ridge(alpha={alpha:g})" if head == RIDGE else
                         f" -> LogisticRegression(C={1.0 / alpha:g}) -> 2p - 1")
                      + f"; components and regularisation by {CV_FOLDS}-fold cross-validation "
                      f"over {list(selection.candidates)} x {list(RIDGE_ALPHAS)}"
                      + (f"; head by out-of-fold AUC {selection.head_auc}" if selection.head_auc else "")),
        "training_corpus": {**provenance, "train_items": len(train), "test_items": len(test)},
        "code": code_provenance(),  # the commit that trained it, and whether the tree had uncommitted changes
        "metrics": metrics,
        # What threshold = target_accuracy chooses from: [threshold, cloud share, quality served] on the
        # held-out split (router/core/arbiters/thresholds.py).
        "calibration": calibration,
        **(extra_meta or {}),
    }
    directory = _claim_version_directory(out)
    (directory / MODEL_FILE).write_bytes(onnx_model.SerializeToString())
    _write_json_atomically(directory / META_FILE, meta)
    # The check loads the written files as the daemon does: validation, float32 inputs, clipping.
    onnx_gain = LearnedModel(directory, embedding_dims=(embedding_dim,), feature_names=names,
                             kind=feature_set.kind).predict_gain(check_rows)
    difference = float(np.max(np.abs(onnx_gain - np.clip(sklearn_gain, -1, 1)))) if len(check_rows) else 0.0
    if difference > ONNX_TOLERANCE:
        (directory / META_FILE).unlink()  # without meta.json the artifact is refused on load
        raise TrainingError(f"the ONNX export {directory / MODEL_FILE} differs from sklearn by {difference:.2e} "
                            f"(> {ONNX_TOLERANCE}); the artifact was left without meta.json and will not load")
    meta["onnx_max_abs_difference"] = difference
    _write_json_atomically(directory / META_FILE, meta)
    return directory


def _claim_version_directory(out: Path) -> Path:
    """A new `vNNNN` directory under `out`: mkdir is the claim, so two runs never share one."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for _attempt in range(MAX_VERSION_ATTEMPTS):
        taken = [int(p.name[1:]) for p in out.iterdir()
                 if p.name.startswith(VERSION_PREFIX) and p.name[1:].isdigit()]
        directory = out / f"{VERSION_PREFIX}{max(taken, default=0) + 1:04d}"
        try:
            directory.mkdir()
        except FileExistsError:
            continue  # another run claimed it between the listing and the mkdir
        return directory
    raise TrainingError(f"could not claim a new version directory under {out}")


def _write_json_atomically(path: Path, value: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    with Path(path).open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
