"""Probes without a model: training on states from a states file, the binding to one edge model file, the
states file's round trip and refusals, AUTO's bands, and what the daemon's assembly does with a probe that
does not fit its edge."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from router.assembly.modes import build_modes
from router.assembly.probes import EdgeModelIdentity, build_draft_probe_scorer
from edge.catalogue import CATALOGUE, ModelCache
from router.core.arbiters.corpus import CorpusRow, TrainingError
from router.core.arbiters.learned import LearnedModelError, gain_to_score
from router.core.probes.auto import AutoBands
from router.core.probes.features import CALLED_FEATURES, DRAFT_PROBE_FEATURE_NAMES
from router.core.probes.model import (DRAFT_PROBE_KIND, PREFILL_PROBE_KIND, EdgeIdentity, ProbeBindingError, ProbeStaleError,
                                      ProbeModel)
from router.core.probes.states_file import HiddenStatesFile, row_key
from router.core.probes.training import train_probe
from router.domain.config import ArbitrationSettings, ConfigError, EdgeSettings, RoutingSettings
from edge.errors import EdgeGenerationError
from router.core.fault_injection import FixedLatencyFaultInjectionBackend
from router.core.modes.base import ModeContext
from router.domain.errors import BackendUnavailableError
from router.domain.pricing import CostModel
from router.domain.types import BackendKind, ChatMessage, GenerateRequest, GenerationParams, Mode, RunPurpose

DIMS = 24
SHA = "a" * 64


def synthetic(n: int = 80, seed: int = 0) -> tuple[list[CorpusRow], HiddenStatesFile]:
    """Rows whose gain only the state carries (along one direction, the largest of its variance), so that a
    probe that reads the state must find it; the features are noise."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=DIMS)
    direction /= np.linalg.norm(direction)
    rows, states = [], HiddenStatesFile(edge_model="test-edge", edge_model_sha256=SHA, layer="final_norm")
    for index in range(n):
        edge_wrong = float(rng.random() < 0.5)
        prompt, draft = rng.normal(size=DIMS), rng.normal(size=DIMS) + 4.0 * edge_wrong * direction
        row = CorpusRow(dataset="gsm8k", item_id=f"i{index}", split="test" if index % 4 == 0 else "train",
                        edge_quality=1.0 - edge_wrong, cloud_quality=1.0,
                        features={name: float(rng.normal()) for name in DRAFT_PROBE_FEATURE_NAMES},
                        rule_score=0.5, text=f"What is {index} plus {index}?")
        rows.append(row)
        states.add(row_key(row.dataset, row.item_id), prompt, draft)
    return rows, states


@pytest.fixture(scope="module")
def draft_probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows, states = synthetic()
    return train_probe(rows, states, tmp_path_factory.mktemp("probes"), kind=DRAFT_PROBE_KIND,
                       provenance={"path": "synthetic"}, components=8)


def test_a_trained_probe_records_its_edge_and_reads_the_state(draft_probe: Path) -> None:
    meta = json.loads((draft_probe / "meta.json").read_text())
    assert meta["kind"] == DRAFT_PROBE_KIND and meta["embedding_dim"] == DIMS
    assert meta["hidden_state"] == {"edge_model": "test-edge", "edge_model_sha256": SHA, "layer": "final_norm",
                                    "at": "draft", "dims": DIMS, "adapter_sha256": ""}
    assert meta["feature_names"] == list(DRAFT_PROBE_FEATURE_NAMES) and not CALLED_FEATURES & set(meta["feature_names"])
    assert meta["onnx_max_abs_difference"] < 1e-4
    # The state carries the label: the probe ranks the held-out rows by it.
    assert meta["metrics"]["learned"]["auc"] > 0.8
    probe = ProbeModel(draft_probe, kind=DRAFT_PROBE_KIND, edge=EdgeIdentity("test-edge", SHA, DIMS))
    rows, states = synthetic()
    gains = [probe.predict_gain(row.features, states.state(row, "draft")) for row in rows if row.split == "test"]
    wrong = [row.edge_quality == 0 for row in rows if row.split == "test"]
    assert np.mean([g for g, w in zip(gains, wrong) if w]) > np.mean([g for g, w in zip(gains, wrong) if not w])


