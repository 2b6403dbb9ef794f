"""PNG plots for ``cxrcl report``: loss curves, AUROC vs. label fraction, throughput bars,
accuracy vs. cost (the frontier) and ROC curves.

Matplotlib's object API with the Agg canvas (no pyplot, no global backend change, no display).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cxrcl.evaluation.outputs import save_figure


@dataclass
class Curve:
    """One line of the AUROC plot."""

    label: str
    fractions: Sequence[float]
    means: Sequence[float]
    stds: Sequence[float]
    floor: bool = False


def smooth(y: np.ndarray, window: int | None = None) -> np.ndarray:
    """Centred moving average (window ~ n/30, odd), same length; edges use the points available."""
    y = np.asarray(y, dtype=float)
    n = len(y)
    if window is None:
        window = max(1, n // 30)
    window = int(window) | 1
    if window <= 1 or n < 3:
        return y
    half = window // 2
    c = np.concatenate([[0.0], np.cumsum(y)])
    lo = np.clip(np.arange(n) - half, 0, n)
    hi = np.clip(np.arange(n) + half + 1, 0, n)
    return (c[hi] - c[lo]) / (hi - lo)


def _figure(n_panels: int, width: float = 5.0, height: float = 3.6, max_cols: int = 3):
    cols = min(max_cols, max(1, n_panels))
    rows = (n_panels + cols - 1) // cols
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes


def plot_loss_curves(runs: Sequence[tuple[str, np.ndarray, np.ndarray]], path: Path,
                     log_x: bool = False) -> Path:
    """All runs' training loss vs. step on one axis: raw (faint) and smoothed."""
    fig, (ax, *_) = _figure(1, width=7.0, height=4.2)
    for i, (name, steps, loss) in enumerate(runs):
        color = f"C{i % 10}"
        steps, loss = np.asarray(steps, float), np.asarray(loss, float)
        if len(steps) > 30:
            ax.plot(steps, loss, color=color, alpha=0.2, linewidth=0.8)
        ax.plot(steps, smooth(loss), color=color, linewidth=1.6, label=name)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (smoothed)")
    ax.set_title("Pre-training loss")
    ax.grid(alpha=0.3)
    if runs:
        ax.legend(fontsize=8)
    save_figure(fig, path)
    return Path(path)


def plot_auroc_vs_fraction(panels: Sequence[tuple[str, Sequence[Curve]]], path: Path) -> Path:
    """One panel per (task, labels, data): mean AUROC +- std over seeds vs. label fraction (log x);
    floors dashed."""
    fig, axes = _figure(len(panels))
    for ax, (title, curves) in zip(axes, panels, strict=False):
        for i, c in enumerate(curves):
            ax.errorbar(np.asarray(c.fractions) * 100, c.means, yerr=c.stds, capsize=3,
                        marker="o", markersize=4, linewidth=1.4, color=f"C{i % 10}",
                        linestyle="--" if c.floor else "-",
                        label=f"{c.label} (floor)" if c.floor else c.label)
        ax.set_xscale("log")
        ticks = sorted({float(f) * 100 for c in curves for f in c.fractions})
        ax.set_xticks(ticks, [f"{t:g} %" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("labelled training images")
        ax.set_ylabel("AUROC (macro)")
        ax.set_title(title, fontsize=9)
        ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    save_figure(fig, path)
    return Path(path)


def plot_bench(benches: Sequence[tuple[str, dict]], path: Path) -> Path:
    """Training and inference images/s per method (one row of panels per bench file)."""
    metrics = (("train_images_per_s", "training images/s"), ("infer_images_per_s", "inference images/s"))
    fig, axes = _figure(len(benches) * len(metrics), max_cols=len(metrics))
    k = 0
    for title, methods in benches:
        names = list(methods)
        for key, label in metrics:
            ax = axes[k]
            k += 1
            vals = [float(methods[m].get(key) or 0.0) for m in names]
            ax.bar(range(len(names)), vals, color=[f"C{i % 10}" for i in range(len(names))])
            ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
            ax.set_ylabel(label)
            ax.set_title(f"{title}: {label}", fontsize=9)
            ax.grid(alpha=0.3, axis="y")
    save_figure(fig, path)
    return Path(path)


def plot_cost_frontier(panels: Sequence[tuple[str, Sequence, dict[str, float]]], path: Path) -> Path:
    """Accuracy against cost: for each (title, points, floors) two axes, AUROC vs. training GFLOPs
    and vs. wall seconds (log x), one marker per method, the frontier as a line, the floors (no
    training cost) as dashed horizontal lines. ``points`` have ``name``, ``auroc``, ``gflops``,
    ``wall_s``."""
    from cxrcl.evaluation.report_sections import frontier

    fig, axes = _figure(2 * len(panels), max_cols=2)
    k = 0
    for title, points, floors in panels:
        for attr, xlabel in (("gflops", "training GFLOPs (total)"), ("wall_s", "training wall seconds")):
            ax = axes[k]
            k += 1
            pts = [p for p in points if getattr(p, attr) is not None]
            for i, p in enumerate(pts):
                ax.scatter([getattr(p, attr)], [p.auroc], color=f"C{i % 10}", zorder=3, label=p.name)
                ax.annotate(p.name, (getattr(p, attr), p.auroc), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
            front = frontier(list(pts), attr)
            if len(front) > 1:
                ax.step([getattr(p, attr) for p in front], [p.auroc for p in front], where="post",
                        color="black", linewidth=1.0, alpha=0.6, label="frontier")
            for j, (name, v) in enumerate(floors.items()):
                ax.axhline(v, color="grey", linestyle=["--", ":"][j % 2], linewidth=1.0, label=f"{name} (floor)")
            if pts:
                ax.set_xscale("log")
            else:
                ax.text(0.5, 0.5, "no cost known", ha="center", va="center", transform=ax.transAxes)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("AUROC (macro)")
            ax.set_title(title, fontsize=9)
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=6)
    save_figure(fig, path)
    return Path(path)


def plot_roc(panels: Sequence[tuple[str, Sequence[tuple[str, np.ndarray, np.ndarray, float]]]], path: Path) -> Path:
    """One panel per (title, curves); a curve is (run, fpr, tpr, auroc)."""
    fig, axes = _figure(len(panels), width=4.2, height=4.0)
    for ax, (title, curves) in zip(axes, panels, strict=False):
        for i, (name, fpr, tpr, auc) in enumerate(curves):
            ax.plot(fpr, tpr, color=f"C{i % 10}", linewidth=1.3, label=f"{name} ({auc:.3f})")
        ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title(title, fontsize=9)
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="lower right")
    save_figure(fig, path)
    return Path(path)
