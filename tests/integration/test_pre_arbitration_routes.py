"""PRE_ARBITRATION routing real requests: the router in this process, the 135M model as the edge and the
135M stand-in as the cloud. The default rule, a trained router (trained for real on a small synthetic
corpus, tests/unit/test_pre_arbitration.py), the decision record, a reload while a request is in flight,
and a router that fails at run time (fault injection)."""
from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator

import pytest

from cloud.standin import StandinServer
from edge.catalogue import ModelCache
from edge.llama_backend import LlamaBackend
from router.assembly.modes import build_modes
from router.assembly.routing import load_routing_or_refuse
from router.core.arbiters.thresholds import TargetAccuracyThreshold
from router.core.engine import Backends, Router
from router.core.routing.features import ROUTER_FEATURE_NAMES
from router.core.routing.model import Routing
from router.domain.config import ArbitrationSettings, RoutingSettings, ServerSettings
from router.domain.pricing import CostModel
from router.domain.types import BackendKind, GenerateResult, Mode
from tests.integration.conftest import standin_cloud
from tests.unit.test_pre_arbitration import CAPITAL, MATHS, READING, request, router_artifact  # noqa: F401

COSTS = CostModel(0.15, 0.6, 1.35e8, 7e-10, 0.15)


@pytest.fixture
async def pre_router(smollm_edge: LlamaBackend, standin: StandinServer) -> AsyncIterator:
    """Builds routers on the 135M edge and the stand-in cloud; the cloud's client closes after the test."""
    cloud = standin_cloud(standin)

    def build(routing: RoutingSettings, cache: ModelCache) -> Router:
        return Router(settings=ServerSettings(), costs=COSTS, backends=Backends(edge=smollm_edge, cloud=cloud),
                      ready=True, modes=build_modes(ArbitrationSettings(), model_cache=cache, routing=routing))

    yield build
    await cloud.close()


@pytest.mark.parametrize("text, served", [(MATHS, BackendKind.CLOUD), (READING, BackendKind.CLOUD),
                                          (CAPITAL, BackendKind.EDGE)])
async def test_with_no_trained_router_the_rule_routes_and_the_decision_says_so(
        tmp_path: Path, text: str, served: BackendKind, pre_router) -> None:
    routing = RoutingSettings(threshold="fixed", fixed_threshold=0.5)
    result = await pre_router(routing, ModelCache(tmp_path)).generate(request(text))
    decision = result.decision
    assert result.served_by == served and [run.backend for run in result.runs] == [served]
    assert decision.mode == Mode.PRE_ARBITRATION and decision.arbiter == "pre"
    assert decision.scorer == "rule (no trained router: routing.model_dir is unset)"
    assert decision.threshold == 0.5 and decision.threshold_kind == "fixed"
    assert decision.escalated == (served == BackendKind.CLOUD)
    assert decision.features["decide_ms"] >= 0 and "predicted_gain" in decision.features
    assert set(ROUTER_FEATURE_NAMES) <= set(decision.features)


async def test_a_trained_router_routes_by_what_it_learned(router_artifact: Path, tmp_path: Path,  # noqa: F811
                                                          pre_router) -> None:
    routing = RoutingSettings(model_dir=router_artifact, threshold="fixed", fixed_threshold=0.5)
    router = pre_router(routing, ModelCache(tmp_path))
    knows = await router.generate(request("What is the capital of Peru?"))
    fails = await router.generate(request("Work out 31 plus 77 times 4, step by step."))
    assert knows.decision.scorer == fails.decision.scorer == f"router {router_artifact.name}"
    assert knows.served_by == BackendKind.EDGE and fails.served_by == BackendKind.CLOUD
    assert knows.decision.score > fails.decision.score


async def test_target_accuracy_takes_the_routers_calibration(router_artifact: Path, tmp_path: Path,  # noqa: F811
                                                             pre_router) -> None:
    routing = RoutingSettings(model_dir=router_artifact, threshold="target_accuracy", target_accuracy=0.95)
    decision = (await pre_router(routing, ModelCache(tmp_path)).generate(request(CAPITAL))).decision
    from router.core.arbiters.learned import ROUTER_KIND, LearnedModel
    model = LearnedModel(router_artifact, feature_names=ROUTER_FEATURE_NAMES, kind=ROUTER_KIND)
    expected = TargetAccuracyThreshold.from_calibration(0.95, model.calibration())
    assert decision.threshold_kind == "target_accuracy" and decision.threshold == expected.value


# -- reloading -----------------------------------------------------------------------------------------


async def test_a_reload_is_atomic_and_a_request_in_flight_keeps_its_router(router_artifact: Path,  # noqa: F811
                                                                           tmp_path: Path, pre_router) -> None:
    cache = ModelCache(tmp_path)
    router = pre_router(RoutingSettings(threshold="fixed"), cache)
    slot = router.modes[Mode.PRE_ARBITRATION].slot
    stream = router.stream(request(CAPITAL, max_tokens=6))
    first = await stream.__anext__()  # the request has decided and is generating
    slot.swap(load_routing_or_refuse(router_artifact, RoutingSettings(threshold="fixed"), cache, slot.current.router))
    events = [first] + [event async for event in stream]
    in_flight = events[-1]
    assert isinstance(in_flight, GenerateResult) and in_flight.decision.scorer.startswith("rule (")
    after = await router.generate(request(CAPITAL))
    assert after.decision.scorer == f"router {router_artifact.name}"


class FaultInjectionRouter:
    """A router whose model fails at run time (as a broken onnxruntime session or encoder would)."""

    name = "router v0099"
    version = "v0099"

    def decide(self, messages: object) -> object:
        raise RuntimeError("injected fault: the model session failed")


async def test_a_router_that_fails_at_run_time_sends_the_request_to_the_cloud_and_says_why(tmp_path: Path,
                                                                                          pre_router) -> None:
    router = pre_router(RoutingSettings(threshold="fixed"), ModelCache(tmp_path))
    slot = router.modes[Mode.PRE_ARBITRATION].slot
    slot.swap(Routing(router=FaultInjectionRouter(), threshold=slot.current.threshold))
    result = await router.generate(request(READING))  # the rule would have kept the edge
    assert result.served_by == BackendKind.CLOUD and [run.backend for run in result.runs] == [BackendKind.CLOUD]
    decision = result.decision
    assert decision.escalated and decision.score is None and decision.scorer == "router v0099"
    assert "router v0099 failed (RuntimeError: injected fault" in decision.reason and "cloud answers" in decision.reason
    again = await router.generate(request(READING))  # the daemon keeps serving
    assert again.served_by == BackendKind.CLOUD and again.text