def test_a_probe_refuses_an_edge_it_was_not_trained_for_naming_both(draft_probe: Path) -> None:
    with pytest.raises(ProbeBindingError) as refused:
        ProbeModel(draft_probe, kind=DRAFT_PROBE_KIND, edge=EdgeIdentity("other-edge", "b" * 64, DIMS))
    message = str(refused.value)
    assert "test-edge" in message and SHA in message and "other-edge" in message and "b" * 64 in message
    with pytest.raises(ProbeBindingError, match="reads 24-d states; the edge test-edge has 32"):
        ProbeModel(draft_probe, kind=DRAFT_PROBE_KIND, edge=EdgeIdentity("test-edge", SHA, 32))
    with pytest.raises(LearnedModelError, match="at the draft, where a prefill_probe reads it at the prompt"):
        ProbeModel(draft_probe, kind=PREFILL_PROBE_KIND, edge=EdgeIdentity("test-edge", SHA, DIMS))


def test_a_state_of_the_wrong_length_is_refused_at_prediction(draft_probe: Path) -> None:
    probe = ProbeModel(draft_probe, kind=DRAFT_PROBE_KIND, edge=EdgeIdentity("test-edge", SHA))  # length unknown
    with pytest.raises(ValueError, match="reads 24-d states, got 7"):
        probe.predict_gain({}, np.zeros(7))


def test_training_refuses_rows_without_states_and_an_unknown_kind(tmp_path: Path) -> None:
    rows, states = synthetic(20)
    other = CorpusRow(dataset="gsm8k", item_id="unlabelled", split="train", edge_quality=0, cloud_quality=1,
                      features={}, rule_score=0.5, text="x")
    with pytest.raises(TrainingError, match="1 row\\(s\\), first gsm8k/unlabelled have no hidden state"):
        train_probe([*rows, other], states, tmp_path, kind=DRAFT_PROBE_KIND, provenance={})
    with pytest.raises(TrainingError, match="no probe kind 'middle'"):
        train_probe(rows, states, tmp_path, kind="middle", provenance={})


def test_the_states_file_round_trips_and_refuses_another_models_states(tmp_path: Path) -> None:
    rows, states = synthetic(10)
    path = tmp_path / "states.npz"
    states.save(path)
    again = HiddenStatesFile.load(path)
    assert again.keys == states.keys and again.dims == DIMS and again.edge_model_sha256 == SHA
    np.testing.assert_array_equal(again.state(rows[3], "draft"), states.state(rows[3], "draft"))
    assert again.state(rows[3], "prompt").dtype == np.float32  # stored as float16, read as float32
    with pytest.raises(TrainingError, match="holds final_norm states of test-edge"):
        HiddenStatesFile.open_for(path, edge_model="other", edge_model_sha256="c" * 64, layer="final_norm")
    assert len(HiddenStatesFile.open_for(path, edge_model="test-edge", edge_model_sha256=SHA, layer="final_norm")) == 10
    with pytest.raises(ValueError, match="already in the states file"):
        again.add(again.keys[0], np.zeros(DIMS), np.zeros(DIMS))
    with pytest.raises(TrainingError, match="no states file"):
        HiddenStatesFile.load(tmp_path / "absent.npz")


@pytest.mark.parametrize("score, route", [(0.0, "cloud"), (0.349, "cloud"), (0.35, "cascade"), (0.649, "cascade"),
                                          (0.65, "edge"), (1.0, "edge")])
def test_auto_bands_pick_a_route_by_the_prefill_score(score: float, route: str) -> None:
    assert AutoBands(cloud_below=0.35, edge_above=0.65).route(score) == route


def test_auto_bands_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="cloud_below <= edge_above"):
        AutoBands(cloud_below=0.7, edge_above=0.3)


