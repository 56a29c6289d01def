"""The PCGrad paper's Figure 4 (Section 5.3, the tragic triad in MT-SAC) from run folders.

``mtrl-report --triad-figure fig.png RUN_DIRS...`` draws three panels over training
(environment steps summed over tasks), one colour per method (a row of the report: runs of one
method and config, one per seed), every curve the mean over seeds with a 95% bootstrap band
(:func:`mtrl.stats.mean_bands`):

- **left**: the multi-task curvature H(L; θt, θt+1) = 2[L(θt+1) − L(θt) − ∇L(θt)ᵀ(θt+1 − θt)] of
  the chosen component's loss (``diag/<c>/curvature``, the mean over an interval's diagnostic
  updates);
- **middle**: the share of task pairs whose gradients have a positive cosine (solid,
  1 − ``diag/<c>/conflict``), and among the conflicting (update, pair)s the share meeting
  condition (a) of Theorem 2, cos φ ≤ −Φ (dotted), and the share with ξ ≤ 1, the implication of
  condition (b) (dashed). An interval without conflicting pairs has no value for the last two;
  a step's mean is over the seeds that have one;
- **right**: each task's evaluation success (or return); one line style per task.

The numbers behind the curves go to a CSV beside the PNG (same name, ``.csv``).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

import numpy as np

from mtrl import stats
from mtrl.logger import read_metrics
from mtrl.report import PROG, ProtocolKey, Row, group_runs, load_runs, protocol_label, pyplot

COMPONENTS = ("critic", "actor")
METRICS = ("success", "return")
TRAIN_SERIES = (
    # (name in the CSV, key under diag/<component>/, plotted as 1 - value, line style, legend)
    ("curvature", "curvature", False, "-", "H"),
    ("positive cosine", "conflict", True, "-", "cos φ > 0"),
    ("condition (a) | conflict", "cond_a_given_conflict", False, ":", "(a) cos φ ≤ −Φ | conflict"),
    ("xi <= 1 | conflict", "xi_le_1_given_conflict", False, "--", "ξ ≤ 1 | conflict"),
)
REQUIRED = ("curvature", "conflict")
"""Keys without which a run has no diagnostics to plot."""
TASK_STYLES = ("-", "--", ":", "-.")

Series = dict[int, float]
"""step -> value."""


def run_series(path: Path, component: str, metric: str) -> dict[str, Series]:
    """A run's curves from its metrics.jsonl: the training series by name (absent on lines
    without diagnostics) and ``task:<name>`` per task from the evaluation lines."""
    out: dict[str, Series] = {name: {} for name, *_ in TRAIN_SERIES}
    prefix = f"eval/{metric}/"
    for record in read_metrics(path):
        step = int(record["step"])
        for name, key, complement, *_ in TRAIN_SERIES:
            value = record.get(f"diag/{component}/{key}")
            if value is not None:
                out[name][step] = 1.0 - float(value) if complement else float(value)
        if record.get("eval/success") is not None:
            for key, value in record.items():
                if key.startswith(prefix) and value is not None:
                    out.setdefault(f"task:{key.removeprefix(prefix)}", {})[step] = float(value)
    return out


def aligned(series: list[Series]) -> tuple[np.ndarray, np.ndarray]:
    """The steps any run has and the ``[runs, steps]`` values, ``nan`` where a run has none."""
    steps = sorted(set().union(*series))
    values = np.array([[s.get(step, np.nan) for step in steps] for s in series])
    return np.array(steps, dtype=np.int64), values.reshape(len(series), len(steps))


Curve = tuple[Row, str, np.ndarray, np.ndarray, np.ndarray]
"""(row, series name, steps, [3, steps] mean/low/high, seeds with a value at each step)."""


def triad_curves(
    rows: list[Row], per_run: dict[Path, dict[str, Series]], reps: int, seed: int
) -> list[Curve]:
    """Every curve of the figure: mean over each row's seeds with its bootstrap band."""
    curves: list[Curve] = []
    for row in rows:
        runs = [per_run[r.path] for r in row.runs]
        names = [n for n, *_ in TRAIN_SERIES] + [f"task:{t}" for t in row.tasks]
        for name in names:
            steps, values = aligned([run.get(name, {}) for run in runs])
            bands = stats.mean_bands(values, reps, seed)
            curves.append((row, name, steps, bands, (~np.isnan(values)).sum(axis=0)))
    return curves


