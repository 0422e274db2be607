"""A small synthetic arbitration corpus, in the bench export's format, for the learned-arbiter tests.

The edge is right exactly when its answer's mean token probability is high, and the cloud is always
right: a learnable signal, so a trained model must rank the items, and a broken one cannot.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from router.core.arbiters.features import FEATURE_NAMES


def synthetic_row(index: int, rng: random.Random, split: str) -> dict:
    confidence = rng.random()
    features = {name: rng.random() for name in FEATURE_NAMES}
    features["lp_exp_mean"] = confidence
    edge_quality = 1.0 if confidence > 0.5 else 0.0
    return {"dataset": "synthetic", "item_id": f"item-{index}", "group": f"g{index}", "split": split,
            "text": f"Question item-{index}: what is the answer?",
            "edge_quality": edge_quality, "cloud_quality": 1.0, "features": features,
            "rule_score": confidence, "cloud_usd": 1e-5, "edge_answer_usd": 1e-6}


def write_synthetic_corpus(path: Path, *, train: int = 60, test: int = 30, seed: int = 0) -> Path:
    rng = random.Random(seed)
    rows = [synthetic_row(i, rng, "train" if i < train else "test") for i in range(train + test)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path

