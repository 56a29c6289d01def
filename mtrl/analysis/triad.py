"""The PCGrad paper's Figure 4 (Section 5.3, the tragic triad in MT-SAC) from run folders.

``mtrl-report --triad-figure fig.png RUN_DIRS...`` draws four panels over training
(environment steps summed over tasks), one colour per method (a row of the report: runs of one
method and config, one per seed), every curve the mean over seeds with a 95% bootstrap band
(:func:`mtrl.analysis.stats.mean_bands`):

- **first**: the multi-task curvature H(L; θt, θt+1) = 2[L(θt+1) − L(θt) − ∇L(θt)ᵀ(θt+1 − θt)] of
  the chosen component's loss for the paper's L = Σᵢ Lᵢ. The agent logs H of the mean of the K
  losses (``diag/<c>/curvature``, the mean over an interval's diagnostic updates); with the same
  step, H of the sum is K times that (every term of H is linear in L);
- **second**: H / ‖∇L‖² for the same L (ℓ of Theorem 2's bound H ≥ ℓ‖∇L‖²; the logged
  ``diag/<c>/curvature_rel`` of the mean, divided by K), on a log scale: H alone grows with the
  scale of the loss, this ratio does not;
- **third**: the share of task pairs whose gradients have a positive cosine (solid,
  1 − ``diag/<c>/conflict``), and among the conflicting (update, pair)s the share meeting
  condition (a) of Theorem 2, cos φ ≤ −Φ (dotted), and the share with ξ ≤ 1, the implication of
  condition (b) (dashed). An interval without conflicting pairs has no value for the last two;
  a step's mean is over the seeds that have one;
- **fourth**: each task's evaluation success (or return); one line style per task.

The numbers behind the curves go to a CSV beside the PNG (same name, ``.csv``); its series
``curvature`` is H of the mean loss, as logged, ``curvature, L = sum`` and
``curvature / |grad L|^2, L = sum`` those of the paper's L.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtrl.analysis import stats
from mtrl.analysis.figures import pyplot
from mtrl.analysis.runs import ProtocolKey, Row, group_runs, load_runs, protocol_label
from mtrl.logger import read_metrics

COMPONENTS = ("critic", "actor")
METRICS = ("success", "return")
TRAIN_SERIES = (
    # (name in the CSV, key under diag/<component>/, plotted as 1 - value, line style, legend)
    ("curvature", "curvature", False, "-", "H"),
    ("positive cosine", "conflict", True, "-", "cos φ > 0"),
    ("condition (a) | conflict", "cond_a_given_conflict", False, ":", "(a) cos φ ≤ −Φ | conflict"),
    ("xi <= 1 | conflict", "xi_le_1_given_conflict", False, "--", "ξ ≤ 1 | conflict"),
)
SUM_SERIES = (
    # (name in the CSV, key under diag/<component>/, power of K: H of the sum from the mean's)
    ("curvature, L = sum", "curvature", 1),
    ("curvature / |grad L|^2, L = sum", "curvature_rel", -1),
)
"""The paper's L = Σᵢ Lᵢ: K times the mean's H, and H / ‖∇L‖² divided by K."""
REQUIRED = ("curvature", "conflict")
"""Keys without which a run has no diagnostics to plot."""
TASK_STYLES = ("-", "--", ":", "-.")

Series = dict[int, float]
"""step -> value."""


def run_series(path: Path, component: str, metric: str, num_tasks: int) -> dict[str, Series]:
    """A run's curves from its metrics.jsonl: the training series by name (absent on lines
    without diagnostics), those of the summed loss, and ``task:<name>`` per task from the
    evaluation lines."""
    out: dict[str, Series] = {name: {} for name, *_ in (*TRAIN_SERIES, *SUM_SERIES)}
    prefix = f"eval/{metric}/"
    for record in read_metrics(path):
        step = int(record["step"])
        for name, key, complement, *_ in TRAIN_SERIES:
            value = record.get(f"diag/{component}/{key}")
            if value is not None:
                out[name][step] = 1.0 - float(value) if complement else float(value)
        for name, key, power in SUM_SERIES:
            value = record.get(f"diag/{component}/{key}")
            if value is not None:
                out[name][step] = float(value) * num_tasks**power
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
        names += [n for n, *_ in SUM_SERIES]
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

    fig, axes = plt.subplots(1, 4, figsize=(21, 4.6), layout="constrained")
    curvature, relative, shares, per_task = axes
    colours = {id(row): f"C{i % 10}" for i, row in enumerate(rows)}
    styles = {name: style for name, _, _, style, _ in TRAIN_SERIES}
    where = {SUM_SERIES[0][0]: curvature, SUM_SERIES[1][0]: relative}
    tasks = list(dict.fromkeys(t for row in rows for t in row.tasks))
    for row, name, steps, (mean, low, high), _ in curves:
        if name in where:
            ax, style = where[name], "-"
        elif name.startswith("task:"):
            ax = per_task
            style = TASK_STYLES[tasks.index(name.removeprefix("task:")) % len(TASK_STYLES)]
        elif name in styles and name != TRAIN_SERIES[0][0]:
            ax, style = shares, styles[name]
        else:
            continue  # H of the mean loss: in the CSV, drawn as H of the sum
        scale = 100.0 if ax is shares else 1.0
        colour = colours[id(row)]
        ax.plot(steps, scale * mean, color=colour, linestyle=style, linewidth=1.4)
        if not np.isnan(low).all():
            ax.fill_between(steps, scale * low, scale * high, color=colour, alpha=0.15, linewidth=0)
    curvature.set_title(f"multi-task curvature H, L = Σ Lᵢ ({component} loss)", fontsize=10)
    curvature.set_ylabel("H(L; θt, θt+1)")
    relative.set_title("H / ‖∇L‖², L = Σ Lᵢ (free of the loss scale)", fontsize=10)
    relative.set_ylabel("H / ‖∇L(θt)‖²")
    relative.set_yscale("log")
    shares.set_title("task-gradient pairs, % (conditional: among conflicting)", fontsize=10)
    shares.set_ylabel("%")
    shares.set_ylim(-2, 102)
    per_task.set_title(f"evaluation {metric} per task", fontsize=10)
    per_task.set_ylabel(f"{metric}{' rate' if metric == 'success' else ''}")
    methods = [
        Line2D([], [], color=colours[id(row)], label=f"{row.label} (n={len(row.runs)})")
        for row in rows
    ]
    curvature.legend(handles=methods, fontsize=8, loc="best")
    kinds = [Line2D([], [], color="black", linestyle=s, label=t) for *_, s, t in TRAIN_SERIES[1:]]
    shares.legend(handles=kinds, fontsize=8, loc="best")
    per_task.legend(
        handles=[
            Line2D([], [], color="black", linestyle=TASK_STYLES[i % len(TASK_STYLES)], label=t)
            for i, t in enumerate(tasks)
        ],
        fontsize=8,
        loc="best",
    )
    for ax in axes:
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


def triad_data(
    paths: Sequence[Path], component: str, metric: str, reps: int, seed: int, notes: list[str]
) -> tuple[ProtocolKey, list[Row], list[Curve]]:
    """The figure's protocol, rows and curves from the runs at or below ``paths``; ValueError
    (one line) unless they are runs of one protocol, all with the component's diagnostics."""
    runs, _ = load_runs(paths, notes)
    grouped = group_runs(runs, notes)
    if problem := _problem(grouped):
        raise ValueError(problem)
    ((key, rows),) = grouped.items()
    runs = [run for row in rows for run in row.runs]
    per_run = {r.path: run_series(r.path, component, metric, len(r.tasks)) for r in runs}
    if problem := _missing(per_run, component):
        raise ValueError(problem)
    return key, rows, triad_curves(rows, per_run, reps, seed)


def write_triad_figure(
    paths: Sequence[Path],
    png: Path,
    component: str,
    metric: str,
    reps: int,
    seed: int,
    notes: list[str],
) -> list[Path]:
    """The figure (``png``) and its numbers (the same name, ``.csv``); the files written."""
    key, rows, curves = triad_data(paths, component, metric, reps, seed, notes)
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    plot_triad(key, rows, curves, png, component, metric, reps, seed)
    write_curves_csv(curves, png.with_suffix(".csv"))
    return [png, png.with_suffix(".csv")]


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
