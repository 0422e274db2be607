"""The modes as configured: the arbiter from `[arbitration]`, with the learned scorer's files loaded."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Optional

from edge.catalogue import ModelCache
from router.core.arbiters import ScoringArbiter, build_arbiter as build_core_arbiter
from router.core.probes.scorer import DraftProbeScorer
from router.core.modes import builtin_modes
from router.core.modes.base import ModeHandler
from router.core.modes.agent import EdgeAgentMode
from router.core.modes.rag import EdgeRagMode

if TYPE_CHECKING:
    from router.assembly.probes import EdgeModelIdentity
from router.domain.config import (AgentSettings, ArbitrationSettings, AutoSettings, EdgeSettings, InfoSettings,
                                  RoutingSettings)
from router.domain.types import Mode


def build_arbiter(settings: ArbitrationSettings, *, model_cache: ModelCache,
                  logger: Optional[logging.Logger] = None, edge: Optional["EdgeModelIdentity"] = None) -> ScoringArbiter:
    """Raises ConfigError for a learned scorer whose model cannot be used (router/assembly/learned.py), or a
    configured probe trained for another edge (router/assembly/probes.py). `edge`: the edge model the probes
    must fit; by default the default edge settings'."""
    if settings.scorer == "probe" and settings.arbiter != "shadow":
        from router.assembly.probes import EdgeModelIdentity, build_draft_probe_scorer, rule_threshold, stale_stand_in

        scorer = build_draft_probe_scorer(settings, edge or EdgeModelIdentity(EdgeSettings(), model_cache), logger)
        if isinstance(scorer, DraftProbeScorer):
            return build_core_arbiter(settings, scorer=scorer, stand_in=stale_stand_in(settings, settings.samples))
        return build_core_arbiter(settings, scorer=scorer, threshold=rule_threshold(settings))
    if settings.scorer == "learned" and settings.arbiter != "shadow":
        # Imported here: onnxruntime loads only for a daemon that uses the learned scorer.
        from router.assembly.learned import build_learned_scorer, build_target_accuracy_threshold

        scorer = build_learned_scorer(settings, model_cache, logger)
        threshold = None
        if settings.threshold == "target_accuracy":
            threshold = build_target_accuracy_threshold(settings, scorer, logger)
        return build_core_arbiter(settings, scorer=scorer, threshold=threshold)
    return build_core_arbiter(settings)


def build_modes(settings: ArbitrationSettings, *, model_cache: ModelCache,
                routing: Optional[RoutingSettings] = None, info: Optional[InfoSettings] = None,
                agent: Optional[AgentSettings] = None, edge_n_ctx: int = 4096, logger: Optional[logging.Logger] = None,
                edge: Optional["EdgeModelIdentity"] = None, auto: Optional[AutoSettings] = None) -> dict[Mode, ModeHandler]:
    """Raises ConfigError for a learned model (deferral or router) or a probe that cannot be used."""
    from router.assembly.probes import EdgeModelIdentity, build_auto_mode
    from router.assembly.routing import build_pre_arbitration

    info = info or InfoSettings()
    routing = routing or RoutingSettings()
    edge = edge or EdgeModelIdentity(EdgeSettings(), model_cache)
    return builtin_modes(build_arbiter(settings, model_cache=model_cache, logger=logger, edge=edge),
                         build_pre_arbitration(routing, model_cache, logger, edge=edge),
                         EdgeRagMode(k=info.k, timeout_s=info.timeout_s, fallback_n_ctx=edge_n_ctx,
                                     answer_style=info.answer_style, focus_sentences=info.focus_sentences),
                         EdgeAgentMode(agent or AgentSettings(), focus_sentences=info.focus_sentences),
                         build_auto_mode(settings, routing, auto or AutoSettings(), edge))
