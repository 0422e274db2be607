"""PRE_ARBITRATION when its router is stale (a prefill probe trained before the edge's adapter changed): the
stand-in routes against its own threshold; without one, or when it fails too, the cloud answers. The path with a
real probe and a real adapter is in tests/integration/test_probes_route.py."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pytest

from router.core.arbiters.scorers import ScorerStaleError
from router.core.arbiters.thresholds import FixedThreshold, TargetShareThreshold
from router.core.engine import Backends, Router
from router.core.fault_injection import FixedLatencyFaultInjectionBackend
from router.core.modes import builtin_modes
from router.core.routing.mode import PreArbitrationMode
from router.core.routing.model import RouterSlot, Routing, RuleRouter
from router.domain.config import ServerSettings
from router.domain.pricing import CostModel
from router.domain.types import BackendKind, ChatMessage, GenerateRequest, GenerateResult, Mode

COSTS = CostModel(0.15, 0.6, 1e8, 3e-10, 0.15)


@dataclass
class RouterFaultInjection:
    """Raises `fault` instead of routing."""

    fault: Exception
    name: str = "prefill probe v0009"

    def decide(self, messages):
        raise self.fault


def stale() -> RouterFaultInjection:
    return RouterFaultInjection(ScorerStaleError("trained on the base model alone"))


async def answer(mode: PreArbitrationMode) -> GenerateResult:
    router = Router(settings=ServerSettings(), costs=COSTS, modes=builtin_modes(pre_arbitration=mode),
                    backends=Backends(edge=FixedLatencyFaultInjectionBackend(latency_s=0.0),
                                      cloud=FixedLatencyFaultInjectionBackend(latency_s=0.0)), ready=True)
    return await router.generate(GenerateRequest(messages=(ChatMessage("user", "What is 2 + 2?"),),
                                                 mode=Mode.PRE_ARBITRATION, max_tokens=3))


@pytest.mark.parametrize("keep_at, served_by", [(0.0, BackendKind.EDGE), (1.0, BackendKind.CLOUD)])
async def test_a_stale_router_steps_aside_for_its_stand_in_at_the_stand_ins_threshold(
        keep_at: float, served_by: BackendKind) -> None:
    # The probe's own threshold would keep everything on the edge: the stand-in's decides.
    probes_threshold = TargetShareThreshold(share=0.5, initial=0.0, seed=0)
    stand_in = Routing(RuleRouter("routing.model_dir is unset"), FixedThreshold(keep_at))
    mode = PreArbitrationMode(RouterSlot(Routing(stale(), probes_threshold)), stand_in=RouterSlot(stand_in))
    result = await answer(mode)
    decision = result.decision
    assert result.served_by == served_by and decision.escalated == (served_by == BackendKind.CLOUD)
    assert decision.scorer == "rule (no trained router: routing.model_dir is unset)"
    assert decision.threshold == keep_at and decision.threshold_kind == "fixed"
    assert decision.reason.startswith("prefill probe v0009 steps aside (trained on the base model alone); rule")
    assert list(probes_threshold._scores) == []  # the stand-in's scores do not move the probe's share


async def test_the_stand_in_s_scores_feed_its_own_target_share() -> None:
    probes_threshold, stand_ins = (TargetShareThreshold(share=0.5, seed=0) for _ in range(2))
    mode = PreArbitrationMode(RouterSlot(Routing(stale(), probes_threshold)),
                              stand_in=RouterSlot(Routing(RuleRouter("unset"), stand_ins)))
    await answer(mode)
    assert len(stand_ins._scores) == 1 and len(probes_threshold._scores) == 0


@pytest.mark.parametrize("stand_in", [None, RouterFaultInjection(RuntimeError("encoder gone"), name="router v0003")])
async def test_without_a_working_stand_in_a_stale_router_sends_the_request_to_the_cloud(
        stand_in: Optional[RouterFaultInjection]) -> None:
    slot = None if stand_in is None else RouterSlot(Routing(stand_in, FixedThreshold(0.0)))
    result = await answer(PreArbitrationMode(RouterSlot(Routing(stale(), FixedThreshold(0.0))), stand_in=slot))
    decision = result.decision
    assert result.served_by == BackendKind.CLOUD and decision.score is None and decision.escalated
    if stand_in is None:
        assert decision.reason == ("prefill probe v0009 failed (ScorerStaleError: trained on the base model alone); "
                                   "the cloud answers")
    else:
        assert decision.reason == ("prefill probe v0009 steps aside (trained on the base model alone); router v0003 "
                                   "failed (RuntimeError: encoder gone); the cloud answers")
