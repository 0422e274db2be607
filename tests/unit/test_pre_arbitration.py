"""PRE_ARBITRATION's router without a model to route to: the default rule, a trained router (trained for real
on a small synthetic corpus), reloading refusals (bad artifacts, the router in use stays) and config.
Requests routed on the 135M edge and stand-in are in tests/integration/test_pre_arbitration_routes.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.catalogue import ModelCache
from router.assembly.routing import RouterModelRefusedError, build_pre_arbitration, load_routing_or_refuse
from router.core.arbiters.corpus import read_corpus
from router.core.arbiters.learned import META_FILE, MODEL_FILE
from router.core.routing.features import ROUTER_FEATURE_NAMES, router_features
from router.core.routing.model import RuleRouter, rule_score
from router.core.routing.training import train_router
from router.core.arbiters.thresholds import TargetAccuracyThreshold
from router.doors.cli import main as cli_main
from router.domain.config import ConfigError, RoutingSettings, load_settings
from router.domain.types import ChatMessage, GenerateRequest, Mode
from tests.learned_arbiter_corpus import write_synthetic_corpus
from tests.unit.test_learned_arbiter import artifact as deferral_artifact  # noqa: F401
from tests.unit.test_learned_arbiter import corpus  # noqa: F401

MATHS = "Tom has 12 apples and buys 30 more at $2 each. How much did he spend in total?"
READING = "Passage: The Amazon is the largest rainforest on Earth.\nQuestion: What is the largest rainforest?"
CAPITAL = "What is the capital of France?"
SUM = "Work out 47 plus 18 times 3, step by step."


def request(text: str, *, max_tokens: int = 4) -> GenerateRequest:
    return GenerateRequest(messages=(ChatMessage("system", "Be brief."), ChatMessage("user", text)),
                           mode=Mode.PRE_ARBITRATION, max_tokens=max_tokens)


@pytest.fixture(scope="module")
def router_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A router trained on questions whose kind decides the edge's quality (capitals right, sums wrong)."""
    path = write_synthetic_corpus(tmp_path_factory.mktemp("corpus") / "c.jsonl", train=120, test=60,
                                  signal_in_text=True)
    return train_router(read_corpus(path), tmp_path_factory.mktemp("routers"), provenance={"path": str(path)})


# -- the default rule --------------------------------------------------------------------------------


def test_the_rule_sends_reading_to_the_cloud_first_then_maths_then_the_rest() -> None:
    assert rule_score(router_features(READING)) < rule_score(router_features(MATHS)) < 0.5
    assert rule_score(router_features(CAPITAL)) == 0.5


def test_router_features_read_only_the_last_user_message() -> None:
    assert set(router_features(MATHS)) == set(ROUTER_FEATURE_NAMES)
    with_system = request(MATHS).messages
    from router.core.routing.features import request_text
    assert request_text([{"role": m.role, "content": m.content} for m in with_system]) == MATHS


# -- a trained router ----------------------------------------------------------------------------------


def test_the_router_artifact_says_what_it_is(router_artifact: Path) -> None:
    meta = json.loads((router_artifact / META_FILE).read_text())
    assert meta["kind"] == "router" and meta["feature_names"] == list(ROUTER_FEATURE_NAMES)
    assert meta["metrics"]["learned"]["auc"] > 0.9 and meta["calibration"]["items"] == 60



def corrupt(artifact: Path, to: Path) -> Path:
    to.mkdir()
    (to / META_FILE).write_bytes((artifact / META_FILE).read_bytes())
    (to / MODEL_FILE).write_bytes(b"not onnx")
    return to


def wrong_width(artifact: Path, to: Path) -> Path:
    to.mkdir()
    (to / MODEL_FILE).write_bytes((artifact / MODEL_FILE).read_bytes())
    meta = json.loads((artifact / META_FILE).read_text())
    meta["feature_names"] = meta["feature_names"][:-1]
    (to / META_FILE).write_text(json.dumps(meta))
    return to


@pytest.mark.parametrize("make_bad, why", [
    (lambda good, deferral, tmp: deferral, "is a 'deferral' model where a 'router' model is needed"),
    (lambda good, deferral, tmp: corrupt(good, tmp / "corrupt"), "onnxruntime cannot load it"),
    (lambda good, deferral, tmp: wrong_width(good, tmp / "narrow"), "feature_names"),
    (lambda good, deferral, tmp: tmp / "absent", "no such directory"),
])
def test_a_bad_artifact_is_refused_and_the_router_in_use_stays(router_artifact: Path, deferral_artifact: Path,  # noqa: F811
                                                               tmp_path: Path, make_bad, why: str) -> None:
    in_use = RuleRouter("routing.model_dir is unset")
    bad = make_bad(router_artifact, deferral_artifact, tmp_path)
    with pytest.raises(RouterModelRefusedError, match=why) as refused:
        load_routing_or_refuse(bad, RoutingSettings(), ModelCache(tmp_path), in_use)
    assert "rule (no trained router" in str(refused.value) and str(bad) in str(refused.value)


