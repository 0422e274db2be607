"""The probes deciding real requests: the router in this process, the 135M model as the edge (its hidden
states read from the generation that answers) and the 135M stand-in as the cloud. The probes are trained
for real on the 135M model's states of a small labelled set (the edge's own answers, graded), so they are
bound to that model file; tests/unit/test_probes.py checks the training and the binding."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import pytest

from cloud.standin import StandinServer
from edge.catalogue import CATALOGUE, ModelCache
from edge.llama_backend import LlamaBackend
from router.assembly.modes import build_modes
from router.assembly.probes import EdgeModelIdentity
from router.core.arbiters.corpus import CorpusRow
from router.core.arbiters.features import Draft, base_features
from router.core.arbiters.learned import gain_to_score
from router.core.engine import Backends, Router
from router.core.probes.model import DRAFT_PROBE_KIND, PREFILL_PROBE_KIND
from router.core.probes.states_file import HiddenStatesFile, row_key
from router.core.probes.training import train_probe
from router.domain.config import (ArbitrationSettings, AutoSettings, EdgeSettings, RoutingSettings,
                                  ServerSettings)
from router.domain.pricing import CostModel
from router.domain.types import BackendKind, ChatMessage, GenerateRequest, GenerateResult, Mode, RunPurpose
from tests.conftest import TEST_MODEL
from tests.integration.conftest import standin_cloud

COSTS = CostModel(0.15, 0.6, 1.35e8, 7e-10, 0.15)
QUESTION = "What is 7 plus 5? Reply with the number only."


def labelled_answers() -> list[tuple[str, str, float]]:
    """(question, the edge's answer as logged, its quality): sums answered right and wrong."""
    answers = []
    for a in range(2, 14):
        for b in (3, 8):
            right = (a * 7 + b) % 3 != 0
            answers.append((f"What is {a} plus {b}? Reply with the number only.", str(a + b if right else a + b + 1),
                            1.0 if right else 0.0))
    return answers


@pytest.fixture(scope="module")
def probes(smollm_edge: LlamaBackend, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both probes, trained on the 135M model's states of the labelled answers (one prefill each)."""
    states = HiddenStatesFile(edge_model=TEST_MODEL, edge_model_sha256=CATALOGUE[TEST_MODEL].sha256,
                              layer="final_norm")
    rows = []
    for index, (question, answer, quality) in enumerate(labelled_answers()):
        messages = [{"role": "user", "content": question}]
        found = smollm_edge.hidden_states_of(messages, answer)
        row = CorpusRow(dataset="gsm8k", item_id=f"sum-{index}", split="test" if index % 4 == 0 else "train",
                        edge_quality=quality, cloud_quality=1.0, rule_score=0.5, text=question,
                        features=base_features(Draft(messages, answer, (-0.1,) * len(answer), "stop")))
        states.add(row_key(row.dataset, row.item_id), found.prompt, found.draft)
        rows.append(row)
    out = tmp_path_factory.mktemp("probes")
    return {kind: train_probe(rows, states, out / kind, kind=kind, provenance={"path": "labelled sums"}, components=4)
            for kind in (DRAFT_PROBE_KIND, PREFILL_PROBE_KIND)}


async def answer(standin: StandinServer, edge: LlamaBackend, tmp_path: Path, mode: Mode, *,
                 arbitration: Optional[ArbitrationSettings] = None, routing: Optional[RoutingSettings] = None,
                 auto: Optional[AutoSettings] = None) -> GenerateResult:
    cloud = standin_cloud(standin)
    cache = ModelCache(tmp_path)
    modes = build_modes(arbitration or ArbitrationSettings(), model_cache=cache, routing=routing, auto=auto,
                        edge=EdgeModelIdentity(EdgeSettings(model=TEST_MODEL), cache))
    router = Router(settings=ServerSettings(), costs=COSTS, modes=modes, backends=Backends(edge=edge, cloud=cloud),
                    ready=True)
    try:
        return await router.generate(GenerateRequest(messages=(ChatMessage("user", QUESTION),), mode=mode,
                                                     max_tokens=6, temperature=0.0))
    finally:
        await cloud.close()


def purposes(result: GenerateResult) -> list[tuple[BackendKind, str]]:
    return [(run.backend, run.purpose) for run in result.runs]


@pytest.mark.parametrize("threshold, served_by", [(0.0, BackendKind.EDGE), (1.0, BackendKind.CLOUD)])
async def test_the_draft_probe_scores_the_edges_answer_from_its_own_state(
        probes: dict[str, Path], threshold: float, served_by: BackendKind, smollm_edge: LlamaBackend,
        standin: StandinServer, tmp_path: Path) -> None:
    settings = ArbitrationSettings(scorer="probe", probe_dir=probes[DRAFT_PROBE_KIND], fixed_threshold=threshold,
                                   stream_draft=False)
    result = await answer(standin, smollm_edge, tmp_path, Mode.POST_ARBITRATION, arbitration=settings)
    decision = result.decision
    assert decision.scorer == f"probe {probes[DRAFT_PROBE_KIND].name}"
    gain = decision.features["probe_gain"]
    assert -1.0 <= gain <= 1.0 and decision.score == pytest.approx(gain_to_score(gain))
    assert result.served_by == served_by and decision.escalated == (served_by == BackendKind.CLOUD)
    # Scoring asked the edge nothing more: one edge run, and the cloud's when it escalated.
    expected = [(BackendKind.EDGE, RunPurpose.DRAFT if decision.escalated else RunPurpose.ANSWER)]
    assert purposes(result) == expected + ([(BackendKind.CLOUD, RunPurpose.ANSWER)] if decision.escalated else [])


@pytest.mark.parametrize("threshold, served_by", [(0.0, BackendKind.EDGE), (1.0, BackendKind.CLOUD)])
async def test_pre_decides_after_the_prefill_and_the_prefill_is_priced(
        probes: dict[str, Path], threshold: float, served_by: BackendKind, smollm_edge: LlamaBackend,
        standin: StandinServer, tmp_path: Path) -> None:
    routing = RoutingSettings(decide_at="prefill", probe_dir=probes[PREFILL_PROBE_KIND], threshold="fixed",
                              fixed_threshold=threshold)
    result = await answer(standin, smollm_edge, tmp_path, Mode.PRE_ARBITRATION, routing=routing)
    assert result.decision.scorer == f"prefill probe {probes[PREFILL_PROBE_KIND].name}"
    assert result.served_by == served_by
    prefill, answered = result.runs
    assert (prefill.backend, prefill.purpose, prefill.text, prefill.completion_tokens) == (
        BackendKind.EDGE, RunPurpose.PREFILL, "", 0)
    assert prefill.prompt_tokens > 0 and prefill.cost_usd == pytest.approx(COSTS.edge_cost(prefill.prompt_tokens, 0))
    assert (answered.backend, answered.purpose) == (served_by, RunPurpose.ANSWER)
    assert result.cost_usd == pytest.approx(prefill.cost_usd + answered.cost_usd)


@pytest.mark.parametrize("bands, route, served", [
    ((1.0, 1.0), "cloud", [(BackendKind.EDGE, RunPurpose.PREFILL), (BackendKind.CLOUD, RunPurpose.ANSWER)]),
    ((0.0, 0.0), "edge", [(BackendKind.EDGE, RunPurpose.PREFILL), (BackendKind.EDGE, RunPurpose.ANSWER)]),
])
async def test_auto_routes_alone_by_the_prefill_probes_bands(
        probes: dict[str, Path], bands: tuple[float, float], route: str, served: list, smollm_edge: LlamaBackend,
        standin: StandinServer, tmp_path: Path) -> None:
    result = await answer(standin, smollm_edge, tmp_path, Mode.AUTO,
                          arbitration=ArbitrationSettings(probe_dir=probes[DRAFT_PROBE_KIND]),
                          routing=RoutingSettings(probe_dir=probes[PREFILL_PROBE_KIND]),
                          auto=AutoSettings(cloud_below=bands[0], edge_above=bands[1]))
    decision = result.decision
    assert decision.mode == Mode.AUTO and decision.arbiter == "auto" and decision.threshold_kind == f"auto:{route}"
    assert purposes(result) == served and f"the {route} answers alone" in decision.reason
    assert decision.features["auto_route"] == {"edge": 0.0, "cloud": 2.0}[route]


@pytest.mark.parametrize("threshold, escalated", [(0.0, False), (1.0, True)])
async def test_auto_cascades_between_the_bands_on_the_draft_probe(
        probes: dict[str, Path], threshold: float, escalated: bool, smollm_edge: LlamaBackend,
        standin: StandinServer, tmp_path: Path) -> None:
    result = await answer(standin, smollm_edge, tmp_path, Mode.AUTO,
                          arbitration=ArbitrationSettings(probe_dir=probes[DRAFT_PROBE_KIND], stream_draft=False),
                          routing=RoutingSettings(probe_dir=probes[PREFILL_PROBE_KIND]),
                          auto=AutoSettings(cloud_below=0.0, edge_above=1.0, fixed_threshold=threshold))
    decision = result.decision
    assert decision.threshold_kind.startswith("auto:cascade") and decision.features["auto_route"] == 1.0
    assert decision.scorer == f"probe {probes[DRAFT_PROBE_KIND].name}" and "probe_gain" in str(decision.features)
    assert decision.escalated == escalated
    expected = [(BackendKind.EDGE, RunPurpose.PREFILL),
                (BackendKind.EDGE, RunPurpose.DRAFT if escalated else RunPurpose.ANSWER)]
    assert purposes(result) == expected + ([(BackendKind.CLOUD, RunPurpose.ANSWER)] if escalated else [])
    assert result.served_by == (BackendKind.CLOUD if escalated else BackendKind.EDGE)


@pytest.fixture(scope="module")
def adapter_file(smollm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random q/v adapter for the 135M model: any adapter moves the hidden states the probes read."""
    import numpy as np

    from edge.lora_adapter import file_sha256
    from edge.lora_gguf import convert_peft_adapter
    from tests.peft_adapters import peft_config, random_lora, write_peft_adapter

    root = tmp_path_factory.mktemp("probe-adapter")
    shapes = {"self_attn.q_proj": (576, 576), "self_attn.v_proj": (192, 576)}
    peft_dir = write_peft_adapter(root / "peft", peft_config(4, 8, shapes),
                                  random_lora(np.random.default_rng(5), shapes, 30, 4, 0.02))
    return convert_peft_adapter(peft_dir, smollm_path, root / "adapter.gguf", base_name=TEST_MODEL,
                                base_sha256=file_sha256(smollm_path)).path


@pytest.mark.parametrize("mode", [Mode.POST_ARBITRATION, Mode.AUTO])
async def test_probes_trained_on_the_base_model_step_aside_for_the_rule_on_an_edge_running_an_adapter(
        probes: dict[str, Path], adapter_file: Path, mode: Mode, smollm_edge: LlamaBackend,
        standin: StandinServer, tmp_path: Path) -> None:
    """The adapter changes the states the probes read: each refuses, and the default rule scores the draft
    at the threshold the configuration names (0: keep it) instead of sending every request to the cloud. The
    decision says why, and the rule's self-consistency samples are recorded runs."""
    await smollm_edge.use_adapter(adapter_file, name="v0007")
    try:
        result = await answer(standin, smollm_edge, tmp_path, mode,
                              arbitration=ArbitrationSettings(scorer="probe", probe_dir=probes[DRAFT_PROBE_KIND],
                                                              fixed_threshold=0.0, stream_draft=False),
                              routing=RoutingSettings(probe_dir=probes[PREFILL_PROBE_KIND]),
                              auto=AutoSettings(cloud_below=0.0, edge_above=0.0, fixed_threshold=0.0))
    finally:
        await smollm_edge.use_adapter(None)
    decision = result.decision
    assert result.served_by == BackendKind.EDGE and not decision.escalated
    assert decision.scorer == "rule (the probe is stale)" and decision.threshold == 0.0
    assert f"probe {probes[DRAFT_PROBE_KIND].name} steps aside" in decision.reason
    assert "was trained on the base model alone, and the edge now runs the adapter" in decision.reason
    features = {name.removeprefix("draft_"): value for name, value in decision.features.items()}
    assert "probe_gain" not in features
    # The rule asks for samples of an answer that ends in a number: each is a run of its own.
    sampled = any(run.purpose == RunPurpose.SAMPLE for run in result.runs)
    assert sampled == bool(features["has_consistency"])
    assert all(run.model == f"{TEST_MODEL}+lora:v0007" for run in result.runs if run.backend == BackendKind.EDGE)
    if mode == Mode.AUTO:
        assert decision.threshold_kind == "auto:cascade:fixed" and decision.features["auto_route"] == 1.0
        assert f"prefill probe {probes[PREFILL_PROBE_KIND].name} steps aside" in decision.reason


async def test_a_stale_prefill_probe_hands_pre_to_the_request_router(
        probes: dict[str, Path], adapter_file: Path, smollm_edge: LlamaBackend, standin: StandinServer,
        tmp_path: Path) -> None:
    """PRE at prefill with a probe trained on the base model, on an edge running an adapter: the routing that
    decide_at = request would use decides (here the default rule at the configured threshold, 0: keep), where
    before every request went to the cloud. The prefill the probe asked for is still a priced run."""
    await smollm_edge.use_adapter(adapter_file, name="v0007")
    try:
        result = await answer(standin, smollm_edge, tmp_path, Mode.PRE_ARBITRATION,
                              routing=RoutingSettings(decide_at="prefill", probe_dir=probes[PREFILL_PROBE_KIND],
                                                      threshold="fixed", fixed_threshold=0.0))
    finally:
        await smollm_edge.use_adapter(None)
    decision = result.decision
    assert result.served_by == BackendKind.EDGE and not decision.escalated and decision.threshold == 0.0
    assert decision.scorer == "rule (no trained router: routing.model_dir is unset)"
    assert decision.reason.startswith(f"prefill probe {probes[PREFILL_PROBE_KIND].name} steps aside")
    assert "the edge now runs the adapter" in decision.reason
    assert purposes(result) == [(BackendKind.EDGE, RunPurpose.PREFILL), (BackendKind.EDGE, RunPurpose.ANSWER)]
    assert all(run.model == f"{TEST_MODEL}+lora:v0007" and run.cost_usd > 0 for run in result.runs)