def test_a_configured_probe_for_another_edge_stops_the_daemon_at_start_up(draft_probe: Path, tmp_path: Path) -> None:
    cache = ModelCache(tmp_path)
    edge = EdgeModelIdentity(EdgeSettings(model="smollm2-135m"), cache)
    with pytest.raises(ConfigError) as refused:
        build_modes(ArbitrationSettings(scorer="probe", probe_dir=draft_probe), model_cache=cache, edge=edge)
    assert "test-edge" in str(refused.value) and "smollm2-135m" in str(refused.value)
    assert CATALOGUE["smollm2-135m"].sha256 in str(refused.value)
    # missing_model = rule: the rule scores, and the decision's scorer says why.
    scorer = build_draft_probe_scorer(ArbitrationSettings(scorer="probe", probe_dir=draft_probe,
                                                          missing_model="rule"), edge)
    assert scorer.name.startswith("rule (no probe: ") and "test-edge" in scorer.name
    with pytest.raises(ConfigError, match="routing.decide_at = prefill"):
        build_modes(ArbitrationSettings(), model_cache=cache, edge=edge,
                    routing=RoutingSettings(decide_at="prefill", probe_dir=draft_probe))


def test_the_shipped_probes_step_aside_on_another_edge(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path)
    edge = EdgeModelIdentity(EdgeSettings(model="smollm2-135m"), cache)
    modes = build_modes(ArbitrationSettings(scorer="probe"), model_cache=cache, edge=edge)
    assert Mode.AUTO not in modes  # AUTO is not served without probes for this edge
    scorer = modes[Mode.POST_ARBITRATION].arbiter.scorer
    assert scorer.name.startswith("rule (no probe: the shipped probe is for another edge model")


def test_the_shipped_probes_fit_the_default_edge(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path)
    modes = build_modes(ArbitrationSettings(scorer="probe"), model_cache=cache,
                        edge=EdgeModelIdentity(EdgeSettings(), cache))
    assert Mode.AUTO in modes
    scorer = modes[Mode.POST_ARBITRATION].arbiter.scorer
    assert scorer.name.startswith("probe ") and scorer.probe.binding.edge_model_sha256 == CATALOGUE[
        EdgeSettings().model].sha256
    assert gain_to_score(0.0) == 0.5


class PrefillFaultInjectionEdge(FixedLatencyFaultInjectionBackend):
    """An edge whose prompt read fails, or hangs until cancelled."""

    def __init__(self, *, hang: bool = False) -> None:
        super().__init__(latency_s=0.0)
        self.hang = hang
        self.reading = asyncio.Event()

    async def read_prompt_state(self, messages):
        self.reading.set()
        if self.hang:
            await asyncio.Event().wait()
        raise EdgeGenerationError("injected prefill fault")


def prefill_context(edge: object) -> ModeContext:
    request = GenerateRequest(messages=(ChatMessage("user", "hi"),), mode=Mode.AUTO, max_tokens=2)
    return ModeContext(request=request, mode=Mode.AUTO, params=GenerationParams(2, 0.0, (), None),
                       backends={BackendKind.EDGE: edge}, costs=CostModel(0.15, 0.6, 1.35e8, 7e-10, 0.15))


async def test_a_failed_or_cancelled_prefill_read_is_still_recorded() -> None:
    failing = prefill_context(PrefillFaultInjectionEdge())
    with pytest.raises(EdgeGenerationError, match="injected prefill fault"):
        await failing.read_prompt_state()
    [run] = failing.runs
    assert (run.purpose, run.finish_reason, run.usage_estimated, run.text) == (RunPurpose.PREFILL, "error", True, "")
    edge = PrefillFaultInjectionEdge(hang=True)
    hanging = prefill_context(edge)
    task = asyncio.create_task(hanging.read_prompt_state())
    await edge.reading.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [run] = hanging.runs
    assert (run.purpose, run.finish_reason) == (RunPurpose.PREFILL, "cancelled")


async def test_an_edge_that_cannot_read_its_states_is_a_typed_error_and_spends_nothing() -> None:
    ctx = prefill_context(FixedLatencyFaultInjectionBackend(latency_s=0.0))
    with pytest.raises(BackendUnavailableError, match="cannot read its hidden states"):
        await ctx.read_prompt_state()
    assert ctx.runs == ()


def test_a_probe_refuses_states_read_with_another_adapter_than_its_own(draft_probe: Path) -> None:
    probe = ProbeModel(draft_probe, kind=DRAFT_PROBE_KIND, edge=EdgeIdentity(name="test-edge", sha256=SHA))
    probe.check_adapter("")  # trained on the base model alone, read on it: fine
    with pytest.raises(ProbeStaleError, match=r"trained on the base model alone, and the edge now runs the adapter "
                                              r"with sha256 abababababab"):
        probe.check_adapter("ab" * 32)


