"""The learned scorer with the question embedding: trained with the real text encoder, run by the router on
the 135M edge and stand-in; and the trainer's CLI, which loads the encoder before it reads the corpus."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.catalogue import ModelCache
from edge.encoder import EMBEDDING_DIM, ENCODER_MODEL, TextEncoder
from router.assembly.modes import build_arbiter
from router.core.arbiters.features import FEATURE_NAMES, as_vector
from router.core.arbiters.learned import META_FILE, LearnedModel, gain_to_score
from router.core.arbiters.training import train_arbiter
from cloud.standin import StandinServer
from edge.llama_backend import LlamaBackend
from router.doors.cli import main as cli_main
from router.domain.config import ArbitrationSettings, ConfigError
from tests.conftest import models_dir
from tests.integration.test_learned_scorer_routes import REQUEST, decisions
from tests.learned_arbiter_corpus import write_synthetic_corpus
from tests.unit.test_learned_arbiter import corpus  # noqa: F401

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder.from_cache(ModelCache(models_dir()))


@pytest.fixture(scope="module")
def artifact(encoder: TextEncoder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    corpus = write_synthetic_corpus(tmp_path_factory.mktemp("corpus") / "arbitration.jsonl", train=80, test=40,
                                    signal_in_text=True)
    return train_arbiter(corpus, tmp_path_factory.mktemp("models"), encode=lambda text: encoder.encode([text])[0],
                         embedding_model=ENCODER_MODEL)


def test_the_artifact_takes_features_and_embedding(artifact: Path) -> None:
    meta = json.loads((artifact / META_FILE).read_text())
    assert (meta["embedding_dim"], meta["embedding_model"]) == (EMBEDDING_DIM, ENCODER_MODEL)
    # The signal is in the text only: cross-validation keeps some of the embedding, and it ranks.
    assert meta["metrics"]["embedding_components"] > 0 and meta["metrics"]["learned"]["auc"] > 0.9
    assert LearnedModel(artifact).input_width == len(FEATURE_NAMES) + EMBEDDING_DIM
    assert meta["onnx_max_abs_difference"] <= 1e-4


async def test_the_router_scores_with_features_and_the_question_embedding(
        artifact: Path, encoder: TextEncoder, smollm_edge: LlamaBackend, standin: StandinServer) -> None:
    settings = ArbitrationSettings(scorer="learned", model_dir=artifact)
    [decision] = await decisions(settings, ModelCache(models_dir()), smollm_edge, standin)
    assert decision.scorer == f"learned {artifact.name}"  # the version, for Stats and the bench
    row = np.concatenate([np.asarray(as_vector(decision.features), dtype=np.float32),
                          encoder.encode([REQUEST.messages[-1].content])[0]])
    gain = LearnedModel(artifact).predict_gain(row[None, :])[0]
    assert decision.score == pytest.approx(gain_to_score(gain), abs=1e-5)


def test_an_embedding_model_without_the_encoder_file(artifact: Path, tmp_path: Path) -> None:
    empty_cache = ModelCache(tmp_path)
    with pytest.raises(ConfigError, match=f"hybrid-router models pull {ENCODER_MODEL}"):
        build_arbiter(ArbitrationSettings(scorer="learned", model_dir=artifact), model_cache=empty_cache)
    fallback = build_arbiter(ArbitrationSettings(scorer="learned", model_dir=artifact, missing_model="rule"),
                             model_cache=empty_cache)
    assert fallback.scorer.name.startswith("rule (no learned model: ") and ENCODER_MODEL in fallback.scorer.name


def test_train_arbiter_cli_names_features_only_when_the_corpus_has_no_texts(
        corpus: Path,  # noqa: F811
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A corpus exported before lines carried their text: nothing to embed, so nothing is trained.
    untexted = tmp_path / "untexted.jsonl"
    untexted.write_text("".join(json.dumps({k: v for k, v in json.loads(line).items() if k != "text"}) + "\n"
                                for line in corpus.read_text().splitlines()))
    assert cli_main(["train-arbiter", "--corpus", str(untexted), "--out", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert "synthetic:item-0" in error and "--features-only" in error
    assert not (tmp_path / "out").exists()