def plot_triad(
    key: ProtocolKey,
    rows: list[Row],
    curves: list[Curve],
    path: Path,
    component: str,
    metric: str,
    reps: int,
    seed: int,
) -> None:
    plt = pyplot()
    from matplotlib.lines import Line2D

    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 4.6), layout="constrained")
    colours = {id(row): f"C{i % 10}" for i, row in enumerate(rows)}
    styles = {name: style for name, _, _, style, _ in TRAIN_SERIES}
    tasks = list(dict.fromkeys(t for row in rows for t in row.tasks))
    for row, name, steps, (mean, low, high), _ in curves:
        if name == "curvature":
            ax, style = left, "-"
        elif name.startswith("task:"):
            ax = right
            style = TASK_STYLES[tasks.index(name.removeprefix("task:")) % len(TASK_STYLES)]
        else:
            ax, style = middle, styles[name]
        scale = 100.0 if ax is middle else 1.0
        colour = colours[id(row)]
        ax.plot(steps, scale * mean, color=colour, linestyle=style, linewidth=1.4)
        if not np.isnan(low).all():
            ax.fill_between(steps, scale * low, scale * high, color=colour, alpha=0.15, linewidth=0)
    left.set_title(f"multi-task curvature H ({component} loss)", fontsize=10)
    left.set_ylabel("H(L; θt, θt+1)")
    middle.set_title("task-gradient pairs, % (conditional: among conflicting)", fontsize=10)
    middle.set_ylabel("%")
    middle.set_ylim(-2, 102)
    right.set_title(f"evaluation {metric} per task", fontsize=10)
    right.set_ylabel(f"{metric}{' rate' if metric == 'success' else ''}")
    methods = [
        Line2D([], [], color=colours[id(row)], label=f"{row.label} (n={len(row.runs)})")
        for row in rows
    ]
    left.legend(handles=methods, fontsize=8, loc="best")
    shares = [Line2D([], [], color="black", linestyle=s, label=t) for *_, s, t in TRAIN_SERIES[1:]]
    middle.legend(handles=shares, fontsize=8, loc="best")
    right.legend(
        handles=[
            Line2D([], [], color="black", linestyle=TASK_STYLES[i % len(TASK_STYLES)], label=t)
            for i, t in enumerate(tasks)
        ],
        fontsize=8,
        loc="best",
    )
    for ax in (left, middle, right):
        ax.set_xlabel("environment steps (summed over tasks)")
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"Tragic triad, {protocol_label(key)}\nmean over seeds, band: 95% bootstrap interval "
        f"({reps} replicates, seed {seed})",
        fontsize=10,
    )
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_curves_csv(curves: list[Curve], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "series", "step", "n_seeds", "mean", "low", "high"])
        for row, name, steps, bands, counts in curves:
            for i, step in enumerate(steps):
                values = ["" if np.isnan(v) else float(v) for v in bands[:, i]]
                writer.writerow([row.label, name, int(step), int(counts[i]), *values])


def triad_main(args: argparse.Namespace) -> int:
    """``mtrl-report --triad-figure``: the figure of one protocol's runs, or a one-line error."""
    notes: list[str] = []
    runs, _ = load_runs(args.paths, notes)
    grouped = group_runs(runs, notes)
    for note in notes:
        print(f"{PROG}: {note}", file=sys.stderr)
    problem = _problem(grouped)
    if not problem:
        ((key, rows),) = grouped.items()
        component, metric = args.component, args.triad_metric
        per_run = {r.path: run_series(r.path, component, metric) for row in rows for r in row.runs}
        problem = _missing(per_run, component)
    if problem:
        print(f"{PROG}: error: {problem}", file=sys.stderr)
        return 2
    curves = triad_curves(rows, per_run, args.reps, args.bootstrap_seed)
    path = Path(args.triad_figure)
    path.parent.mkdir(parents=True, exist_ok=True)
    plot_triad(key, rows, curves, path, component, metric, args.reps, args.bootstrap_seed)
    write_curves_csv(curves, path.with_suffix(".csv"))
    print(f"wrote {path}, {path.with_suffix('.csv')}")
    return 0


def _problem(grouped: dict[ProtocolKey, list[Row]]) -> str:
    if not grouped:
        return "no finished runs for the figure"
    if len(grouped) > 1:
        labels = "; ".join(protocol_label(k) for k in grouped)
        return f"the figure compares runs of one protocol; these runs use {len(grouped)}: {labels}"
    return ""


def _missing(per_run: dict[Path, dict[str, Any]], component: str) -> str:
    """One line about runs whose logs lack the component's diagnostics, or ''."""
    lacking = [
        str(path)
        for path, series in per_run.items()
        if not all(series[name] for name, key, *_ in TRAIN_SERIES if key in REQUIRED)
    ]
    if not lacking:
        return ""
    shown = ", ".join(lacking[:3]) + (f" and {len(lacking) - 3} more" if len(lacking) > 3 else "")
    return (
        f"{len(lacking)} of {len(per_run)} runs have no tragic-triad diagnostics of the "
        f"{component} (diag/{component}/curvature, diag/{component}/conflict) in metrics.jsonl: "
        f"{shown}; train them with the diagnostics on"
    )
