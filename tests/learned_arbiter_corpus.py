"""A small synthetic arbitration corpus, in the bench export's format, for the learned-arbiter tests.

The edge is right exactly when its answer's mean token probability is high, and the cloud is always
right: a learnable signal, so a trained model must rank the items, and a broken one cannot.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from router.core.arbiters.features import FEATURE_NAMES


# Two kinds of question for a corpus whose signal is in the text: the edge knows capitals, not sums.
EDGE_KNOWS = "What is the capital of {}?"
EDGE_FAILS = "Work out {} plus {} times {}, step by step."
COUNTRIES = ("France", "Spain", "Italy", "Peru", "Japan", "Chile", "Egypt", "Kenya", "Norway", "Canada")


def synthetic_row(index: int, rng: random.Random, split: str, *, signal_in_text: bool = False) -> dict:
    confidence = rng.random()
    features = {name: rng.random() for name in FEATURE_NAMES}
    if signal_in_text:
        knows = rng.random() < 0.5
        text = (EDGE_KNOWS.format(rng.choice(COUNTRIES)) if knows
                else EDGE_FAILS.format(rng.randint(10, 99), rng.randint(10, 99), rng.randint(2, 9)))
        edge_quality = 1.0 if knows else 0.0
    else:
        features["lp_exp_mean"] = confidence
        text = f"Question item-{index}: what is the answer?"
        edge_quality = 1.0 if confidence > 0.5 else 0.0
    return {"dataset": "synthetic", "item_id": f"item-{index}", "group": f"g{index}", "split": split,
            "text": text,
            "edge_quality": edge_quality, "cloud_quality": 1.0, "features": features,
            "rule_score": confidence, "cloud_usd": 1e-5, "edge_answer_usd": 1e-6}


def write_synthetic_corpus(path: Path, *, train: int = 60, test: int = 30, seed: int = 0,
                           signal_in_text: bool = False) -> Path:
    """signal_in_text: the edge's quality follows the kind of question, and the features are noise."""
    rng = random.Random(seed)
    rows = [synthetic_row(i, rng, "train" if i < train else "test", signal_in_text=signal_in_text)
            for i in range(train + test)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path