@pytest.mark.parametrize("configured", ["models/router/{name}", "~/models/router/{name}"])
async def test_a_reload_without_a_directory_takes_routing_model_dir_as_start_up_read_it(
        router_artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, configured: str) -> None:
    """A relative or ~ routing.model_dir worked at start-up; `hybrid-router reload` with no --model-dir
    must find the same directory, not refuse it as a client's relative path."""
    from router.assembly.daemon import Daemon

    home = tmp_path / "home"
    (home / "models" / "router").mkdir(parents=True)
    (home / "models" / "router" / router_artifact.name).symlink_to(router_artifact, target_is_directory=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(home)
    settings = load_settings(None, {"HYBRID_ROUTER_ROUTING__MODEL_DIR": configured.format(name=router_artifact.name),
                                    "HYBRID_ROUTER_ROUTING__THRESHOLD": "fixed",
                                    "HYBRID_ROUTER_MODELS__CACHE_DIR": str(tmp_path / "cache"),
                                    "HYBRID_ROUTER_LEDGER__ENABLED": "false", "HYBRID_ROUTER_INFO__SERVICE": "off"})
    daemon = Daemon(settings)
    name = f"router {router_artifact.name}"
    assert await daemon.reload_router() == (name, name)


@pytest.mark.parametrize("directory, why", [("relative/v0001", "is relative: give an absolute path"),
                                            ("~nosuchuser/v0001", "is relative")])
def test_a_directory_the_daemon_cannot_resolve_is_refused_not_an_internal_error(tmp_path: Path, directory: str,
                                                                              why: str) -> None:
    with pytest.raises(RouterModelRefusedError, match=why):
        load_routing_or_refuse(Path(directory), RoutingSettings(), ModelCache(tmp_path), RuleRouter("unset"))


def test_a_reload_under_target_accuracy_brings_the_new_models_calibration(router_artifact: Path,
                                                                          tmp_path: Path) -> None:
    settings = RoutingSettings(model_dir=router_artifact, threshold="target_accuracy", target_accuracy=0.9)
    routing = load_routing_or_refuse(router_artifact, settings, ModelCache(tmp_path), RuleRouter("unset"))
    expected = TargetAccuracyThreshold.from_calibration(0.9, routing.router.model.calibration())
    assert routing.threshold.name == "target_accuracy" and routing.threshold.current() == expected.value
    uncalibrated = tmp_path / "old"
    uncalibrated.mkdir()
    (uncalibrated / MODEL_FILE).write_bytes((router_artifact / MODEL_FILE).read_bytes())
    meta = json.loads((router_artifact / META_FILE).read_text())
    meta.pop("calibration")
    (uncalibrated / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(RouterModelRefusedError, match="calibration"):
        load_routing_or_refuse(uncalibrated, settings, ModelCache(tmp_path), routing.router)


# -- configuration and training refusals -----------------------------------------------------------------


def test_an_unusable_router_stops_start_up_naming_the_key_and_the_file(deferral_artifact: Path,  # noqa: F811
                                                                       tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"routing.model_dir = {deferral_artifact}: .*{META_FILE}"):
        build_pre_arbitration(RoutingSettings(model_dir=deferral_artifact), ModelCache(tmp_path))


def test_target_accuracy_without_a_trained_router_is_refused_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "router.toml"
    config.write_text('[routing]\nthreshold = "target_accuracy"\n')
    with pytest.raises(ConfigError, match="routing.*target_accuracy needs model_dir"):
        load_settings(config, {})


def test_train_router_refuses_rows_without_text(corpus: Path, tmp_path: Path,  # noqa: F811
                                                capsys: pytest.CaptureFixture[str]) -> None:
    untexted = tmp_path / "untexted.jsonl"
    untexted.write_text("".join(json.dumps({k: v for k, v in json.loads(line).items() if k != "text"}) + "\n"
                                for line in corpus.read_text().splitlines()))
    assert cli_main(["train-router", "--corpus", str(untexted), "--out", str(tmp_path / "out"),
                     "--features-only"]) == 1
    assert "no request text" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_train_router_cli_prints_the_new_version(corpus: Path, tmp_path: Path,  # noqa: F811
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["train-router", "--corpus", str(corpus), "--out", str(tmp_path), "--features-only"]) == 0
    printed = Path(capsys.readouterr().out.strip())
    assert printed == tmp_path / "v0001" and json.loads((printed / META_FILE).read_text())["kind"] == "router"


async def test_under_decide_at_prefill_a_reload_replaces_the_stand_in_and_the_probe_stays(
        router_artifact: Path, tmp_path: Path) -> None:
    """The prefill probe decides; the trained router stands in while the probe is stale. A reload brings a new
    stand-in: before, it put a text router in the probe's place, and PRE silently decided at request."""
    from router.assembly.daemon import Daemon

    settings = load_settings(None, {"HYBRID_ROUTER_ROUTING__DECIDE_AT": "prefill",
                                    "HYBRID_ROUTER_ROUTING__MODEL_DIR": str(router_artifact),
                                    "HYBRID_ROUTER_ROUTING__THRESHOLD": "fixed",
                                    "HYBRID_ROUTER_MODELS__CACHE_DIR": str(tmp_path / "cache"),
                                    "HYBRID_ROUTER_LEDGER__ENABLED": "false", "HYBRID_ROUTER_INFO__SERVICE": "off"})
    daemon = Daemon(settings)
    handler = daemon.router.modes[Mode.PRE_ARBITRATION]
    probe = handler.slot.current.router
    assert probe.name.startswith("prefill probe ") and handler.stand_in is not None
    stand_in = handler.stand_in.current
    name = f"router {router_artifact.name}"
    assert await daemon.reload_router() == (name, name)
    assert handler.slot.current.router is probe and handler.stand_in.current is not stand_in
