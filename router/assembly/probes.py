"""Start-up of the probes: which edge model the daemon runs, the probes shipped for the default edge, and
the refusals.

A probe reads one edge model's hidden states. One that the configuration names (`arbitration.probe_dir`,
`routing.probe_dir`) and that was trained for another edge model stops the daemon at start-up, naming both
(for the draft probe, `arbitration.missing_model = "rule"` lets the rule score instead). The probes
shipped with the package (router/assembly/shipped_probes/) are for the default edge model: on another edge they step
aside, the draft probe for the default rule (every decision's scorer says why) and the prefill probe by
leaving AUTO unimplemented and `routing.decide_at = "prefill"` refused.

A probe that fits the edge model goes stale when the edge's LoRA adapter changes under it (its states
moved). Each decision then finds out: POST_ARBITRATION's draft probe steps aside for the default rule (the
arbiter's stand-in), and AUTO lets that cascade decide every request; the decisions say why.
"""
from __future__ import annotations

import hashlib
import logging
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

from edge.catalogue import CATALOGUE, ModelCache
from router.core.arbiters.learned import LearnedModelError
from router.core.arbiters.cascade import StandIn
from router.core.arbiters.scorers import RULE_THRESHOLD, RuleScorer, Scorer
from router.core.arbiters.thresholds import Threshold
from router.core.probes.model import DRAFT_PROBE_KIND, PREFILL_PROBE_KIND, EdgeIdentity, ProbeModel
from router.core.probes.scorer import DraftProbeScorer
from router.domain.config import ArbitrationSettings, AutoSettings, ConfigError, EdgeSettings, RoutingSettings

# Data beside this module (package data): one trained version of each probe, as train-probe wrote it.
if TYPE_CHECKING:
    from router.core.probes.auto import AutoMode

SHIPPED_FOLDER = "shipped_probes"
SHIPPED_DIRECTORY = {DRAFT_PROBE_KIND: "draft", PREFILL_PROBE_KIND: "prefill"}


def shipped_probe_dir(kind: str) -> Path:
    """The probe of `kind` shipped with the package, trained for the default edge model."""
    return Path(__file__).resolve().parent / SHIPPED_FOLDER / SHIPPED_DIRECTORY[kind]


class EdgeModelIdentity:
    """The configured edge model's name and SHA-256, found without loading it: the catalogue's hash for a
    catalogue model, the file's own for an explicit path (read only when a probe asks)."""

    def __init__(self, settings: EdgeSettings, cache: ModelCache) -> None:
        self._settings = settings
        self._cache = cache

    @cached_property
    def identity(self) -> EdgeIdentity:
        settings = self._settings
        if settings.kind == "fault-injection":
            return EdgeIdentity(name="fault-injection", sha256="")
        if settings.model_path is not None:
            path = settings.model_path.expanduser()
            try:
                with path.open("rb") as handle:
                    digest = hashlib.file_digest(handle, "sha256").hexdigest()
            except OSError as exc:
                raise ConfigError(f"edge.model_path = {path}: {exc}") from exc
            return EdgeIdentity(name=path.stem, sha256=digest)
        spec = CATALOGUE.get(settings.model)
        return EdgeIdentity(name=settings.model, sha256=spec.sha256 if spec else "")


def rule_threshold(settings: Union[ArbitrationSettings, AutoSettings]) -> Threshold:
    """The threshold of the rule standing in for the draft probe: the configured one, except that a
    fixed_threshold left at its default (the probe's operating point) becomes the rule's own."""
    from router.core.arbiters import build_threshold

    if "fixed_threshold" in settings.model_fields_set:
        return build_threshold(settings)
    # The default fixed_threshold is the probe's operating point: the rule starts (target_share) or stays
    # (fixed) at its own.
    return build_threshold(settings.model_copy(update={"fixed_threshold": RULE_THRESHOLD}))


def stale_stand_in(settings: Union[ArbitrationSettings, AutoSettings], samples: int) -> StandIn:
    """What scores while the draft probe is stale: the default rule, at its own threshold."""
    return StandIn(RuleScorer(samples=samples, name="rule (the probe is stale)"), rule_threshold(settings))


def build_draft_probe_scorer(settings: ArbitrationSettings, edge: EdgeModelIdentity,
                             logger: Optional[logging.Logger] = None) -> Scorer:
    logger = logger or logging.getLogger("hybrid_router.arbiter")
    configured = settings.probe_dir is not None
    directory = settings.probe_dir.expanduser() if configured else shipped_probe_dir(DRAFT_PROBE_KIND)
    try:
        return DraftProbeScorer(ProbeModel(directory, kind=DRAFT_PROBE_KIND, edge=edge.identity))
    except LearnedModelError as exc:
        if configured and settings.missing_model == "error":
            raise ConfigError(f"arbitration.probe_dir = {settings.probe_dir}: {exc}; or set "
                              "arbitration.missing_model = \"rule\" to score with the default rule") from exc
        why = str(exc) if configured else f"the shipped probe is for another edge model ({exc.problem})"
    logger.warning("no usable draft probe; the default rule scores", extra={"fields": {"why": why}})
    return RuleScorer(samples=settings.samples, name=f"rule (no probe: {why})")


def load_prefill_probe(probe_dir: Optional[Path], edge: EdgeModelIdentity) -> ProbeModel:
    """Raises LearnedModelError (ProbeBindingError for another edge's probe)."""
    directory = probe_dir.expanduser() if probe_dir is not None else shipped_probe_dir(PREFILL_PROBE_KIND)
    return ProbeModel(directory, kind=PREFILL_PROBE_KIND, edge=edge.identity)


def build_auto_mode(arbitration: ArbitrationSettings, routing: RoutingSettings, auto: AutoSettings,
                    edge: EdgeModelIdentity, logger: Optional[logging.Logger] = None) -> Optional["AutoMode"]:
    """AUTO with its two probes, or None (AUTO not served, logged) where the shipped probes do not fit this
    edge. A probe the configuration names that does not fit is a ConfigError."""
    from router.core.arbiters import CascadeArbiter, build_threshold
    from router.core.probes.auto import AutoBands, AutoMode
    from router.core.probes.router import PrefillProbeRouter

    logger = logger or logging.getLogger("hybrid_router.auto")
    probes = []
    for kind, configured, key in ((PREFILL_PROBE_KIND, routing.probe_dir, "routing.probe_dir"),
                                  (DRAFT_PROBE_KIND, arbitration.probe_dir, "arbitration.probe_dir")):
        directory = configured.expanduser() if configured is not None else shipped_probe_dir(kind)
        try:
            probes.append(ProbeModel(directory, kind=kind, edge=edge.identity))
        except LearnedModelError as exc:
            if configured is not None:
                raise ConfigError(f"{key} = {configured} (AUTO): {exc}") from exc
            logger.info("AUTO is not served: the shipped probes are for another edge model",
                        extra={"fields": {"edge": edge.identity.name, "why": exc.problem}})
            return None
    prefill, draft = probes
    cascade = CascadeArbiter(scorer=DraftProbeScorer(draft), threshold=build_threshold(auto),
                             stream_draft=arbitration.stream_draft,
                             stand_in=stale_stand_in(auto, arbitration.samples))
    return AutoMode(PrefillProbeRouter(prefill), AutoBands(auto.cloud_below, auto.edge_above), cascade)
