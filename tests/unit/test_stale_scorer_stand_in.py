"""POST_ARBITRATION's cascade when its scorer is stale (a probe trained before the edge's adapter changed):
the stand-in scores against its own threshold; without one, or when the stand-in fails too, the cloud
answers. The path with a real probe and a real adapter is in tests/integration/test_probes_route.py."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pytest

from router.core.arbiters import CascadeArbiter, StandIn
from router.core.arbiters.features import Draft
from router.core.arbiters.scorers import EdgeCalls, LogprobScorer, Score, ScorerError, ScorerStaleError
from router.core.arbiters.thresholds import FixedThreshold
from router.core.engine import Backends, Router
from router.core.fault_injection import FixedLatencyFaultInjectionBackend
from router.core.modes import builtin_modes
from router.domain.config import ServerSettings
from router.domain.pricing import CostModel
from router.domain.types import BackendKind, ChatMessage, GenerateRequest, GenerateResult, Mode

COSTS = CostModel(0.15, 0.6, 1e8, 3e-10, 0.15)


@dataclass
class ScorerFaultInjection:
    """Raises `fault` instead of scoring."""

    fault: Exception
    name: str = "faulty"

    async def score(self, draft: Draft, calls: EdgeCalls, *, max_tokens: int) -> Score:
        raise self.fault


async def answer(arbiter: CascadeArbiter) -> GenerateResult:
    backend = FixedLatencyFaultInjectionBackend(latency_s=0.0)
    router = Router(settings=ServerSettings(), costs=COSTS, modes=builtin_modes(arbiter),
                    backends=Backends(edge=backend, cloud=FixedLatencyFaultInjectionBackend(latency_s=0.0)), ready=True)
    return await router.generate(GenerateRequest(messages=(ChatMessage("user", "hi there"),),
                                                 mode=Mode.POST_ARBITRATION, max_tokens=3))


class NeverKeeps(FixedThreshold):
    """A threshold no score in [0, 1] reaches."""

    def __init__(self) -> None:
        super().__init__(1.0)

    def keeps(self, score: float, threshold: float) -> bool:
        return False


def stale() -> ScorerFaultInjection:
    return ScorerFaultInjection(ScorerStaleError("trained on the base model alone"), name="probe v0009")


@pytest.mark.parametrize("threshold, served_by", [(FixedThreshold(0.0), BackendKind.EDGE),
                                                   (NeverKeeps(), BackendKind.CLOUD)])
async def test_a_stale_scorer_steps_aside_for_its_stand_in_and_its_threshold(threshold: FixedThreshold,
                                                                           served_by: BackendKind) -> None:
    # The arbiter's own threshold would send the edge's answer to the cloud: the stand-in's decides.
    stand_in = StandIn(LogprobScorer(), threshold)
    arbiter = CascadeArbiter(scorer=stale(), threshold=NeverKeeps(), stream_draft=False, stand_in=stand_in)
    result = await answer(arbiter)
    decision = result.decision
    assert result.served_by == served_by and decision.scorer == "logprob"
    assert decision.reason.startswith("probe v0009 steps aside (trained on the base model alone); logprob scored")
    assert "lp_exp_mean" in decision.features and decision.threshold_kind == stand_in.threshold.name


@pytest.mark.parametrize("stand_in", [None, StandIn(ScorerFaultInjection(ScorerError("no samples")), FixedThreshold(0.0))])
async def test_without_a_working_stand_in_a_stale_scorer_sends_the_request_to_the_cloud(
        stand_in: Optional[StandIn]) -> None:
    arbiter = CascadeArbiter(scorer=stale(), threshold=FixedThreshold(0.0), stream_draft=False, stand_in=stand_in)
    result = await answer(arbiter)
    assert result.served_by == BackendKind.CLOUD and result.decision.score is None
    if stand_in is None:
        assert result.decision.scorer == "probe v0009" and "scorer probe v0009 failed (ScorerStaleError" in result.decision.reason
    else:
        assert result.decision.scorer == "faulty"
        assert "probe v0009 steps aside" in result.decision.reason and "scorer faulty failed" in result.decision.reason
