"""Start-up and reload of PRE_ARBITRATION's router: the trained model and its text encoder, or the
default rule when none is configured. A configured model that cannot be used is refused, naming the
key and the file: at start-up a ConfigError, at reload a RouterModelRefusedError (the old router stays)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from edge.catalogue import ModelCache
from edge.encoder import EMBEDDING_DIM, TextEncoder
from edge.errors import EdgeError
from router.core.arbiters import build_threshold
from router.core.arbiters.learned import ROUTER_KIND, LearnedModel, LearnedModelError
from router.assembly.learned import calibrated_threshold
from router.core.arbiters.thresholds import Threshold
from router.core.routing.features import ROUTER_FEATURE_NAMES
from router.core.routing.mode import PreArbitrationMode
from router.core.routing.model import LearnedRouter, RequestRouter, RouterSlot, Routing, RuleRouter
from router.domain.config import ConfigError, EdgeSettings, RoutingSettings
from router.domain.errors import InvalidRequestError

if TYPE_CHECKING:
    from router.assembly.probes import EdgeModelIdentity

class RouterModelRefusedError(InvalidRequestError):
    """A reload named a router model that cannot be used; the router in use stays."""


def load_learned_router(model_dir: Path, cache: ModelCache, *, loaded_encoder: Optional[Any] = None) -> LearnedRouter:
    """Raises LearnedModelError or EdgeError (the encoder file) for a model that cannot be used.
    `loaded_encoder`: one already loaded (the router in use's), so a reload does not load another."""
    model = LearnedModel(model_dir.expanduser(), embedding_dims=(0, EMBEDDING_DIM), feature_names=ROUTER_FEATURE_NAMES,
                         kind=ROUTER_KIND)
    encoder = (loaded_encoder or TextEncoder.from_cache(cache)) if model.meta.embedding_dim else None
    return LearnedRouter(model=model, encoder=encoder)


def build_request_router(settings: RoutingSettings, cache: ModelCache) -> RequestRouter:
    if settings.model_dir is None:
        return RuleRouter("routing.model_dir is unset")
    try:
        return load_learned_router(settings.model_dir, cache)
    except (LearnedModelError, EdgeError) as exc:
        raise ConfigError(f"routing.model_dir = {settings.model_dir}: {exc}; or unset routing.model_dir to route "
                          "with the default rule") from exc


def build_routing_threshold(settings: RoutingSettings, router: RequestRouter,
                            logger: Optional[logging.Logger] = None) -> Threshold:
    if settings.threshold != "target_accuracy":
        return build_threshold(settings)
    assert isinstance(router, LearnedRouter)  # the settings refuse target_accuracy without model_dir
    try:
        points = router.model.calibration()
    except LearnedModelError as exc:
        raise ConfigError(f"routing.threshold = target_accuracy: {exc}; or set routing.threshold to fixed or "
                          "target_share") from exc
    logger = logger or logging.getLogger("hybrid_router.routing")
    return calibrated_threshold(settings.target_accuracy, points, logger, key="routing.target_accuracy")


def build_pre_arbitration(settings: RoutingSettings, cache: ModelCache,
                          logger: Optional[logging.Logger] = None,
                          edge: Optional["EdgeModelIdentity"] = None) -> PreArbitrationMode:
    """Raises ConfigError for a configured router, or prefill probe, that cannot be used."""
    if settings.decide_at == "prefill":
        from router.assembly.probes import EdgeModelIdentity, load_prefill_probe
        from router.core.probes.router import PrefillProbeRouter

        try:
            router: RequestRouter = PrefillProbeRouter(load_prefill_probe(
                settings.probe_dir, edge or EdgeModelIdentity(EdgeSettings(), cache)))
        except LearnedModelError as exc:
            raise ConfigError(f"routing.decide_at = prefill: {exc}; or set routing.decide_at = request") from exc
        # While the probe is stale (the edge runs another adapter than it was trained with), the request's text
        # decides, as under decide_at = request: sending every request to the cloud would be the dearest answer.
        return PreArbitrationMode(RouterSlot(Routing(router, build_threshold(settings))),
                                  stand_in=RouterSlot(request_routing(settings, cache, logger)))
    return PreArbitrationMode(RouterSlot(request_routing(settings, cache, logger)))


def request_routing(settings: RoutingSettings, cache: ModelCache, logger: Optional[logging.Logger] = None) -> Routing:
    """decide_at = request's routing: the trained router (model_dir), else the default rule, at its threshold."""
    router = build_request_router(settings, cache)
    return Routing(router, build_routing_threshold(settings, router, logger))


def load_routing_or_refuse(model_dir: Path, settings: RoutingSettings, cache: ModelCache,
                           in_use: RequestRouter) -> Routing:
    """The router in `model_dir` with its threshold (built as at start-up: under target_accuracy from
    its own calibration), for a reload; RouterModelRefusedError, naming the router that stays, for one
    that cannot be used. Blocking: it builds onnxruntime sessions."""
    if not model_dir.is_absolute():
        raise RouterModelRefusedError(f"the router directory {model_dir} is relative: give an absolute path (the "
                                      f"daemon's working directory is not yours); the router in use "
                                      f"({in_use.name}) stays")
    try:
        router = load_learned_router(model_dir, cache, loaded_encoder=getattr(in_use, "encoder", None))
        return Routing(router, build_routing_threshold(settings, router))
    except (LearnedModelError, EdgeError, ConfigError, OSError, RuntimeError, ValueError) as exc:
        raise RouterModelRefusedError(f"the router in {model_dir} was refused, and the router in use "
                                      f"({in_use.name}) stays: {exc}") from exc
