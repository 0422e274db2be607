"""Where the arbiter draws the line: the edge answer is kept when its score reaches the threshold.

- `fixed`: one score, in [0, 1].
- `target_accuracy`: the lowest threshold (the fewest requests sent to the cloud) whose measured
  quality of what is served, on the learned model's held-out split, reaches the target: a fixed score,
  chosen from the calibration table that `hybrid-router train-arbiter` writes beside the model.
- `target_share`: the threshold is the `share` quantile of the last `window` scores, so that about
  that share of requests go to the cloud, re-calibrated as traffic drifts (RouteLLM's calibration,
  done online). Until `min_samples` scores are seen, `initial` applies. Scorers with few distinct
  values (self-consistency agreement is 0, 1/3, 2/3 or 1) put many requests exactly on the threshold;
  such a tie is escalated with the probability that brings the expected cloud share to `share`, so the
  target holds however coarse the scores are.

Scores are observed on the event loop's thread only; no locking.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Optional, Protocol, Sequence

import random

import numpy as np


class Threshold(Protocol):
    name: str

    def current(self) -> float: ...

    def keeps(self, score: float, threshold: float) -> bool:
        """Whether an edge answer with this score is kept, against `threshold` (a `current()` value)."""
        ...

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

    def keeps(self, score: float, threshold: float) -> bool:
        return score >= threshold

    def observe(self, score: float) -> None:
        return None


@dataclass
class TargetShareThreshold:
    share: float
    window: int = 500
    min_samples: int = 20
    initial: float = 0.5
    name: str = "target_share"
    seed: int | None = None  # for the tie-breaking draws; None: fresh entropy
    _scores: deque[float] = field(init=False, repr=False)
    _random: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.share < 1.0:
            raise ValueError(f"target cloud share must be in (0, 1), got {self.share}")
        if self.window < 1 or not 1 <= self.min_samples <= self.window:
            raise ValueError("target_share needs window >= 1 and 1 <= min_samples <= window")
        self._scores = deque(maxlen=self.window)
        self._random = random.Random(self.seed)

    def current(self) -> float:
        if len(self._scores) < self.min_samples:
            return self.initial
        return float(np.quantile(np.fromiter(self._scores, float), self.share))

    def keeps(self, score: float, threshold: float) -> bool:
        if score != threshold or len(self._scores) < self.min_samples:
            return score >= threshold
        below = sum(1 for recent in self._scores if recent < threshold) / len(self._scores)
        tied = sum(1 for recent in self._scores if recent == threshold) / len(self._scores)
        escalate_tie = min(1.0, max(0.0, (self.share - below) / tied)) if tied else 0.0
        return self._random.random() >= escalate_tie

    def observe(self, score: float) -> None:
        self._scores.append(score)


@dataclass(frozen=True)
class CalibrationPoint:
    """On held-out items: keeping the edge at score >= threshold sends cloud_share of them to the cloud
    and serves answers of mean quality `quality`."""

    threshold: float
    cloud_share: float
    quality: float


@dataclass(frozen=True)
class TargetAccuracyThreshold:
    target: float
    value: float
    expected: Optional[CalibrationPoint]  # None: no threshold reaches the target; every answer escalates
    name: str = "target_accuracy"

    @classmethod
    def from_calibration(cls, target: float, points: Sequence[CalibrationPoint]) -> "TargetAccuracyThreshold":
        if not 0.0 < target <= 1.0:
            raise ValueError(f"a target accuracy is a quality in (0, 1], got {target}")
        if not points:
            raise ValueError("target_accuracy needs a calibration table with at least one point")
        reaching = [point for point in points if point.quality >= target]
        if not reaching:
            # Above what even the cloud reached on held-out items: the closest is to ask it every time.
            return cls(target=target, value=math.nextafter(1.0, math.inf), expected=None)
        best = min(reaching, key=lambda point: (point.cloud_share, point.threshold))
        return cls(target=target, value=best.threshold, expected=best)

    def current(self) -> float:
        return self.value

    def keeps(self, score: float, threshold: float) -> bool:
        return score >= threshold

    def observe(self, score: float) -> None:
        return None
