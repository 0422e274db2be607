"""Where the arbiter draws the line: the edge answer is kept when its score reaches the threshold.

- `fixed`: one score, in [0, 1].
- `target_share`: the threshold is the `share` quantile of the last `window` scores, so that about
  that share of requests go to the cloud, re-calibrated as traffic drifts (RouteLLM's calibration,
  done online). Until `min_samples` scores are seen, `initial` applies.

Scores are observed on the event loop's thread only; no locking.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


class Threshold(Protocol):
    name: str

    def current(self) -> float: ...

    def observe(self, score: float) -> None: ...


@dataclass
class FixedThreshold:
    value: float
    name: str = "fixed"

    def __post_init__(self) -> None:
        if not 0.0 <= self.value <= 1.0:
            raise ValueError(f"a fixed threshold is a score in [0, 1], got {self.value}")

    def current(self) -> float:
        return self.value

    def observe(self, score: float) -> None:
        return None


@dataclass
class TargetShareThreshold:
    share: float
    window: int = 500
    min_samples: int = 20
    initial: float = 0.5
    name: str = "target_share"
    _scores: deque[float] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.share < 1.0:
            raise ValueError(f"target cloud share must be in (0, 1), got {self.share}")
        if self.window < 1 or not 1 <= self.min_samples <= self.window:
            raise ValueError("target_share needs window >= 1 and 1 <= min_samples <= window")
        self._scores = deque(maxlen=self.window)

    def current(self) -> float:
        if len(self._scores) < self.min_samples:
            return self.initial
        return float(np.quantile(np.fromiter(self._scores, float), self.share))

    def observe(self, score: float) -> None:
        self._scores.append(score)
