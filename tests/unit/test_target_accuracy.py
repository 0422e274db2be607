"""threshold = target_accuracy: the calibration table training writes, the threshold chosen from it,
and the start-up wiring (refusals name the key or the file)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.catalogue import ModelCache
from router.assembly.modes import build_arbiter
from router.core.arbiters.learned import META_FILE, LearnedModel
from router.core.arbiters.thresholds import CalibrationPoint, TargetAccuracyThreshold
from router.core.arbiters.training import calibration_points
from router.domain.config import ArbitrationSettings, ConfigError, load_settings
from tests.unit.test_learned_arbiter import artifact, copy_artifact, corpus  # noqa: F401

POINTS = [CalibrationPoint(0.2, 0.1, 0.50), CalibrationPoint(0.4, 0.3, 0.62),
          CalibrationPoint(0.6, 0.5, 0.70), CalibrationPoint(0.8, 0.9, 0.66)]


def test_calibration_points_measure_each_threshold_on_the_items() -> None:
    # Scores 0.1, 0.5, 0.9; the edge is right on the last two, the cloud on the first two.
    points = calibration_points([0.1, 0.5, 0.9], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0])
    third, two_thirds = round(1 / 3, 6), round(2 / 3, 6)
    assert points[:3] == [[0.1, 0.0, two_thirds], [0.5, third, 1.0], [0.9, two_thirds, 1.0]]
    assert points[-1][0] > 1.0 and points[-1][1:] == [1.0, two_thirds]  # every item to the cloud


def test_calibration_points_are_thinned_to_the_cap() -> None:
    scores = [i / 1000 for i in range(1000)]
    assert len(calibration_points(scores, [0.0] * 1000, [1.0] * 1000, max_points=11)) <= 12


@pytest.mark.parametrize("target, threshold", [(0.5, 0.2), (0.6, 0.4), (0.62, 0.4), (0.65, 0.6), (0.7, 0.6)])
def test_the_threshold_is_the_fewest_escalations_that_reach_the_target(target: float, threshold: float) -> None:
    chosen = TargetAccuracyThreshold.from_calibration(target, POINTS)
    assert chosen.value == threshold and chosen.expected is not None and chosen.expected.quality >= target


def test_a_target_no_threshold_reaches_escalates_everything() -> None:
    chosen = TargetAccuracyThreshold.from_calibration(0.9, POINTS)
    assert chosen.expected is None and not chosen.keeps(1.0, chosen.current())


@pytest.mark.parametrize("target", [0.0, -0.1, 1.5])
def test_a_target_outside_the_unit_interval_is_refused(target: float) -> None:
    with pytest.raises(ValueError, match="target accuracy"):
        TargetAccuracyThreshold.from_calibration(target, POINTS)


def test_the_trained_artifact_carries_its_held_out_calibration(artifact: Path) -> None:  # noqa: F811
    calibration = json.loads((artifact / META_FILE).read_text())["calibration"]
    assert calibration["split"] == "test" and calibration["items"] == 30
    points = LearnedModel(artifact).calibration()
    assert points[-1].cloud_share == 1.0 and points[-1].quality == pytest.approx(calibration["cloud_quality"])


def test_target_accuracy_without_the_learned_scorer_is_refused_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "router.toml"
    config.write_text('[arbitration]\nthreshold = "target_accuracy"\nscorer = "rule"\n')
    with pytest.raises(ConfigError, match="arbitration.*target_accuracy needs scorer = learned"):
        load_settings(config, {})


@pytest.mark.parametrize("value", ["0", "1.5"])
def test_a_target_accuracy_out_of_range_is_refused_naming_the_key(tmp_path: Path, value: str) -> None:
    config = tmp_path / "router.toml"
    config.write_text(f"[arbitration]\ntarget_accuracy = {value}\n")
    with pytest.raises(ConfigError, match="arbitration.target_accuracy"):
        load_settings(config, {})


def uncalibrated(artifact: Path, to: Path) -> Path:
    copy = copy_artifact(artifact, to)
    meta = json.loads((copy / META_FILE).read_text())
    meta.pop("calibration")
    (copy / META_FILE).write_text(json.dumps(meta))
    return copy


def test_a_model_without_a_calibration_table_is_refused_naming_the_file(artifact: Path, tmp_path: Path) -> None:  # noqa: F811
    old = uncalibrated(artifact, tmp_path / "old")
    settings = ArbitrationSettings(scorer="learned", model_dir=old, threshold="target_accuracy")
    with pytest.raises(ConfigError, match=rf"target_accuracy: .*{old / META_FILE}.*calibration"):
        build_arbiter(settings, model_cache=ModelCache(tmp_path))
