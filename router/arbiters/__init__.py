"""POST_ARBITRATION's arbiters, scorers and thresholds, built from `[arbitration]` settings."""
from __future__ import annotations

from typing import Optional

from edge.catalogue import ModelCache
from router.arbiters.cascade import CascadeArbiter, EarlyExit, ScoringArbiter
from router.arbiters.parallel import ParallelArbiter
from router.arbiters.scorers import SCORER_NAMES, Scorer, build_scorer
from router.arbiters.thresholds import FixedThreshold, TargetShareThreshold, Threshold
from router.config import ArbitrationSettings, ModelsSettings

ARBITER_NAMES = ("cascade", "parallel", "early", "shadow")


def build_threshold(settings: ArbitrationSettings) -> Threshold:
    if settings.threshold == "target_share":
        return TargetShareThreshold(share=settings.target_cloud_share, window=settings.window,
                                    min_samples=settings.min_samples, initial=settings.fixed_threshold)
    return FixedThreshold(settings.fixed_threshold)


def build_arbiter(settings: ArbitrationSettings, *, model_cache: Optional[ModelCache] = None) -> ScoringArbiter:
    """`model_cache` holds the text encoder of the learned scorer (default: the default cache directory).

    Raises ConfigError for a learned scorer whose model cannot be used (see learned_setup)."""
    threshold = build_threshold(settings)
    if settings.arbiter == "shadow":
        # Labelling: every feature, the cloud's answer served, nothing streamed that would be replaced.
        return CascadeArbiter(scorer=build_scorer("all", samples=settings.samples), threshold=threshold,
                              stream_draft=False, always_escalate=True, name="shadow")
    if settings.scorer == "learned":
        # Imported here: onnxruntime loads only for a daemon that uses the learned scorer.
        from router.arbiters.learned_setup import build_learned_scorer

        scorer = build_learned_scorer(settings, model_cache or ModelCache(ModelsSettings().cache_dir.expanduser()))
    else:
        scorer = build_scorer(settings.scorer, samples=settings.samples)
    if settings.arbiter == "parallel":
        return ParallelArbiter(scorer=scorer, threshold=threshold, stream_draft=settings.stream_draft)
    if settings.arbiter == "early":
        return CascadeArbiter(scorer=scorer, threshold=threshold, stream_draft=settings.stream_draft, name="early",
                              early=EarlyExit(settings.early_threshold, settings.early_window))
    return CascadeArbiter(scorer=scorer, threshold=threshold, stream_draft=settings.stream_draft)


__all__ = ["ARBITER_NAMES", "CascadeArbiter", "EarlyExit", "ParallelArbiter", "ScoringArbiter", "SCORER_NAMES", "Scorer", "Threshold", "build_arbiter",
           "build_scorer", "build_threshold"]
