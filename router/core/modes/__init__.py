"""The mode registry: a new mode is one new module and one line here."""
from __future__ import annotations

from typing import Optional

from router.core.modes.base import ModeHandler
from router.core.modes.post import Arbiter, PostArbitrationMode
from router.core.modes.single import SingleBackendMode
from router.domain.types import BackendKind, Mode


def builtin_modes(arbiter: Optional[Arbiter] = None,
                  pre_arbitration: Optional[ModeHandler] = None,
                  rag: Optional[ModeHandler] = None,
                  agent: Optional[ModeHandler] = None,
                  auto: Optional[ModeHandler] = None) -> dict[Mode, ModeHandler]:
    """Every implemented mode, each given what it depends on: POST_ARBITRATION its arbiter,
    PRE_ARBITRATION its router and threshold, EDGE_RAG_CLOUD_INFO its retrieval settings and
    EDGE_AGENT_CLOUD_INFO its limits (the Info service reaches both through the ModeContext). Defaults: what default settings build, the
    pre-router's default rule included; router/assembly/modes.py builds the configured ones. AUTO is served
    only when given: it needs probes that fit the edge model."""
    from router.core.arbiters import build_arbiter, build_threshold
    from router.core.arbiters.scorers import RULE_THRESHOLD
    from router.core.routing.mode import PreArbitrationMode
    from router.core.routing.model import RouterSlot, Routing, RuleRouter
    from router.core.modes.agent import EdgeAgentMode
    from router.core.modes.rag import EdgeRagMode
    from router.domain.config import AgentSettings, ArbitrationSettings, InfoSettings, RoutingSettings

    if arbiter is None:
        # The probe needs its files, which router/assembly loads: the core's own default is the rule, at the
        # rule's threshold.
        arbiter = build_arbiter(ArbitrationSettings(scorer="rule", fixed_threshold=RULE_THRESHOLD))
    if pre_arbitration is None:
        pre_arbitration = PreArbitrationMode(RouterSlot(Routing(RuleRouter("routing.model_dir is unset"),
                                                                build_threshold(RoutingSettings()))))
    if rag is None:
        info = InfoSettings()
        rag = EdgeRagMode(k=info.k, timeout_s=info.timeout_s)
    if agent is None:
        agent = EdgeAgentMode(AgentSettings())
    handlers: list[ModeHandler] = [
        SingleBackendMode(Mode.EDGE_ONLY, BackendKind.EDGE),
        SingleBackendMode(Mode.CLOUD_ONLY, BackendKind.CLOUD),
        PostArbitrationMode(arbiter),
        pre_arbitration,
        rag,
        agent,
        *([auto] if auto is not None else []),
    ]
    return {handler.mode: handler for handler in handlers}
