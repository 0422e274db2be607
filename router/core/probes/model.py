"""A trained probe: the learned model's ONNX regressor (router/core/arbiters/learned.py), fed the request's
or the draft's features and the edge's hidden state, and bound to the edge model file it was trained on.

meta.json's `hidden_state` says which state the probe reads and of which model:
`{"edge_model": NAME, "edge_model_sha256": HEX, "layer": "final_norm", "at": "prompt" | "draft", "dims": N}`.
A hidden state means nothing to a probe trained on another model's, so a daemon whose edge file has
another SHA-256 refuses the probe at start-up, naming both files.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from router.core.arbiters.learned import META_FILE, LearnedModel, LearnedModelError
from router.core.arbiters.scorers import ScorerStaleError
from router.core.probes.features import DRAFT_PROBE_FEATURE_NAMES, PREFILL_PROBE_FEATURE_NAMES

DRAFT_PROBE_KIND = "draft_probe"      # the draft's state and features -> the gain of asking the cloud (POST)
PREFILL_PROBE_KIND = "prefill_probe"  # the prompt's state and the request's features -> the same gain (PRE, AUTO)
HIDDEN_STATE_KEY = "hidden_state"
STATE_AT = {DRAFT_PROBE_KIND: "draft", PREFILL_PROBE_KIND: "prompt"}
FEATURES_OF = {DRAFT_PROBE_KIND: DRAFT_PROBE_FEATURE_NAMES, PREFILL_PROBE_KIND: PREFILL_PROBE_FEATURE_NAMES}
TRAIN_HINT = ("train one for this edge with `hybrid-router train-probe --corpus CORPUS --states STATES --out DIR` "
              "(docs/probes.md)")


class ProbeBindingError(LearnedModelError):
    """A probe trained for another edge model than the one this daemon runs."""


class ProbeStaleError(ScorerStaleError):
    """The edge runs with another LoRA adapter than the one the probe's states were read with: the states
    moved, so the probe's predictions mean nothing. Raised per decision (the adapter can change while the
    daemon runs); POST_ARBITRATION and AUTO then score with the default rule, and the decision says why."""


@dataclass(frozen=True)
class EdgeIdentity:
    """The edge model a daemon runs, as a probe checks it."""

    name: str
    sha256: str
    n_embd: int = 0  # 0: not known before the model loads; each prediction checks the state's length


@dataclass(frozen=True)
class EdgeBinding:
    edge_model: str
    edge_model_sha256: str
    layer: str
    at: str
    dims: int
    adapter_sha256: str = ""  # the LoRA adapter the states were read with; "" for the base model alone

    def to_meta(self) -> dict[str, object]:
        return {"edge_model": self.edge_model, "edge_model_sha256": self.edge_model_sha256, "layer": self.layer,
                "at": self.at, "dims": self.dims, "adapter_sha256": self.adapter_sha256}


def read_binding(directory: Path, kind: str) -> EdgeBinding:
    path = Path(directory) / META_FILE
    try:
        raw = json.loads(path.read_text())
        binding = raw[HIDDEN_STATE_KEY]
        result = EdgeBinding(edge_model=str(binding["edge_model"]), edge_model_sha256=str(binding["edge_model_sha256"]),
                             layer=str(binding["layer"]), at=str(binding["at"]), dims=int(binding["dims"]),
                             adapter_sha256=str(binding.get("adapter_sha256", "")))
    except FileNotFoundError:
        raise LearnedModelError(path, f"missing; {TRAIN_HINT}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LearnedModelError(path, f"no usable `{HIDDEN_STATE_KEY}` binding ({type(exc).__name__}: {exc}): "
                                      f"not a probe; {TRAIN_HINT}") from None
    if result.at != STATE_AT[kind]:
        raise LearnedModelError(path, f"reads the state at the {result.at}, where a {kind} reads it at the "
                                      f"{STATE_AT[kind]}")
    return result


class ProbeModel:
    """A probe of `kind`, checked against the daemon's edge before anything else is loaded."""

    def __init__(self, directory: Path, *, kind: str, edge: EdgeIdentity) -> None:
        self.directory = Path(directory).expanduser()
        if not self.directory.is_dir():
            raise LearnedModelError(self.directory, f"no such directory; {TRAIN_HINT}")
        self.kind = kind
        self.binding = read_binding(self.directory, kind)
        if not edge.sha256 or self.binding.edge_model_sha256 != edge.sha256:
            raise ProbeBindingError(self.directory / META_FILE,
                                    f"was trained for the edge model {self.binding.edge_model} (sha256 "
                                    f"{self.binding.edge_model_sha256}), and this daemon's edge is {edge.name} "
                                    f"(sha256 {edge.sha256 or 'unknown'}): a probe reads one model's hidden states; "
                                    f"{TRAIN_HINT}")
        if edge.n_embd and self.binding.dims != edge.n_embd:
            raise ProbeBindingError(self.directory / META_FILE,
                                    f"reads {self.binding.dims}-d states; the edge {edge.name} has {edge.n_embd}")
        self.feature_names: Sequence[str] = FEATURES_OF[kind]
        self.model = LearnedModel(self.directory, embedding_dims=(0, self.binding.dims),
                                  feature_names=self.feature_names, kind=kind)

    @property
    def version(self) -> str:
        return self.directory.name

    def check_adapter(self, adapter_sha256: str) -> None:
        """Raises ProbeStaleError unless the states were read with the adapter this probe was trained on."""
        if adapter_sha256 != self.binding.adapter_sha256:
            trained = (f"the adapter with sha256 {self.binding.adapter_sha256[:12]}" if self.binding.adapter_sha256
                       else "the base model alone")
            running = f"the adapter with sha256 {adapter_sha256[:12]}" if adapter_sha256 else "the base model alone"
            raise ProbeStaleError(f"the probe {self.version} was trained on {trained}, and the edge now runs {running}; "
                                  f"{TRAIN_HINT}")

    def predict_gain(self, features: Mapping[str, float], state: np.ndarray) -> float:
        """The expected gain of the cloud's answer over the edge's, in [-1, 1]."""
        row = np.asarray([float(features.get(name, 0.0)) for name in self.feature_names], dtype=np.float32)
        if self.model.meta.embedding_dim:
            state = np.asarray(state, dtype=np.float32).reshape(-1)
            if state.shape[0] != self.model.meta.embedding_dim:
                raise ValueError(f"the probe {self.directory} reads {self.model.meta.embedding_dim}-d states, "
                                 f"got {state.shape[0]}")
            row = np.concatenate([row, state])
        gain = float(self.model.predict_gain(row[None, :])[0])
        if not math.isfinite(gain):
            raise ValueError(f"the probe {self.directory} predicted {gain}")
        return gain
