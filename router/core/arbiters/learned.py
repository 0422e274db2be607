"""The learned deferral scorer: a small ONNX regression model predicts what asking the cloud would gain.

Inputs, in this order: the features of the `all` scorer (FEATURE_NAMES order, features.as_vector),
then, when the artifact was trained with it, the 512-d embedding of the last user message (the text
encoder, edge/encoder.py). Output: the expected gain of the cloud's answer over the edge's, cloud
quality minus edge quality, in [-1, 1]. Score = (1 - gain) / 2, clipped to [0, 1]: no expected gain
scores 0.5, and higher keeps the edge, as for every scorer, so the thresholds work unchanged.

The features are the `all` scorer's (the rule's self-consistency samples and the self-verification
call included), because the labelled corpus the model is trained on was recorded with `all`.

An artifact is a directory written by `hybrid-router train-arbiter` (router/core/arbiters/training.py):
`model.onnx` and `meta.json` (format version, creation time, feature names and order, embedding
dimension, training corpus, metrics). Loading validates both and refuses a bad artifact with a
LearnedModelError naming the file and what is wrong.
"""
from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from router.core.arbiters.features import FEATURE_NAMES, Draft, as_vector
from router.core.arbiters.scorers import DEFAULT_SAMPLES, EdgeCalls, RuleScorer, Score
from router.core.arbiters.thresholds import CalibrationPoint

ARTIFACT_FORMAT_VERSION = 1
MODEL_FILE = "model.onnx"
META_FILE = "meta.json"
INPUT_NAME = "features"
DEFERRAL_KIND = "deferral"   # an edge answer's features -> the gain of asking the cloud (POST_ARBITRATION)
ROUTER_KIND = "router"       # the request's features -> the same gain, before anything is generated (PRE_ARBITRATION)
TRAINERS = MappingProxyType({DEFERRAL_KIND: "`hybrid-router train-arbiter`", ROUTER_KIND: "`hybrid-router train-router`"})
TRAIN_HINT = ("train one with `hybrid-router train-arbiter --corpus bench/corpus/arbitration.jsonl --out DIR` "
              "and set arbitration.model_dir to the directory it prints")
ROUTER_TRAIN_HINT = ("train one with `hybrid-router train-router --corpus bench/corpus/arbitration.jsonl --out DIR` "
                     "and set routing.model_dir to the directory it prints")
TRAIN_HINTS = MappingProxyType({DEFERRAL_KIND: TRAIN_HINT, ROUTER_KIND: ROUTER_TRAIN_HINT})


