"""Start-up of the `learned` scorer: the artifact and the text encoder, or a refusal, or the rule.

A learned scorer whose model cannot be used stops the daemon at start-up with a ConfigError naming
the key and the file, unless `arbitration.missing_model = "rule"`: then the default rule scores, and
every decision record's scorer reads "rule (no learned model: <why>)", so no decision passes for
the learned model's when it was not.
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence

from edge.catalogue import ModelCache
from edge.encoder import EMBEDDING_DIM, TextEncoder
from edge.errors import EdgeError
from router.core.arbiters.learned import LearnedModel, LearnedModelError, LearnedScorer, TRAIN_HINT
from router.core.arbiters.scorers import RuleScorer, Scorer
from router.core.arbiters.thresholds import CalibrationPoint, FixedThreshold, TargetAccuracyThreshold, Threshold
from router.domain.config import ArbitrationSettings, ConfigError


def build_learned_scorer(settings: ArbitrationSettings, cache: ModelCache,
                         logger: Optional[logging.Logger] = None) -> Scorer:
    fallback = "or set arbitration.missing_model = \"rule\" to score with the default rule until a model is trained"
    if settings.model_dir is None:
        why = "arbitration.model_dir is unset"
        if settings.missing_model == "error":
            raise ConfigError(f"arbitration.scorer = learned needs arbitration.model_dir; {TRAIN_HINT}; {fallback}")
    else:
        try:
            return _load(settings, cache)
        except (LearnedModelError, EdgeError) as exc:
            if settings.missing_model == "error":
                raise ConfigError(f"arbitration.model_dir = {settings.model_dir}: {exc}; {fallback}") from exc
            why = str(exc)
    (logger or logging.getLogger("hybrid_router.arbiter")).warning(
        "no learned model; the default rule scores", extra={"fields": {"why": why}})
    return RuleScorer(samples=settings.samples, name=f"rule (no learned model: {why})")


def _load(settings: ArbitrationSettings, cache: ModelCache) -> LearnedScorer:
    assert settings.model_dir is not None
    model = LearnedModel(settings.model_dir.expanduser(), embedding_dims=(0, EMBEDDING_DIM))
    encoder = TextEncoder.from_cache(cache) if model.meta.embedding_dim else None
    # The decision names the version, so Stats and the bench tell one trained model from the next.
    return LearnedScorer(model=model, encoder=encoder, samples=settings.samples,
                         name=f"learned {model.directory.name}")


def build_target_accuracy_threshold(settings: ArbitrationSettings, scorer: Scorer,
                                    logger: Optional[logging.Logger] = None) -> Threshold:
    """The threshold that reaches settings.target_accuracy on the learned model's held-out split. A model
    without a calibration table is refused like a missing model: a ConfigError, or with missing_model =
    "rule" the fixed threshold, and the decision's threshold_kind says why."""
    logger = logger or logging.getLogger("hybrid_router.arbiter")
    if not isinstance(scorer, LearnedScorer):  # the rule stands in for a missing model: it has no table
        return FixedThreshold(settings.fixed_threshold, name="fixed (no calibration: no learned model)")
    try:
        points = scorer.model.calibration()
    except LearnedModelError as exc:
        if settings.missing_model == "error":
            raise ConfigError(f"arbitration.threshold = target_accuracy: {exc}; or set arbitration.threshold "
                              "to fixed or target_share") from exc
        logger.warning("no calibration table; the fixed threshold applies", extra={"fields": {"why": str(exc)}})
        return FixedThreshold(settings.fixed_threshold, name=f"fixed (no calibration: {exc.problem})")
    return calibrated_threshold(settings.target_accuracy, points, logger, key="arbitration.target_accuracy")


def calibrated_threshold(target: float, points: Sequence[CalibrationPoint], logger: logging.Logger, *,
                         key: str) -> TargetAccuracyThreshold:
    """The target_accuracy threshold from a model's calibration table, with the cloud share it expects
    in the log (or a warning that no threshold reaches the target: every answer goes to the cloud)."""
    threshold = TargetAccuracyThreshold.from_calibration(target, points)
    if threshold.expected is None:
        logger.warning(f"{key} is above the quality every threshold reached on held-out items: every request "
                       "goes to the cloud", extra={"fields": {
                           "target_accuracy": target, "best_quality": max(point.quality for point in points)}})
    else:
        logger.info("target_accuracy threshold", extra={"fields": {
            "target_accuracy": target, "threshold": threshold.value,
            "expected_cloud_share": threshold.expected.cloud_share, "expected_quality": threshold.expected.quality}})
    return threshold
