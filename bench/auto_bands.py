"""AUTO's bands, chosen on the train split without looking at the test split.

The probes were fitted on the train split, so their own scores there are in-sample and flatter them. Here
each probe's pipeline (its meta.json's components and ridge alpha) is refitted fold by fold, grouped as in
training, and every train item is scored by the fold that did not see it. On those out-of-fold scores, a
grid of bands (the prefill score's quantiles) is tried, and the bands with the highest APGR on the mixed
train subset win. Evaluate them on the test split with `python -m bench.arbitration evaluate --auto-bands`.

    .venv/bin/python -m bench.auto_bands --probe DIR --prefill-probe DIR --states bench/out/hidden_states.npz

Also the operating point the defaults ship with: the draft probe's threshold that sends about 30% of the
items (of AUTO's cascaded items) to the cloud, on the same out-of-fold scores.

Writes bench/results/arbitration/auto_bands.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from sklearn.model_selection import GroupKFold, cross_val_predict

from bench.arbitration import MIXED, build_subsets, curve_metrics, escalation_curve, load_corpus
from router.core.arbiters.corpus import read_corpus
from router.core.arbiters.learned import gain_to_score
from router.core.arbiters.heads import RIDGE, build_model, target
from router.core.arbiters.training import CV_FOLDS
from router.core.probes.model import DRAFT_PROBE_KIND, PREFILL_PROBE_KIND, STATE_AT
from router.core.probes.states_file import HiddenStatesFile
from router.core.probes.training import FEATURE_SETS

CLOUD_QUANTILES = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)
EDGE_QUANTILES = (1.0, 0.95, 0.9, 0.85, 0.8, 0.7)
ABOVE_EVERY_SCORE = 1.000001
# The cloud share the shipped defaults aim at: the probe's CPT(50%) on the train split is about there, so
# half the gap is recovered for about a third of the cloud's spend.
OPERATING_SHARE = 0.3


def out_of_fold_scores(rows, states: HiddenStatesFile, probe_dir: Path, kind: str) -> np.ndarray:
    meta = json.loads((probe_dir / "meta.json").read_text())
    features = FEATURE_SETS[kind]
    at = STATE_AT[kind]
    x = np.hstack([np.asarray([[float(features.of(row).get(name, 0.0)) for name in features.names] for row in rows],
                              dtype=np.float32),
                   np.asarray([states.state(row, at) for row in rows], dtype=np.float32)])
    components = int(meta["metrics"]["embedding_components"])
    if not components:
        x = x[:, :len(features.names)]
    metrics = meta["metrics"]
    head = metrics.get("head", RIDGE)
    alpha = float(metrics["ridge_alpha"]) if head == RIDGE else 1.0 / float(metrics["logistic_c"])
    model = build_model(head, components, alpha, x.shape[1], len(features.names))
    predicted = cross_val_predict(model, x, target(head, np.asarray([row.gain for row in rows])),
                                  cv=GroupKFold(n_splits=CV_FOLDS), groups=[row.fold_group for row in rows],
                                  method="predict" if head == RIDGE else "predict_proba")
    gains = predicted if head == RIDGE else 2.0 * predicted[:, 1] - 1.0
    return np.asarray([gain_to_score(float(gain)) for gain in np.clip(gains, -1, 1)])


def auto_ranking(prefill: np.ndarray, draft: np.ndarray, cloud_below: float, edge_above: float) -> np.ndarray:
    """As bench.arbitration scores AUTO: the cloud band first, the cascade by the draft's score, the edge band."""
    return np.where(prefill < cloud_below, prefill - 2.0, np.where(prefill >= edge_above, prefill + 2.0, draft))


