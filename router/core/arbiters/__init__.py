"""POST_ARBITRATION's arbiters, scorers and thresholds, built from `[arbitration]` settings.

The `learned` scorer needs files and the text encoder, so the composition root
(router/assembly/modes.py) builds it and hands it in; everything else is built here.
"""
from __future__ import annotations

from typing import Optional, Union

from router.core.arbiters.cascade import CascadeArbiter, EarlyExit, ScoringArbiter, StandIn
from router.core.arbiters.parallel import ParallelArbiter
from router.core.arbiters.scorers import Scorer, build_scorer
from router.core.arbiters.thresholds import FixedThreshold, TargetShareThreshold, Threshold
from router.domain.config import ArbitrationSettings, RoutingSettings


def build_threshold(settings: Union[ArbitrationSettings, RoutingSettings]) -> Threshold:
    """From the threshold keys that [arbitration] and [routing] share."""
    if settings.threshold == "target_accuracy" and getattr(settings, "arbiter", "") != "shadow":
        raise ValueError("the target_accuracy threshold is built from a learned model's calibration "
                         "(router/assembly/modes.py)")
    if settings.threshold == "target_share":
        return TargetShareThreshold(share=settings.target_cloud_share, window=settings.window,
                                    min_samples=settings.min_samples, initial=settings.fixed_threshold)
    return FixedThreshold(settings.fixed_threshold)


def build_arbiter(settings: ArbitrationSettings, *, scorer: Optional[Scorer] = None,
                  threshold: Optional[Threshold] = None, stand_in: Optional[StandIn] = None) -> ScoringArbiter:
    """The arbiter `settings.arbiter` names, scoring with `scorer` against `threshold` (defaults: the
    ones `settings` names; the learned scorer and the target_accuracy threshold read files, so
    router/assembly/modes.py builds them and hands them in). `stand_in` scores when `scorer` is stale."""
    threshold = threshold or build_threshold(settings)
    if settings.arbiter == "shadow":
        # Labelling: every feature, the cloud's answer served, nothing streamed that would be replaced.
        features = "all" if settings.shadow_features == "all" else "task"
        return CascadeArbiter(scorer=build_scorer(features, samples=settings.samples), threshold=threshold,
                              stream_draft=False, always_escalate=True, name="shadow")
    if scorer is None:
        scorer = build_scorer(settings.scorer, samples=settings.samples)
    if settings.arbiter == "parallel":
        return ParallelArbiter(scorer=scorer, threshold=threshold, stream_draft=settings.stream_draft,
                               stand_in=stand_in)
    if settings.arbiter == "early":
        return CascadeArbiter(scorer=scorer, threshold=threshold, stream_draft=settings.stream_draft, name="early",
                              early=EarlyExit(settings.early_threshold, settings.early_window), stand_in=stand_in)
    return CascadeArbiter(scorer=scorer, threshold=threshold, stream_draft=settings.stream_draft, stand_in=stand_in)


__all__ = ["CascadeArbiter", "EarlyExit", "ParallelArbiter", "ScoringArbiter", "Scorer", "StandIn", "Threshold",
           "build_arbiter", "build_scorer", "build_threshold"]