class LearnedModelError(Exception):
    """A learned-model artifact that cannot be used; the message names the file and what is wrong."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"learned model {self.path}: {problem}")


@dataclass(frozen=True)
class ArtifactMeta:
    version: int
    created_at: str
    feature_names: tuple[str, ...]
    embedding_dim: int
    embedding_model: Optional[str]
    raw: Mapping[str, Any]

    @property
    def input_width(self) -> int:
        return len(self.feature_names) + self.embedding_dim


def read_meta(directory: Path, *, embedding_dims: tuple[int, ...], feature_names: Sequence[str] = FEATURE_NAMES,
              kind: str = DEFERRAL_KIND) -> ArtifactMeta:
    """meta.json, checked against what this build of the router feeds the model: `kind` says which
    model it must be (the deferral model reads an edge answer's features, the pre-router the request's)."""
    path = Path(directory) / META_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        versions = sorted(p.name for p in Path(directory).glob("v[0-9]*") if (p / META_FILE).is_file())
        if versions:  # the --out directory of train-arbiter, not one of the versions it holds
            raise LearnedModelError(path, f"missing; {directory} holds trained versions: point "
                                          f"{'routing' if kind == ROUTER_KIND else 'arbitration'}.model_dir at one of them, "
                                          f"e.g. {versions[-1]}") from None
        raise LearnedModelError(path, f"missing; {TRAIN_HINTS.get(kind, TRAIN_HINT)}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise LearnedModelError(path, f"not readable JSON ({exc}); train the model again") from None
    if not isinstance(raw, dict):
        raise LearnedModelError(path, "not a JSON object; train the model again")
    if "version" not in raw:
        raise LearnedModelError(path, "has no `version` field: not written by `hybrid-router train-arbiter`")
    if raw["version"] != ARTIFACT_FORMAT_VERSION:
        raise LearnedModelError(path, f"format version {raw['version']!r}; this router reads version "
                                      f"{ARTIFACT_FORMAT_VERSION}: train the model again with this version")
    found_kind = raw.get("kind", DEFERRAL_KIND)  # artifacts from before the pre-router are deferral models
    if found_kind != kind:
        raise LearnedModelError(path, f"is a {found_kind!r} model where a {kind!r} model is needed: point the "
                                      f"setting at a model trained by {TRAINERS.get(kind, 'its trainer')}")
    names = raw.get("feature_names")
    if names != list(feature_names):
        raise LearnedModelError(path, f"feature_names {names!r} differ from this router's features "
                                      f"{list(feature_names)!r}: train the model again on a corpus recorded "
                                      "with this version")
    dim = raw.get("embedding_dim")
    if not isinstance(dim, int) or dim not in embedding_dims:
        raise LearnedModelError(path, f"embedding_dim {dim!r}; expected one of {list(embedding_dims)}")
    return ArtifactMeta(version=raw["version"], created_at=str(raw.get("created_at", "")),
                        feature_names=tuple(names), embedding_dim=dim,
                        embedding_model=raw.get("embedding_model"), raw=raw)


class LearnedModel:
    """The ONNX regressor of an artifact directory, validated against its meta.json on load."""

    def __init__(self, directory: Path, *, embedding_dims: tuple[int, ...] = (0, 512),
                 feature_names: Sequence[str] = FEATURE_NAMES, kind: str = DEFERRAL_KIND) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise LearnedModelError(self.directory, f"no such directory; {TRAIN_HINTS.get(kind, TRAIN_HINT)}")
        self.meta = read_meta(self.directory, embedding_dims=embedding_dims, feature_names=feature_names, kind=kind)
        self._session = _load_regressor(self.directory / MODEL_FILE, self.meta.input_width,
                                        TRAIN_HINTS.get(kind, TRAIN_HINT))

    @property
    def input_width(self) -> int:
        return self.meta.input_width

    def calibration(self) -> list[CalibrationPoint]:
        """The held-out calibration table that threshold = target_accuracy reads (training.py writes it)."""
        path = self.directory / META_FILE
        table = self.meta.raw.get("calibration")
        if not table:
            raise LearnedModelError(path, "has no calibration table (trained without a test split, or by an "
                                          "older version): train the model again to use threshold = "
                                          "target_accuracy")
        try:
            points = [CalibrationPoint(float(t), float(c), float(q)) for t, c, q in table["points"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise LearnedModelError(path, f"calibration table unreadable ({exc}); train the model again") from None
        if not points or not all(0 <= p.cloud_share <= 1 and 0 <= p.quality <= 1 for p in points):
            raise LearnedModelError(path, "calibration table empty or out of range; train the model again")
        return points

    def predict_gain(self, rows: np.ndarray) -> np.ndarray:
        """(n, input_width) -> (n,) predicted gains, clipped to [-1, 1]."""
        rows = np.asarray(rows, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.input_width:
            raise ValueError(f"expected rows of {self.input_width} values, got shape {rows.shape}")
        (output,) = self._session.run(None, {self._session.get_inputs()[0].name: rows})[:1]
        return np.clip(np.asarray(output, dtype=np.float64).reshape(len(rows)), -1.0, 1.0)


def _load_regressor(path: Path, width: int, hint: str):  # -> onnxruntime.InferenceSession
    import onnxruntime

    if not path.is_file():
        raise LearnedModelError(path, f"missing; {hint}")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # a linear model: threads would only contend with the edge's
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's errors are untyped
        raise LearnedModelError(path, f"onnxruntime cannot load it ({exc}); train the model again") from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or inputs[0].type != "tensor(float)":
        raise LearnedModelError(path, f"expected one float input, found {[(i.name, i.type) for i in inputs]}")
    shape = inputs[0].shape
    if len(shape) != 2 or shape[1] != width:
        raise LearnedModelError(path, f"input shape {shape}; meta.json needs [n, {width}] "
                                      f"({width} = features + embedding): the model and meta.json do not match")
    if not outputs:
        raise LearnedModelError(path, "the model has no output")
    probe = session.run(None, {inputs[0].name: np.zeros((2, width), dtype=np.float32)})[0]
    if np.asarray(probe).size != 2 or not np.all(np.isfinite(probe)):
        raise LearnedModelError(path, f"expected one finite value per row, got {np.asarray(probe).shape}")
    return session


def gain_to_score(gain: float) -> float:
    """Higher keeps the edge: no expected gain is 0.5, a certain cloud win is 0."""
    return min(1.0, max(0.0, (1.0 - gain) / 2.0))


@dataclass(frozen=True)
class LearnedScorer:
    model: LearnedModel
    encoder: Optional[Any]  # edge.encoder.TextEncoder when the model takes the embedding, else None
    samples: int = DEFAULT_SAMPLES
    name: str = "learned"

    def __post_init__(self) -> None:
        if (self.encoder is None) != (self.model.meta.embedding_dim == 0):
            raise LearnedModelError(self.model.directory / META_FILE,
                                    f"embedding_dim {self.model.meta.embedding_dim} needs "
                                    f"{'a' if self.model.meta.embedding_dim else 'no'} text encoder")

    async def score(self, draft: Draft, calls: EdgeCalls, *, max_tokens: int) -> Score:
        ruled = await RuleScorer(samples=self.samples, verify=True).score(draft, calls, max_tokens=max_tokens)
        # The encoder and the model are CPU work: off the event loop, so other requests keep streaming.
        gain = await asyncio.to_thread(self._predict, ruled.features, draft.question)
        features = {**ruled.features, "rule_score": ruled.value, "learned_gain": gain}
        return Score(gain_to_score(gain), features)

    def _predict(self, features: Mapping[str, float], question: str) -> float:
        row = np.asarray(as_vector(features), dtype=np.float32)
        if self.encoder is not None:
            row = np.concatenate([row, self.encoder.encode([question])[0]])
        gain = float(self.model.predict_gain(row[None, :])[0])
        if not math.isfinite(gain):
            raise ValueError(f"the learned model {self.model.directory} predicted {gain}")
        return gain