def test_a_logistic_head_exports_to_one_gain_like_output_the_daemon_reads_as_it_reads_ridge(
        tmp_path: Path) -> None:
    """The logistic head classifies "the cloud is strictly better"; its ONNX ends in 2p - 1, one value per
    row, so the daemon's loader and scorer are the same for both heads."""
    from router.core.arbiters.heads import LOGISTIC
    from router.core.arbiters.training import train_from_rows
    from router.core.probes.training import FEATURE_SETS

    rows, states = synthetic()
    directory = train_from_rows(rows, tmp_path, provenance={"path": "synthetic"},
                                feature_set=FEATURE_SETS[DRAFT_PROBE_KIND], components=8,
                                embed_row=lambda row: states.state(row, "draft"), heads=(LOGISTIC,),
                                extra_meta={"hidden_state": {"edge_model": "test-edge", "edge_model_sha256": SHA,
                                                             "layer": "final_norm", "at": "draft", "dims": DIMS}})
    meta = json.loads((directory / "meta.json").read_text())
    assert meta["metrics"]["head"] == LOGISTIC and "LogisticRegression" in meta["regressor"]
    assert meta["onnx_max_abs_difference"] < 1e-4
    probe = ProbeModel(directory, kind=DRAFT_PROBE_KIND, edge=EdgeIdentity(name="test-edge", sha256=SHA))
    test = [row for row in rows if row.split == "test"]
    gains = [probe.predict_gain(row.features, states.state(row, "draft")) for row in test]
    assert all(-1.0 <= gain <= 1.0 for gain in gains)
    # The state carries the label: the cloud-better rows get the higher gains.
    better = [gain for gain, row in zip(gains, test) if row.cloud_quality > row.edge_quality]
    worse = [gain for gain, row in zip(gains, test) if row.cloud_quality <= row.edge_quality]
    assert min(better) > max(worse)


def test_cross_validation_chooses_between_the_heads_by_out_of_fold_auc() -> None:
    from router.core.arbiters.heads import HEADS
    from router.core.arbiters.training import select_model

    rows, states = synthetic(n=120, seed=1)
    x = np.hstack([np.asarray([[row.features[n] for n in DRAFT_PROBE_FEATURE_NAMES] for row in rows]),
                   np.asarray([states.state(row, "draft") for row in rows])])
    y = np.asarray([row.gain for row in rows])
    selection = select_model(x, y, embedded=True, feature_count=len(DRAFT_PROBE_FEATURE_NAMES),
                             component_candidates=(0, 8), heads=HEADS)
    assert set(selection.head_auc) == set(HEADS)
    assert selection.head_auc[selection.head] == max(selection.head_auc.values())
    assert selection.components == 8  # the label is in the state: the features alone cannot rank it
    assert any(key.startswith("head=logistic,") for key in selection.scores)


@pytest.mark.parametrize("settings, kind, value", [
    (ArbitrationSettings(), "fixed", 0.5),  # the default is the probe's operating point: the rule takes its own
    (ArbitrationSettings(fixed_threshold=0.2), "fixed", 0.2),
    (ArbitrationSettings(threshold="target_share", fixed_threshold=0.3), "target_share", 0.3),
    (ArbitrationSettings(threshold="target_share"), "target_share", 0.5),  # starts at the rule's, not the probe's
])
def test_the_rule_standing_in_for_a_stale_probe_takes_its_own_threshold_unless_one_is_configured(
        settings: ArbitrationSettings, kind: str, value: float) -> None:
    from router.assembly.probes import stale_stand_in

    stand_in = stale_stand_in(settings, samples=3)
    assert stand_in.scorer.name == "rule (the probe is stale)" and stand_in.scorer.samples == 3
    assert stand_in.threshold.name == kind and stand_in.threshold.current() == value


def test_a_stale_probe_is_a_scorer_that_steps_aside() -> None:
    from router.core.arbiters.scorers import ScorerStaleError

    assert issubclass(ProbeStaleError, ScorerStaleError)
