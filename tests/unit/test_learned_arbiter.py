"""The learned deferral scorer, features only: training, the artifact, its validation, and start-up wiring.

Trained for real (scikit-learn, skl2onnx) on a small synthetic corpus in tmp_path. Requests decided by
the scorer, on the 135M model, are in tests/integration/test_learned_scorer_routes.py.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.catalogue import ModelCache
from router.assembly.modes import build_arbiter
from router.core.arbiters.features import FEATURE_NAMES, as_vector
from router.core.arbiters.learned import META_FILE, MODEL_FILE, LearnedModel, LearnedModelError, gain_to_score
from router.core.arbiters.training import TrainingError, deferral_metrics, read_corpus, train_arbiter
from router.doors.cli import main as cli_main
from router.domain.config import ArbitrationSettings, ConfigError, load_settings
from tests.learned_arbiter_corpus import write_synthetic_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_corpus(tmp_path_factory.mktemp("corpus") / "arbitration.jsonl")


@pytest.fixture(scope="module")
def artifact(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_arbiter(corpus, tmp_path_factory.mktemp("models"))


def copy_artifact(artifact: Path, to: Path) -> Path:
    to.mkdir()
    for name in (MODEL_FILE, META_FILE):
        (to / name).write_bytes((artifact / name).read_bytes())
    return to


# -- training ---------------------------------------------------------------------------------------


def test_training_writes_a_versioned_artifact_whose_meta_describes_it(artifact: Path, corpus: Path) -> None:
    assert artifact.name == "v0001" and (artifact / MODEL_FILE).is_file()
    meta = json.loads((artifact / META_FILE).read_text())
    assert meta["version"] == 1 and meta["created_at"]
    assert meta["feature_names"] == list(FEATURE_NAMES) and meta["embedding_dim"] == 0
    assert meta["training_corpus"]["lines"] == 90 and meta["training_corpus"]["path"] == str(corpus)
    assert set(meta["code"]) == {"commit", "dirty"}  # the code that trained it (a checkout: its commit)
    assert len(meta["code"]["commit"]) == 40 and isinstance(meta["code"]["dirty"], bool)  # tests run in a checkout
    assert meta["metrics"]["train_items"] == 60 and meta["metrics"]["test_items"] == 30
    assert meta["onnx_max_abs_difference"] <= 1e-4


def test_the_model_learns_the_signal_and_is_measured_against_the_rule(artifact: Path) -> None:
    metrics = json.loads((artifact / META_FILE).read_text())["metrics"]
    assert metrics["learned"]["auc"] > 0.9
    assert metrics["rule"]["auc"] == pytest.approx(1.0)  # the synthetic rule score is the signal itself
    # So the rule's ranking is the best there is: the model gets most of what it recovers (the most any
    # ranking can recover at 0.5 depends on how many of the 30 test items the edge gets wrong).
    assert metrics["learned"]["gap_recovered_at_0.5"] > 0.8 * metrics["rule"]["gap_recovered_at_0.5"]
    model = LearnedModel(artifact)
    sure, unsure = np.zeros((2, len(FEATURE_NAMES)), dtype=np.float32) + 0.5
    sure[FEATURE_NAMES.index("lp_exp_mean")], unsure[FEATURE_NAMES.index("lp_exp_mean")] = 0.95, 0.05
    gains = model.predict_gain(np.stack([sure, unsure]))
    assert gains[1] > gains[0] + 0.3  # an unsure edge answer gains more from the cloud


def test_the_onnx_model_matches_sklearn_on_the_test_split(artifact: Path, corpus: Path) -> None:
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rows = read_corpus(corpus)
    train = [r for r in rows if r.split == "train"]
    test = [r for r in rows if r.split == "test"]
    alpha = json.loads((artifact / META_FILE).read_text())["metrics"]["ridge_alpha"]
    x_train = np.asarray([as_vector(r.features) for r in train], dtype=np.float32)
    reference = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(x_train, [r.gain for r in train])
    x_test = np.asarray([as_vector(r.features) for r in test], dtype=np.float32)
    np.testing.assert_allclose(LearnedModel(artifact).predict_gain(x_test),
                               np.clip(reference.predict(x_test), -1, 1), atol=1e-4)


def test_every_run_writes_a_new_version_and_never_overwrites(corpus: Path, tmp_path: Path) -> None:
    first = train_arbiter(corpus, tmp_path)
    before = (first / MODEL_FILE).read_bytes(), (first / META_FILE).read_text()
    second = train_arbiter(corpus, tmp_path)
    assert (first.name, second.name) == ("v0001", "v0002")
    assert ((first / MODEL_FILE).read_bytes(), (first / META_FILE).read_text()) == before


def test_deferral_metrics_by_hand() -> None:
    # Items 0 and 1: the cloud is better (gains 1 and 0.5); items 2 and 3: equal. Gap = (1 + 0.5) / 4.
    edge, cloud = [0.0, 0.5, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0]
    perfect = deferral_metrics([0.9, 0.8, 0.1, 0.0], edge, cloud)
    assert perfect["auc"] == 1.0 and perfect["gap_recovered_at_0.5"] == pytest.approx(1.0)
    # Share 0.3 of 4 items escalates 1: item 0, gain 1 of the 1.5 in all.
    assert perfect["gap_recovered_at_0.3"] == pytest.approx(1 / 1.5)
    backwards = deferral_metrics([0.0, 0.1, 0.8, 0.9], edge, cloud)
    assert backwards["auc"] == 0.0 and backwards["gap_recovered_at_0.5"] == pytest.approx(0.0)
    assert deferral_metrics([0.1, 0.2], [1.0, 1.0], [1.0, 1.0]) == {
        "auc": None, "gap_recovered_at_0.3": None, "gap_recovered_at_0.5": None}


def test_a_broken_corpus_line_is_named(tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"dataset": "x", "item_id": "1", "split": "train"}\n')
    with pytest.raises(TrainingError, match=r"c\.jsonl:1: .*edge_quality"):
        train_arbiter(corpus, tmp_path / "out")
    with pytest.raises(TrainingError, match="cannot read the corpus"):
        train_arbiter(tmp_path / "absent.jsonl", tmp_path / "out")


def test_a_corpus_text_holding_unicode_line_separators_is_one_row(corpus: Path, tmp_path: Path) -> None:
    """The corpus is written unescaped, and a question may hold U+2028: the line stays one row."""
    record = json.loads(corpus.read_text(encoding="utf-8").split("\n")[0])
    record["text"] = "How many apples\u2028does Tom have?"
    odd = tmp_path / "odd.jsonl"
    odd.write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
    assert [row.text for row in read_corpus(odd)] == ["How many apples\u2028does Tom have?"]


def test_train_arbiter_cli_prints_the_new_directory(corpus: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["train-arbiter", "--corpus", str(corpus), "--out", str(tmp_path), "--features-only"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == str(tmp_path / "v0001") and LearnedModel(Path(printed)).meta.embedding_dim == 0


def test_importing_the_cli_imports_neither_the_bench_nor_the_trainer() -> None:
    probe = ("import sys, router.doors.cli; loaded = [m for m in sys.modules if m == 'bench' or m.startswith("
             "('bench.', 'sklearn', 'skl2onnx', 'router.core.arbiters.training'))]; print(loaded)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- loading refuses a bad artifact -------------------------------------------------------------------


def test_a_corrupt_model_file_is_refused_by_name(artifact: Path, tmp_path: Path) -> None:
    broken = copy_artifact(artifact, tmp_path / "broken")
    (broken / MODEL_FILE).write_bytes((broken / MODEL_FILE).read_bytes()[:100])
    with pytest.raises(LearnedModelError, match=rf"{MODEL_FILE}: onnxruntime cannot load it") as caught:
        LearnedModel(broken)
    assert caught.value.path == broken / MODEL_FILE


def test_a_model_of_the_wrong_width_is_refused(artifact: Path, tmp_path: Path) -> None:
    wrong = copy_artifact(artifact, tmp_path / "wrong")
    meta = json.loads((wrong / META_FILE).read_text())
    meta["embedding_dim"] = 512  # meta.json now promises features + embedding; the model takes features only
    (wrong / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(LearnedModelError, match=rf"{MODEL_FILE}: input shape .*{len(FEATURE_NAMES)}.* needs "
                                                rf"\[n, {len(FEATURE_NAMES) + 512}\]"):
        LearnedModel(wrong)


@pytest.mark.parametrize("change, message", [
    (lambda meta: meta.pop("version"), "has no `version` field"),
    (lambda meta: meta.update(version=99), "format version 99"),
    (lambda meta: meta.update(feature_names=list(reversed(FEATURE_NAMES))), "feature_names .* differ"),
    (lambda meta: meta.update(embedding_dim=7), "embedding_dim 7"),
])
def test_a_bad_meta_file_is_refused_by_name(artifact: Path, tmp_path: Path, change, message: str) -> None:
    bad = copy_artifact(artifact, tmp_path / "bad")
    meta = json.loads((bad / META_FILE).read_text())
    change(meta)
    (bad / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(LearnedModelError, match=rf"{META_FILE}: {message}"):
        LearnedModel(bad)


def test_the_out_directory_instead_of_a_version_is_explained(artifact: Path) -> None:
    with pytest.raises(LearnedModelError, match="point arbitration.model_dir at one of them, e.g. v0001"):
        LearnedModel(artifact.parent)


# -- start-up and decisions -------------------------------------------------------------------------


@pytest.mark.parametrize("model_dir", [None, "absent"])
def test_no_usable_model_stops_start_up_naming_the_key(tmp_path: Path, model_dir) -> None:
    directory = None if model_dir is None else tmp_path / model_dir
    with pytest.raises(ConfigError, match="arbitration.model_dir") as caught:
        build_arbiter(ArbitrationSettings(scorer="learned", model_dir=directory), model_cache=ModelCache(tmp_path))
    assert 'missing_model = "rule"' in str(caught.value)
    if directory is not None:
        assert str(directory) in str(caught.value)


def test_a_corrupt_model_stops_start_up_naming_the_file(artifact: Path, tmp_path: Path) -> None:
    broken = copy_artifact(artifact, tmp_path / "broken")
    (broken / MODEL_FILE).write_bytes(b"not onnx")
    with pytest.raises(ConfigError, match=rf"arbitration.model_dir = {broken}: .*{MODEL_FILE}: onnxruntime"):
        build_arbiter(ArbitrationSettings(scorer="learned", model_dir=broken), model_cache=ModelCache(tmp_path))


def test_the_settings_accept_the_learned_scorer_from_the_environment(tmp_path: Path) -> None:
    settings = load_settings(None, {"HYBRID_ROUTER_ARBITRATION__SCORER": "learned",
                                    "HYBRID_ROUTER_ARBITRATION__MODEL_DIR": str(tmp_path),
                                    "HYBRID_ROUTER_ARBITRATION__MISSING_MODEL": "rule"})
    assert (settings.arbitration.scorer, settings.arbitration.model_dir) == ("learned", tmp_path)
    with pytest.raises(ConfigError, match="missing_model"):
        load_settings(None, {"HYBRID_ROUTER_ARBITRATION__MISSING_MODEL": "ignore"})


def test_train_arbiter_cli_without_the_train_extra_says_how_to_install_it(corpus: Path, tmp_path: Path) -> None:
    # Fault injection: the [train] extra made unimportable.
    probe = ("import sys; sys.modules['skl2onnx'] = None; from router.doors.cli import main; "
             f"sys.exit(main(['train-arbiter', '--corpus', {str(corpus)!r}, '--out', {str(tmp_path)!r}]))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 1 and "pip install -e '.[train]'" in done.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("gain, score", [(0.0, 0.5), (1.0, 0.0), (-1.0, 1.0), (0.5, 0.25), (3.0, 0.0), (-3.0, 1.0)])
def test_a_gain_becomes_a_score_that_keeps_the_edge_when_high(gain: float, score: float) -> None:
    assert gain_to_score(gain) == pytest.approx(score)


def test_a_fixed_number_of_components_needs_an_encoder_and_is_refused_with_features_only(
        corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from router.core.arbiters.training import select_model

    x, y = np.zeros((40, len(FEATURE_NAMES))), np.zeros(40)
    with pytest.raises(TrainingError, match="cannot keep 8 principal components .*no encoder"):
        select_model(x, y, embedded=False, feature_count=len(FEATURE_NAMES), components=8)
    assert select_model(x, y, embedded=False, feature_count=len(FEATURE_NAMES), components=0).components == 0
    assert cli_main(["train-arbiter", "--corpus", str(corpus), "--out", str(tmp_path), "--features-only",
                     "--embedding-components", "8"]) == 2
    assert "--features-only" in capsys.readouterr().err and not (tmp_path / "v0001").exists()


def test_cross_validation_keeps_a_group_in_one_fold_and_plain_rows_in_shuffled_folds() -> None:
    from router.core.arbiters.training import cross_validation_folds

    groups = [f"squad_passage:article-{i // 4}" for i in range(40)]  # 10 articles of 4 questions
    folds, passed = cross_validation_folds(40, groups)
    assert passed == groups
    for train, held in folds.split(np.zeros((40, 1)), groups=passed):
        assert not {groups[i] for i in train} & {groups[i] for i in held}
    plain, none = cross_validation_folds(40, [f"gsm8k:{i}" for i in range(40)])
    assert none is None and type(plain).__name__ == "KFold"


def test_a_corpus_line_keeps_its_article_as_the_group(tmp_path: Path) -> None:
    line = {"dataset": "squad_passage", "item_id": "q1", "split": "train", "edge_quality": 0.2, "cloud_quality": 0.9,
            "features": {}, "rule_score": 0.5, "text": "Passage: ...", "group": "Super_Bowl_50"}
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(line) + "\n" + json.dumps({**line, "item_id": "q2", "group": None}) + "\n")
    first, second = read_corpus(path)
    assert first.fold_group == "squad_passage:Super_Bowl_50" and second.fold_group == "squad_passage:q2"
