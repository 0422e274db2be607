"""The learned deferral scorer (features only) deciding real requests, against a fixed threshold or its
calibrated target_accuracy one: the router in this process, the 135M model as the edge and the 135M
stand-in as the cloud. The artifact is trained for real on a small synthetic corpus
(tests/unit/test_learned_arbiter.py and tests/unit/test_target_accuracy.py check the training, the
artifact and its calibration)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pytest

from cloud.standin import StandinServer
from edge.catalogue import ModelCache
from edge.llama_backend import LlamaBackend
from router.assembly.modes import build_modes
from router.core.arbiters.features import as_vector
from router.core.arbiters.learned import LearnedModel, gain_to_score
from router.core.arbiters.thresholds import TargetAccuracyThreshold
from router.core.engine import Backends, Router
from router.domain.config import ArbitrationSettings, ServerSettings
from router.domain.pricing import CostModel
from router.domain.types import ChatMessage, Decision, GenerateRequest, Mode
from tests.integration.conftest import standin_cloud
from tests.unit.test_learned_arbiter import artifact, corpus  # noqa: F401
from tests.unit.test_target_accuracy import uncalibrated

COSTS = CostModel(0.15, 0.6, 1.35e8, 7e-10, 0.15)
REQUEST = GenerateRequest(messages=(ChatMessage("user", "What is the capital of France?"),),
                          mode=Mode.POST_ARBITRATION, max_tokens=4, temperature=0.0)


async def decisions(settings: ArbitrationSettings, cache: ModelCache, edge: LlamaBackend, standin: StandinServer,
                    times: int = 1, request: Optional[GenerateRequest] = None) -> list[Decision]:
    """POST_ARBITRATION's decisions for `times` requests through a router built from `settings`."""
    cloud = standin_cloud(standin)
    router = Router(settings=ServerSettings(), costs=COSTS, modes=build_modes(settings, model_cache=cache),
                    backends=Backends(edge=edge, cloud=cloud), ready=True)
    try:
        return [(await router.generate(request or REQUEST)).decision for _ in range(times)]
    finally:
        await cloud.close()


async def test_the_learned_scorer_decides_and_records_its_prediction(artifact: Path, tmp_path: Path,  # noqa: F811
                                                                   smollm_edge: LlamaBackend,
                                                                   standin: StandinServer) -> None:
    settings = ArbitrationSettings(scorer="learned", model_dir=artifact)
    [decision] = await decisions(settings, ModelCache(tmp_path), smollm_edge, standin)  # no encoder needed
    assert decision.scorer == f"learned {artifact.name}"  # the version, for Stats and the bench
    expected_gain = LearnedModel(artifact).predict_gain(np.asarray([as_vector(decision.features)]))[0]
    assert decision.features["learned_gain"] == pytest.approx(expected_gain, abs=1e-6)
    assert decision.score == pytest.approx(gain_to_score(expected_gain), abs=1e-6)
    assert decision.features["has_verification"] == 1.0  # the features the corpus was recorded with
    assert decision.escalated == (decision.score < settings.fixed_threshold)


@pytest.mark.parametrize("model_dir, why", [(None, "arbitration.model_dir is unset"),
                                            ("absent", "no such directory")])
async def test_missing_model_rule_scores_with_the_rule_and_every_decision_says_so(
        tmp_path: Path, model_dir, why: str, smollm_edge: LlamaBackend, standin: StandinServer) -> None:
    directory = None if model_dir is None else tmp_path / model_dir
    settings = ArbitrationSettings(scorer="learned", model_dir=directory, missing_model="rule")
    for decision in await decisions(settings, ModelCache(tmp_path), smollm_edge, standin, times=2):
        assert decision.scorer.startswith("rule (no learned model: ") and why in decision.scorer
        assert "learned_gain" not in decision.features


async def test_the_router_decides_against_the_calibrated_threshold(artifact: Path, tmp_path: Path,  # noqa: F811
                                                                   smollm_edge: LlamaBackend,
                                                                   standin: StandinServer) -> None:
    settings = ArbitrationSettings(scorer="learned", model_dir=artifact, threshold="target_accuracy",
                                   target_accuracy=0.9)
    expected = TargetAccuracyThreshold.from_calibration(0.9, LearnedModel(artifact).calibration())
    [decision] = await decisions(settings, ModelCache(tmp_path), smollm_edge, standin)
    assert decision.threshold_kind == "target_accuracy" and decision.threshold == expected.value
    assert decision.escalated == (decision.score < expected.value)


async def test_missing_model_rule_falls_back_to_the_fixed_threshold_and_says_why(
        artifact: Path, tmp_path: Path, smollm_edge: LlamaBackend, standin: StandinServer) -> None:  # noqa: F811
    old = uncalibrated(artifact, tmp_path / "old")
    settings = ArbitrationSettings(scorer="learned", model_dir=old, threshold="target_accuracy",
                                   missing_model="rule", fixed_threshold=0.5)
    [decision] = await decisions(settings, ModelCache(tmp_path), smollm_edge, standin)
    assert decision.threshold == 0.5 and decision.threshold_kind.startswith("fixed (no calibration: ")
