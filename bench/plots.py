"""Bench plots as PNG files: accuracy against cost with the Pareto frontier, each arbiter's
cost–quality sweep beside the random router, and latency CDFs.

Figures are built with matplotlib's object API on the Agg canvas, never through pyplot, so no
global backend or figure state is touched and plotting works headless and in threads.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, Union

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench.study import mode_rank
from bench.summary import Record, group_records, numeric_values

ACCURACY_VS_COST = "accuracy_vs_cost.png"
SWEEPS = "cloud_share_sweeps.png"
LATENCY_CDF = "latency_cdf.png"

_PANEL_SIZE = (5.5, 4.2)  # inches per dataset panel
_DPI = 110


def _figure(panels: int) -> tuple[Figure, list[Any]]:
    figure = Figure(figsize=(_PANEL_SIZE[0] * panels, _PANEL_SIZE[1]), dpi=_DPI,
                    layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, panels, squeeze=False)[0]
    return figure, list(axes)


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, format="png")
    return path


def pareto_frontier(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (cost, accuracy) points no other point beats on both: cheaper-or-equal and at least as
    accurate, strictly better on one. Returned by increasing cost."""
    frontier: list[tuple[float, float]] = []
    for cost, accuracy in sorted(points, key=lambda p: (p[0], -p[1])):
        if not frontier or accuracy > frontier[-1][1]:
            frontier.append((cost, accuracy))
    return frontier


def plot_accuracy_vs_cost(summary: Mapping[str, Any], out_dir: Union[str, Path]) -> list[Path]:
    """One panel per dataset: each mode at (dollars per 1,000 requests, accuracy) with its 95%
    interval, and the Pareto frontier as a step line."""
    by_dataset: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in summary["rows"]:
        by_dataset[row["dataset"]].append(row)
    if not by_dataset:
        return []
    figure, axes = _figure(len(by_dataset))
    for ax, (dataset, rows) in zip(axes, sorted(by_dataset.items())):
        for row in rows:
            x, y = row["usd_per_1k_requests"], row["accuracy"]
            error = [[y - row["accuracy_ci_low"]], [row["accuracy_ci_high"] - y]]
            ax.errorbar([x], [y], yerr=error, fmt="o", capsize=4, label=row["mode"])
            ax.annotate(row["mode"], (x, y), textcoords="offset points", xytext=(6, 6),
                        fontsize=8)
        frontier = pareto_frontier([(r["usd_per_1k_requests"], r["accuracy"]) for r in rows])
        ax.step([p[0] for p in frontier], [p[1] for p in frontier], where="post",
                color="grey", linestyle="--", label="Pareto frontier")
        ax.set_title(dataset)
        ax.set_xlabel("dollars per 1,000 requests")
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    return [_save(figure, Path(out_dir) / ACCURACY_VS_COST)]


def plot_sweeps(summary: Mapping[str, Any], out_dir: Union[str, Path]) -> list[Path]:
    """One panel per dataset: accuracy against cloud-call share along each arbiter's threshold
    sweep, the random router's straight line, and the edge-only/cloud-only ends."""
    by_dataset: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for result in summary["sweeps"]:
        if result["points"]:
            by_dataset[result["dataset"]].append(result)
    if not by_dataset:
        return []
    figure, axes = _figure(len(by_dataset))
    for ax, (dataset, results) in zip(axes, sorted(by_dataset.items())):
        for result in results:
            apgr = result["apgr"]
            label = result["arbiter"] + (f" (APGR {apgr:.2f})" if apgr is not None else "")
            ax.plot([p["cloud_share"] for p in result["points"]],
                    [p["accuracy"] for p in result["points"]], marker=".", label=label)
        baseline = results[0]["random"]["points"]
        ax.plot([p["cloud_share"] for p in baseline], [p["accuracy"] for p in baseline],
                color="grey", linestyle="--", label="random router (APGR 0.50)")
        ax.set_title(f"{dataset} (n={results[0]['n']})")
        ax.set_xlabel("share of requests sent to the cloud")
        ax.set_ylabel("accuracy")
        ax.set_xlim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    return [_save(figure, Path(out_dir) / SWEEPS)]


def plot_latency_cdf(records: Iterable[Record], out_dir: Union[str, Path]) -> list[Path]:
    """One panel per dataset: the empirical CDF of end-to-end latency for each mode."""
    by_dataset: dict[str, dict[str, list[float]]] = defaultdict(dict)
    for (dataset, mode), group in group_records(records).items():
        latencies = sorted(numeric_values(group, "latency_s"))
        if latencies:
            by_dataset[dataset][mode] = latencies
    if not by_dataset:
        return []
    figure, axes = _figure(len(by_dataset))
    for ax, (dataset, modes) in zip(axes, sorted(by_dataset.items())):
        for mode in sorted(modes, key=mode_rank):
            latencies = modes[mode]
            shares = [(i + 1) / len(latencies) for i in range(len(latencies))]
            ax.step([0.0] + latencies, [0.0] + shares, where="post", label=mode)
        ax.set_title(dataset)
        ax.set_xlabel("latency (s)")
        ax.set_ylabel("share of requests")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    return [_save(figure, Path(out_dir) / LATENCY_CDF)]


def write_plots(records: Sequence[Record], summary: Mapping[str, Any],
                out_dir: Union[str, Path]) -> list[Path]:
    """All the plots that have data; returns the paths written."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return (plot_accuracy_vs_cost(summary, out_dir) + plot_sweeps(summary, out_dir)
            + plot_latency_cdf(records, out_dir))
