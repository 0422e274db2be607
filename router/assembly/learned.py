"""Start-up of the `learned` scorer: the artifact and the text encoder, or a refusal, or the rule.

A learned scorer whose model cannot be used stops the daemon at start-up with a ConfigError naming
the key and the file, unless `arbitration.missing_model = "rule"`: then the default rule scores, and
every decision record's scorer reads "rule (no learned model: <why>)", so no decision passes for
the learned model's when it was not.
"""
from __future__ import annotations

import logging
from typing import Optional

from edge.catalogue import ModelCache
from edge.encoder import EMBEDDING_DIM, TextEncoder
from edge.errors import EdgeError
from router.core.arbiters.learned import LearnedModel, LearnedModelError, LearnedScorer, TRAIN_HINT
from router.core.arbiters.scorers import RuleScorer, Scorer
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
    return LearnedScorer(model=model, encoder=encoder, samples=settings.samples)
