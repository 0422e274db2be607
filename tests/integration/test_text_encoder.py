"""The catalogued text encoder (multilingual USE, ONNX) on the real file (pulled by `make test-models`)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edge.catalogue import ModelCache
from edge.encoder import EMBEDDING_DIM, ENCODER_MODEL, TextEncoder
from edge.errors import ModelCorruptError, ModelMissingError
from tests.conftest import models_dir

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder.from_cache(ModelCache(models_dir()))


def test_a_batch_of_strings_becomes_float32_unit_vectors(encoder: TextEncoder) -> None:
    vectors = encoder.encode(["What is 17 * 23?", "Quelle est la capitale de la France ?", ""])
    assert vectors.dtype == np.float32
    assert vectors.shape == (3, EMBEDDING_DIM)
    np.testing.assert_allclose(np.linalg.norm(vectors[:2], axis=1), 1.0, atol=1e-3)


def test_meaning_not_spelling_decides_similarity(encoder: TextEncoder) -> None:
    english, french, unrelated = encoder.encode(
        ["What is the capital of France?", "Quelle est la capitale de la France ?",
         "Add 12 apples to 30 apples."])
    assert float(english @ french) > float(english @ unrelated) + 0.2


def test_encoding_is_deterministic_and_nearly_batch_independent(encoder: TextEncoder) -> None:
    alone = encoder.encode(["a question about tides"])[0]
    np.testing.assert_array_equal(alone, encoder.encode(["a question about tides"])[0])
    # The quantized graph pads a batch to its longest text, which moves a vector by ~0.004 per
    # dimension: the trainer therefore encodes texts one at a time, as the daemon does.
    in_batch = encoder.encode(["something else entirely, and much longer than the other text", "a question about tides"])[1]
    assert float(alone @ in_batch) > 0.99


def test_no_texts_give_an_empty_matrix_and_a_lone_string_is_refused(encoder: TextEncoder) -> None:
    assert encoder.encode([]).shape == (0, EMBEDDING_DIM)
    with pytest.raises(TypeError, match="sequence of strings"):
        encoder.encode("not wrapped")  # type: ignore[arg-type]


def test_a_missing_file_names_the_pull_command(tmp_path: Path) -> None:
    with pytest.raises(ModelMissingError, match=f"hybrid-router models pull {ENCODER_MODEL}"):
        TextEncoder.from_cache(ModelCache(tmp_path))


def test_a_corrupt_file_names_the_pull_command(tmp_path: Path) -> None:
    real = ModelCache(models_dir()).require(ENCODER_MODEL)
    copy = tmp_path / real.name
    shutil.copyfile(real, copy)
    with copy.open("r+b") as f:  # same size, one byte flipped in the middle
        f.seek(copy.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ModelCorruptError, match=f"hybrid-router models pull {ENCODER_MODEL}"):
        TextEncoder.from_cache(ModelCache(tmp_path))