def choose(corpus: Path, states_path: Path, draft_dir: Path, prefill_dir: Path, *, seed: int = 0) -> dict:
    states = HiddenStatesFile.load(states_path)
    rows = [row for row in read_corpus(corpus) if row.split == "train"]
    raw = {(row["dataset"], row["item_id"]): row for row in load_corpus(corpus)[0] if row["split"] == "train"}
    draft = out_of_fold_scores(rows, states, draft_dir, DRAFT_PROBE_KIND)
    prefill = out_of_fold_scores(rows, states, prefill_dir, PREFILL_PROBE_KIND)
    position = {(row.dataset, row.item_id): index for index, row in enumerate(rows)}
    mixed = build_subsets([raw[(row.dataset, row.item_id)] for row in rows], seed=seed)[MIXED].rows
    picked = np.asarray([position[(row["dataset"], row["item_id"])] for row in mixed])
    edge = np.asarray([row["edge_quality"] for row in mixed])
    cloud = np.asarray([row["cloud_quality"] for row in mixed])
    grid = []
    for cloud_quantile in CLOUD_QUANTILES:
        for edge_quantile in EDGE_QUANTILES:
            cloud_below = float(np.quantile(prefill, cloud_quantile)) if cloud_quantile > 0 else 0.0
            edge_above = float(np.quantile(prefill, edge_quantile)) if edge_quantile < 1 else ABOVE_EVERY_SCORE
            ranking = auto_ranking(prefill[picked], draft[picked], cloud_below, edge_above)
            metrics = curve_metrics(escalation_curve(ranking, edge, cloud))
            grid.append({"cloud_quantile": cloud_quantile, "edge_quantile": edge_quantile,
                         "cloud_below": round(cloud_below, 4), "edge_above": round(min(edge_above, 1.0), 4), **metrics})
    draft_only = curve_metrics(escalation_curve(draft[picked], edge, cloud))
    prefill_only = curve_metrics(escalation_curve(prefill[picked], edge, cloud))
    best = max(grid, key=lambda point: (point["apgr"], -point["cloud_quantile"], point["edge_quantile"]))
    # The operating point: the draft probe's threshold that sends about OPERATING_SHARE of the cascaded
    # train items to the cloud, out of fold (the daemon's fixed thresholds, POST's and AUTO's cascade).
    cascaded = (prefill >= best["cloud_below"]) & (prefill < best["edge_above"])
    best["fixed_threshold"] = round(float(np.quantile(draft[cascaded], OPERATING_SHARE)), 4)
    post_threshold = round(float(np.quantile(draft, OPERATING_SHARE)), 4)
    return {"train_items": len(rows), "mixed_train_items": len(mixed), "operating_share": OPERATING_SHARE,
            "post_fixed_threshold": post_threshold, "out_of_fold": {
        "probe": draft_only, "pre:probe": prefill_only}, "grid": grid, "best": best,
            "probes": {"draft": draft_dir.as_posix(), "prefill": prefill_dir.as_posix()}, "states": states_path.name}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.auto_bands", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path("bench/corpus/arbitration.jsonl"))
    parser.add_argument("--states", type=Path, required=True)
    parser.add_argument("--probe", type=Path, required=True, help="the draft probe (train-probe --at draft)")
    parser.add_argument("--prefill-probe", type=Path, required=True, help="the prefill probe (--at prefill)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/arbitration/auto_bands.json"))
    args = parser.parse_args(argv)
    result = choose(args.corpus, args.states, args.probe, args.prefill_probe)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    best = result["best"]
    print(f"out-of-fold on the mixed train subset (n={result['mixed_train_items']}): probe APGR "
          f"{result['out_of_fold']['probe']['apgr']:.3f}, pre:probe APGR {result['out_of_fold']['pre:probe']['apgr']:.3f}")
    print(f"best bands: cloud_below {best['cloud_below']} (quantile {best['cloud_quantile']}), edge_above "
          f"{best['edge_above']} (quantile {best['edge_quantile']}): APGR {best['apgr']:.3f}, CPT(80%) {best['cpt_80']:.3f}")
    print(f"operating point ({OPERATING_SHARE:.0%} to the cloud, out of fold): arbitration.fixed_threshold "
          f"{result['post_fixed_threshold']} with the probe scorer; auto.fixed_threshold {best['fixed_threshold']}")
    print(f"--auto-bands {best['cloud_below']},{best['edge_above']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
