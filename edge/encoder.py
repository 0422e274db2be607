"""The text encoder: the multilingual Universal Sentence Encoder (ONNX, 512-d) from the catalogue.

The model takes raw strings: its tokenizer is an onnxruntime-extensions custom op inside the graph,
so that library's custom-ops library is registered before the session is built. The session is
built once per TextEncoder and reused; `encode` is thread-safe (onnxruntime's `run` is).

Used by the learned deferral model (router/core/arbiters/learned.py) to embed the question, and meant to
be reused by PRE_ARBITRATION.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge.catalogue import ModelCache
from edge.errors import EdgeError

ENCODER_MODEL = "use-multilingual-512"
EMBEDDING_DIM = 512
# One thread by default: the encoder runs beside the edge model's decode threads on a small machine.
DEFAULT_THREADS = 1


class EncoderLoadError(EdgeError):
    """The encoder file is present and verified, but onnxruntime could not load or run it."""


class TextEncoder:
    """Strings in, float32 (n, 512) unit vectors out."""

    def __init__(self, path: Path, *, threads: int = DEFAULT_THREADS) -> None:
        self.path = Path(path)
        self._session = _load_session(self.path, threads)
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or inputs[0].type != "tensor(string)":
            raise EncoderLoadError(f"text encoder {self.path} does not take one string tensor "
                                   f"(inputs: {[(i.name, i.type) for i in inputs]}); run "
                                   f"`hybrid-router models pull {ENCODER_MODEL}`")
        self._input_name = inputs[0].name

    @classmethod
    def from_cache(cls, cache: ModelCache, *, name: str = ENCODER_MODEL,
                   threads: int = DEFAULT_THREADS) -> "TextEncoder":
        """The catalogued encoder; ModelMissingError / ModelCorruptError name the pull command."""
        return cls(cache.require(name), threads=threads)

    @property
    def dim(self) -> int:
        return EMBEDDING_DIM

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):  # a lone string would be encoded character by character
            raise TypeError("encode takes a sequence of strings; wrap a single text in a list")
        if not texts:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        (embeddings,) = self._session.run(None, {self._input_name: np.asarray(list(texts), dtype=object)})
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.shape != (len(texts), EMBEDDING_DIM):
            raise EncoderLoadError(f"text encoder {self.path} returned shape {embeddings.shape} for "
                                   f"{len(texts)} texts, expected ({len(texts)}, {EMBEDDING_DIM})")
        return embeddings


def _load_session(path: Path, threads: int):  # -> onnxruntime.InferenceSession
    try:
        import onnxruntime
        import onnxruntime_extensions
    except ImportError as exc:
        raise EncoderLoadError(f"the text encoder needs onnxruntime and onnxruntime-extensions ({exc}); "
                               "reinstall hybrid-router (`pip install -e .`)") from exc
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.register_custom_ops_library(onnxruntime_extensions.get_library_path())
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped exceptions for a bad graph
        raise EncoderLoadError(f"onnxruntime could not load the text encoder {path}: {exc}; run "
                               f"`hybrid-router models verify {ENCODER_MODEL}`, then "
                               f"`hybrid-router models pull {ENCODER_MODEL}`") from exc
