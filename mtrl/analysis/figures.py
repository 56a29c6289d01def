"""The report's figures: learning curves (mean and IQM success with bootstrap bands) and the
per-task heatmap of final success. matplotlib (the ``report`` extra) is imported when drawing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mtrl.analysis.runs import ProtocolKey, Row, protocol_label


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(
    key: ProtocolKey, curves: list[tuple[Row, np.ndarray, dict[str, np.ndarray]]], path: Path
) -> None:
    """Mean and IQM success over training, one line per row, 95% bootstrap bands."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), sharey=True, layout="constrained")
    for ax, statistic, title in zip(axes, ("mean", "iqm"), ("mean", "IQM"), strict=True):
        for row, steps, bands in curves:
            value, low, high = bands[statistic]
            (line,) = ax.plot(
                steps, value, marker="o", markersize=3, label=f"{row.label} (n={len(row.runs)})"
            )
            if not np.isnan(low).all():
                ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_xlabel("environment steps (summed over tasks)")
        ax.set_title(f"{title} success over seeds x tasks", fontsize=10)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("success rate")
    axes[0].legend(fontsize=8, loc="best")
    fig.suptitle(
        f"{protocol_label(key)}\nband: 95% stratified-bootstrap interval over seeds", fontsize=10
    )
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_task_heatmap(key: ProtocolKey, rows: list[Row], path: Path) -> None:
    plt = pyplot()
    tasks = list(dict.fromkeys(t for row in rows for t in row.tasks))
    grid = np.full((len(rows), len(tasks)), np.nan)
    for i, row in enumerate(rows):
        means = row.scores("final").mean(axis=0)
        for task, mean in zip(row.tasks, means, strict=True):
            grid[i, tasks.index(task)] = mean
    labels = [f"{r.label} (n={len(r.runs)})" for r in rows]
    # Inches: the cells, the row labels (about 0.075 in a character at font size 8), the colorbar.
    width = min(max(6.0, 0.4 * len(tasks) + 0.075 * max(map(len, labels)) + 2.0), 40.0)
    height = max(3.0, 0.45 * len(rows) + 0.06 * max(map(len, tasks)) + 1.6)
    fig, ax = plt.subplots(figsize=(width, height), layout="constrained")
    image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(tasks)), tasks, fontsize=8)
    if len(tasks) > 1:
        plt.setp(ax.get_xticklabels(), rotation=60, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    if grid.size <= 300:
        for (i, j), value in np.ndenumerate(grid):
            if not np.isnan(value):
                ax.text(
                    j,
                    i,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="black" if value > 0.6 else "white",
                )
    fig.colorbar(image, ax=ax, label="final success rate")
    ax.set_title(f"{protocol_label(key)}\nfinal success per task, mean over seeds", fontsize=10)
    fig.savefig(path, dpi=120)
    plt.close(fig)
