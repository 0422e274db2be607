"""The hidden states of labelled items, beside the corpus: one file per edge model.

An `.npz` with `keys` ("dataset/item_id"), `prompt` and `draft` (float16, one row per key) and the
binding: `edge_model`, `edge_model_sha256`, `layer`. Rebuilt from the labelled answers by one prefill an
item (`python -m bench.hidden_states`), so it is not committed. Written beside the target and renamed,
so a reader sees the old file or the new one, and a relabelling that stops resumes from the last save.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from router.core.arbiters.corpus import CorpusRow, TrainingError


def row_key(dataset: str, item_id: str) -> str:
    return f"{dataset}/{item_id}"


@dataclass
class HiddenStatesFile:
    edge_model: str
    edge_model_sha256: str
    layer: str
    keys: list[str] = field(default_factory=list)
    prompt: list[np.ndarray] = field(default_factory=list)
    draft: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._index = {key: position for position, key in enumerate(self.keys)}

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def dims(self) -> int:
        return int(self.prompt[0].shape[0]) if self.prompt else 0

    def add(self, key: str, prompt: np.ndarray, draft: np.ndarray) -> None:
        if key in self._index:
            raise ValueError(f"{key} is already in the states file")
        self._index[key] = len(self.keys)
        self.keys.append(key)
        self.prompt.append(np.asarray(prompt, dtype=np.float16))
        self.draft.append(np.asarray(draft, dtype=np.float16))

    def state(self, row: CorpusRow, at: str) -> np.ndarray:
        """The row's state at the prompt or the draft, as float32; TrainingError for a row not relabelled."""
        key = row_key(row.dataset, row.item_id)
        position = self._index.get(key)
        if position is None:
            raise TrainingError(f"{key} has no hidden state in the states file: relabel the corpus "
                                "(python -m bench.hidden_states)")
        return np.asarray((self.prompt if at == "prompt" else self.draft)[position], dtype=np.float32)

    def save(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial.npz")
        np.savez(partial, keys=np.array(self.keys, dtype=str), prompt=np.array(self.prompt, dtype=np.float16),
                 draft=np.array(self.draft, dtype=np.float16), edge_model=np.array(self.edge_model),
                 edge_model_sha256=np.array(self.edge_model_sha256), layer=np.array(self.layer))
        partial.replace(path)

    @classmethod
    def load(cls, path: Path) -> "HiddenStatesFile":
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                return cls(edge_model=str(data["edge_model"]), edge_model_sha256=str(data["edge_model_sha256"]),
                           layer=str(data["layer"]), keys=[str(key) for key in data["keys"]],
                           prompt=list(data["prompt"]), draft=list(data["draft"]))
        except FileNotFoundError:
            raise TrainingError(f"no states file at {path}: relabel the corpus (python -m bench.hidden_states)") from None
        except (OSError, ValueError, KeyError) as exc:
            raise TrainingError(f"{path} is not a hidden-states file ({type(exc).__name__}: {exc})") from None

    @classmethod
    def open_for(cls, path: Path, *, edge_model: str, edge_model_sha256: str, layer: str) -> "HiddenStatesFile":
        """The file at `path` to extend, or a new one; refuses a file of another model's states."""
        if not Path(path).exists():
            return cls(edge_model=edge_model, edge_model_sha256=edge_model_sha256, layer=layer)
        found = cls.load(path)
        if (found.edge_model_sha256, found.layer) != (edge_model_sha256, layer):
            raise TrainingError(f"{path} holds {found.layer} states of {found.edge_model} ({found.edge_model_sha256}); "
                                f"this edge is {edge_model} ({edge_model_sha256}): write to another file")
        return found


def missing_rows(rows: list[CorpusRow], states: HiddenStatesFile) -> list[CorpusRow]:
    return [row for row in rows if row_key(row.dataset, row.item_id) not in states]


def first_missing(rows: list[CorpusRow], states: HiddenStatesFile) -> Optional[str]:
    missing = missing_rows(rows, states)
    return None if not missing else f"{len(missing)} row(s), first {row_key(missing[0].dataset, missing[0].item_id)}"
