"""A request the breaker's gate let through, whose cloud call the breaker then refuses (another request
took the one trial call, or it opened meanwhile), is answered by the edge under when_open = "degrade",
and fails UNAVAILABLE under "fail": the policy holds in the race too, on the real 135M edge."""
from __future__ import annotations

import pytest

from edge.llama_backend import LlamaBackend
from router.core.breaker import BreakerGuardedBackend, CallOutcome, CloudBreaker
from router.core.engine import Backends, Router
from router.core.modes import builtin_modes
from router.domain.config import BreakerSettings, ServerSettings
from router.domain.errors import BackendUnavailableError
from router.domain.pricing import CostModel
from router.domain.types import BackendKind, ChatMessage, GenerateRequest, Mode
from tests.integration.conftest import standin_cloud

COSTS = CostModel(0.15, 0.6, 1.35e8, 7e-10, 0.15)
REQUEST = GenerateRequest(messages=(ChatMessage("user", "Say hi."),), mode=Mode.CLOUD_ONLY, max_tokens=4,
                          temperature=0.0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _router_with_a_taken_trial(edge: LlamaBackend, standin, when_open: str) -> Router:
    clock = Clock()
    breaker = CloudBreaker(BreakerSettings(failures_to_open=1, cooldown_s=10.0, when_open=when_open), clock=clock)
    breaker.record(breaker.admit(), CallOutcome.FAILURE,
                   "injected: the cloud failed once")
    clock.now = 11.0  # half-open
    breaker.admit()  # another request holds the one trial call
    cloud = BreakerGuardedBackend(standin_cloud(standin), breaker)
    # No gate: the request reaches the cloud call, as one does that passed the gate a moment before.
    return Router(settings=ServerSettings(), costs=COSTS, modes=builtin_modes(),
                  backends=Backends(edge=edge, cloud=cloud), ready=True)


async def test_under_degrade_the_edge_answers_marked_degraded(smollm_edge: LlamaBackend, standin) -> None:
    result = await _router_with_a_taken_trial(smollm_edge, standin, "degrade").generate(REQUEST)
    assert result.served_by == BackendKind.EDGE and result.decision.degraded
    assert "circuit breaker open" in result.decision.reason and result.decision.mode == Mode.CLOUD_ONLY
    assert result.cloud_cost_usd == 0  # the refused call sent nothing


async def test_under_fail_the_request_fails_unavailable(smollm_edge: LlamaBackend, standin) -> None:
    with pytest.raises(BackendUnavailableError, match="circuit breaker is open"):
        await _router_with_a_taken_trial(smollm_edge, standin, "fail").generate(REQUEST)
