"""mtrl-report: tables and plots of many runs (a sweep, several sweeps, single run folders).

A run is a folder with ``metrics.jsonl``, ``config.yaml`` and ``meta.json`` (what mtrl-train
writes). Runs are grouped by protocol (``meta.json`` ``protocol``: the paper protocol's name,
benchmark, goal mode, horizon, reward version) and never pooled across protocols; within a
protocol, by method (network model, surgery method and its options, loss balancer). Runs of one
method whose configs differ in anything but the seed (and settings that do not change results:
device, threads, env workers, vector strategy, logging, checkpointing) become separate rows, so
that a table row always means "the same experiment, several seeds". A paper's published number
(:mod:`mtrl.published`) is shown beside a row only when its runs follow that paper's protocol
without deviations and use the paper's method.

The statistics (:mod:`mtrl.stats`, through ``rliable``) treat the success rate of one task in one
run as a **score**: a row's scores are a ``[seeds, tasks]`` matrix, taken at the final evaluation
(**final**) or at each run's best evaluation (**best**: the evaluation with the highest success
averaged over tasks, the earliest of equals; what the mtrl-family papers report). Each row shows
the mean and the interquartile mean (IQM) of its scores with 95% stratified-bootstrap intervals,
and the probability of improvement over its **baseline**: the row of the same protocol with no
surgery and no loss balancer and otherwise the same config (the same model, network, budget,
...), or the row that ``--baseline`` names.

Only finished runs (a final evaluation line) enter tables and plots; the others are listed with
the reason. Problems with single runs are reported and the rest is still reported.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mtrl import stats
from mtrl.config import RUN_ONLY_KEYS, flatten
from mtrl.logger import METRICS_FILE, read_metrics
from mtrl.published import Published, caveats, method_key, paper_number, reference_setting
from mtrl.rundir import CONFIG_FILE, META_FILE, file_slug
from mtrl.stats import Estimate

PROTOCOL_KEYS = ("name", "benchmark", "goal_mode", "max_episode_steps", "reward_version")
"""What makes success rates comparable (mtrl.rundir records it in meta.json): runs that differ in
one of these are never pooled."""
SUCCESS = "eval/success"
TASK_PREFIX = "eval/success/"
PROG = "mtrl-report"
KINDS = ("final", "best")
"""Which evaluation of each run gives its scores: the last one, or its best one."""


# --------------------------------------------------------------------------- reading runs
@dataclass
class Run:
    path: Path
    protocol: dict[str, Any]
    method: str
    seed: int
    model: str
    balancer: str
    deviations: dict[str, Any]
    statistic: str | None
    config: dict[str, Any]  # flattened dotted keys
    evals: list[dict[str, Any]]  # the evaluation lines, in order
    started: str = ""
    variant: str = ""

    @property
    def final(self) -> dict[str, Any]:
        return self.evals[-1]

    @property
    def best(self) -> dict[str, Any]:
        """The evaluation with the highest success averaged over tasks (the earliest of equals)."""
        return max(self.evals, key=lambda e: float(e[SUCCESS]))

    @property
    def tasks(self) -> list[str]:
        """The tasks in one-hot order (as the evaluation lines list them)."""
        return [k.removeprefix(TASK_PREFIX) for k in self.final if k.startswith(TASK_PREFIX)]

    def scores(self, kind: str, tasks: Sequence[str]) -> list[float]:
        """Per-task success of the ``final`` or the ``best`` evaluation."""
        evaluation = self.final if kind == "final" else self.best
        return [float(evaluation[TASK_PREFIX + t]) for t in tasks]


def find_run_dirs(paths: Iterable[Path], notes: list[str]) -> list[Path]:
    """Run folders (those holding metrics.jsonl) at or below ``paths``; hidden folders skipped."""
    found: list[Path] = []
    for root in paths:
        root = Path(root)
        if not root.exists():
            notes.append(f"{root}: does not exist")
            continue
        if (root / METRICS_FILE).is_file():
            found.append(root)
            continue
        below = []
        for current, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            if METRICS_FILE in files:
                below.append(Path(current))
                dirs[:] = []  # a run folder holds no further runs
        if not below:
            notes.append(f"{root}: no runs found (no folder with {METRICS_FILE} below it)")
        found.extend(below)
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return unique


def method_label(name: str, options: dict[str, Any] | None) -> str:
    """``cagrad(c=0.5)``; just the name when the method has no options."""
    if not options:
        return str(name)
    inner = ",".join(f"{k}={options[k]}" for k in sorted(options))
    return f"{name}({inner})"


def load_run(path: Path, notes: list[str]) -> Run | None:
    """One run folder, or None (with the reason in ``notes``) when it cannot enter the report."""
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        notes.append(f"{path}: skipped, no {CONFIG_FILE} (not an mtrl run folder?)")
        return None
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        notes.append(f"{path}: skipped, cannot read {CONFIG_FILE}: {exc}")
        return None
    try:
        text = (path / METRICS_FILE).read_text(encoding="utf-8")
        records = read_metrics(path)
    except (OSError, ValueError) as exc:
        notes.append(f"{path}: skipped, {exc}")
        return None
    if len(records) < len(text.splitlines()):
        notes.append(
            f"{path}: the last line of {METRICS_FILE} is cut (the run was killed while "
            f"writing it); ignored it and read the {len(records)} complete lines"
        )
    meta = _read_meta(path, notes)
    env = config.get("env", {})
    recorded = {"name": "none", **(meta.get("protocol") or env)}
    surgery = config.get("surgery", {})
    balancer = config.get("balancer", {})
    flat = flatten(config)
    run = Run(
        path=path,
        protocol={k: recorded.get(k) for k in PROTOCOL_KEYS},
        method=method_label(surgery.get("name", "?"), surgery.get("options")),
        seed=int(flat.get("train.seed", -1)),
        model=method_key(flat).model,
        balancer=method_label(balancer.get("name", "none"), balancer.get("options")),
        deviations=dict(recorded.get("deviations") or {}),
        statistic=recorded.get("statistic"),
        config=flat,
        evals=[r for r in records if r.get(SUCCESS) is not None],
        started=str(meta.get("started", "")),
    )
    if not run.evals:
        notes.append(f"{path}: skipped, no evaluation yet")
        return None
    if not run.final.get("final"):
        total = flat.get("train.total_steps", "?")
        notes.append(
            f"{path}: skipped, unfinished (last evaluation at step {run.final['step']} of "
            f"{total}, no final evaluation)"
        )
        return None
    if not run.tasks:
        notes.append(f"{path}: skipped, its evaluations have no per-task success ({TASK_PREFIX}*)")
        return None
    for e in run.evals:
        if any(e.get(TASK_PREFIX + t) is None for t in run.tasks):
            notes.append(f"{path}: skipped, the evaluation at step {e['step']} lacks tasks")
            return None
    return run


def _read_meta(path: Path, notes: list[str]) -> dict[str, Any]:
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        notes.append(f"{path}: no readable {META_FILE}; took the protocol from {CONFIG_FILE}")
        return {}
    return meta if isinstance(meta, dict) else {}


# --------------------------------------------------------------------------- grouping
ProtocolKey = tuple[tuple[str, Any], ...]


def protocol_key(protocol: dict[str, Any]) -> ProtocolKey:
    return tuple((k, protocol.get(k)) for k in PROTOCOL_KEYS)


def protocol_label(key: ProtocolKey) -> str:
    p = dict(key)
    name = "no paper protocol" if p["name"] == "none" else f"{p['name']} protocol"
    return (
        f"{p['benchmark']}, {name}, {p['goal_mode']} goals, horizon {p['max_episode_steps']}, "
        f"reward {p['reward_version']}"
    )


def protocol_slug(key: ProtocolKey) -> str:
    """A file-name part for the protocol: letters, digits, ``._-`` only; a long one (a task-subset
    benchmark such as ``mt50:reach-v3,button-press-topdown-v3,...``) is cut and ends in a hash of
    the full text, so that two protocols never share a file."""
    p = dict(key)
    raw = (
        f"{p['benchmark']}-{p['name']}-{p['goal_mode']}-h{p['max_episode_steps']}-"
        f"{p['reward_version']}"
    )
    return file_slug(raw)


MethodId = tuple[str, str, str]
"""(model, surgery label, balancer label)."""


@dataclass
class Row:
    """One table row: runs of one protocol, method and config variant, one per seed."""

    protocol: ProtocolKey
    method: MethodId
    variant: str
    runs: list[Run] = field(default_factory=list)
    stats: RowStats | None = field(default=None, repr=False, compare=False)
    """Filled in by :func:`summarize`."""

    @property
    def label(self) -> str:
        model, surgery, balancer = self.method
        parts = [p for p in (model if model != "mlp" else "", surgery) if p]
        if balancer != "none":
            parts.append(balancer)
        text = " + ".join(parts)
        return f"{text} [{self.variant}]" if self.variant else text

    @property
    def deviations(self) -> dict[str, Any]:
        """The protocol values these runs changed (the same for every seed of a row)."""
        return self.runs[0].deviations

    def published(self) -> Published | None:
        """The paper's number for this method under this protocol, if the runs follow it."""
        p = dict(self.protocol)
        if p["name"] == "none" or self.deviations:
            return None
        return paper_number(self.runs[0].config, str(p["benchmark"]), str(p["name"]))

    @property
    def seeds(self) -> list[int]:
        return sorted(r.seed for r in self.runs)

    @property
    def tasks(self) -> list[str]:
        return self.runs[0].tasks

    def scores(self, kind: str, tasks: Sequence[str] | None = None) -> np.ndarray:
        """The ``[seeds, tasks]`` score matrix of the ``final`` or ``best`` evaluations."""
        return np.array([r.scores(kind, tasks or self.tasks) for r in self.runs])

    def setting(self) -> dict[str, str]:
        """The result-relevant config besides the method: what a row and its baseline share."""
        config = self.runs[0].config
        return {k: json.dumps(v, sort_keys=True) for k, v in config.items() if _result_key(k)}

    def is_plain(self) -> bool:
        """No surgery and no loss balancer."""
        return self.method[1:] == ("none", "none")


def group_runs(runs: list[Run], notes: list[str]) -> dict[ProtocolKey, list[Row]]:
    """Protocol -> rows. Never pools protocols; splits a method whose configs differ."""
    by_method: dict[tuple[ProtocolKey, MethodId], list[Run]] = defaultdict(list)
    for run in runs:
        by_method[(protocol_key(run.protocol), (run.model, run.method, run.balancer))].append(run)

    grouped: dict[ProtocolKey, list[Row]] = defaultdict(list)
    for (proto, method), members in sorted(by_method.items(), key=lambda kv: str(kv[0])):
        differing = _differing_keys(members)
        if differing:
            notes.append(
                f"{Row(proto, method, '').label} under [{protocol_label(proto)}]: runs differ "
                f"in {', '.join(differing)}; reported as separate rows"
            )
        rows: dict[str, Row] = {}
        for run in members:
            run.variant = ", ".join(f"{k}={run.config.get(k)}" for k in differing)
            rows.setdefault(run.variant, Row(proto, method, run.variant)).runs.append(run)
        for row in rows.values():
            row.runs = _one_run_per_seed(row, notes)
            grouped[proto].append(row)
    if len(grouped) > 1:
        notes.append(
            f"the runs use {len(grouped)} different protocols; each is reported on its own, "
            "never pooled: " + "; ".join(protocol_label(k) for k in grouped)
        )
    return dict(grouped)


def _result_key(key: str) -> bool:
    """A config key that can change a result and is neither the seed, the protocol (grouped on
    already) nor the method (model, surgery, balancer: a row's identity)."""
    return (
        key not in RUN_ONLY_KEYS
        and key not in {f"env.{k}" for k in PROTOCOL_KEYS}
        and not key.startswith(("surgery.", "balancer.", "checkpoint.", "logger."))
        and key not in ("agent.model", "agent.multi_head")
    )


def _differing_keys(runs: list[Run]) -> list[str]:
    keys = sorted(set().union(*(r.config for r in runs)))
    return [
        k
        for k in keys
        if _result_key(k) and len({json.dumps(r.config.get(k), sort_keys=True) for r in runs}) > 1
    ]


def _one_run_per_seed(row: Row, notes: list[str]) -> list[Run]:
    by_seed: dict[int, list[Run]] = defaultdict(list)
    for run in row.runs:
        by_seed[run.seed].append(run)
    kept = []
    for seed, same in sorted(by_seed.items()):
        same.sort(key=lambda r: (r.started, str(r.path)))
        kept.append(same[-1])
        if len(same) > 1:
            dropped = ", ".join(str(r.path) for r in same[:-1])
            notes.append(
                f"{row.label}: {len(same)} runs with seed {seed}; kept the latest "
                f"{same[-1].path}, left out {dropped}"
            )
    return kept


# --------------------------------------------------------------------------- statistics
@dataclass
class RowStats:
    """A row's statistics (:mod:`mtrl.stats`) for the report's bootstrap settings."""

    aggregates: dict[str, dict[str, Estimate]]
    """``final``/``best`` -> ``mean``/``iqm`` of the row's score matrix."""
    baseline: Row | None
    """The row this one is compared with; the row itself when it is the baseline."""
    improvement: dict[str, Estimate]
    """``final``/``best`` -> P(this row > baseline); empty without another row as baseline."""


def find_baseline(row: Row, rows: list[Row], label: str | None = None) -> Row | None:
    """The row of ``rows`` (one protocol) that ``row`` is compared with: the one labelled
    ``label`` when given, else the row without surgery and balancer whose model and
    result-relevant config are those of ``row``. ``None`` when there is no such row."""
    if label is not None:
        found = [r for r in rows if r.label == label]
    else:
        setting = row.setting()
        found = [
            r
            for r in rows
            if r.is_plain() and r.method[0] == row.method[0] and r.setting() == setting
        ]
    return found[0] if found else None


def summarize(
    grouped: dict[ProtocolKey, list[Row]], reps: int, seed: int, baseline: str | None = None
) -> None:
    """Fill in every row's :class:`RowStats` (each estimate seeded on its own: a row's numbers do
    not depend on which other rows are in the report)."""
    for rows in grouped.values():
        for row in rows:
            base = find_baseline(row, rows, baseline)
            improvement = {}
            if base is not None and base is not row:
                improvement = {
                    k: stats.improvement(row.scores(k), base.scores(k, row.tasks), reps, seed)
                    for k in KINDS
                }
            row.stats = RowStats(
                {k: stats.aggregates(row.scores(k), reps, seed) for k in KINDS}, base, improvement
            )


def learning_curve(row: Row, reps: int, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The evaluation steps that all the row's seeds share, and the mean and IQM of the success
    scores (seeds x tasks) at each, ``[3, steps]`` (value, low, high) with 95% intervals."""
    by_step = [{int(e["step"]): e for e in run.evals} for run in row.runs]
    steps = sorted(set.intersection(*(set(s) for s in by_step)))
    scores = np.array(
        [[[float(s[step][TASK_PREFIX + t]) for step in steps] for t in row.tasks] for s in by_step]
    )
    return np.array(steps), stats.curve_bands(scores, reps, seed)


# --------------------------------------------------------------------------- tables
ROW_COLUMNS = ["protocol", *PROTOCOL_KEYS[1:], "model", "method", "balancer", "variant"]
BOUNDS = ("", "_low", "_high")
"""Column suffixes of an estimate: the value and its 95% interval."""


def _bounded(*prefixes: str) -> list[str]:
    return [f"{p}{s}" for p in prefixes for s in BOUNDS]


CSV_COLUMNS = [
    *ROW_COLUMNS,
    "deviations",
    "n_seeds",
    "seeds",
    *_bounded(*(f"{k}_{a}" for k in KINDS for a in ("mean", "iqm"))),
    "baseline",
    *_bounded(*(f"p_improvement_{k}" for k in KINDS)),
    "bootstrap_reps",
    "bootstrap_seed",
    "reported_statistic",
    "published_mean",
    "published_se",
    "published_source",
]


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.1f}"


def _cell(estimate: Estimate | None, scale: float = 100.0, digits: int = 1) -> str:
    """``45.0 [38.2, 51.0]``; the value alone without an interval; ``—`` without an estimate."""
    if estimate is None:
        return "—"
    value, low, high = (
        f"{scale * v:.{digits}f}" for v in (estimate.value, estimate.low, estimate.high)
    )
    return f"{value} [{low}, {high}]" if estimate.has_interval else value


def _published(row: Row) -> str:
    paper = row.published()
    if paper is None:
        return "—"
    se = "" if paper.stderr is None else f" ± {_pct(paper.stderr)}"
    return f"{_pct(paper.success)}{se} ({paper.label})"


def _baseline_cells(row: Row) -> list[str]:
    """The baseline's label and P(row > baseline) for final and best."""
    s = row.stats
    if s.baseline is None:
        return ["—", "—", "—"]
    if s.baseline is row:
        return ["(baseline)", "—", "—"]
    return [s.baseline.label, *(_cell(s.improvement[k], 1.0, 2) for k in KINDS)]


def markdown_table(rows: list[Row]) -> str:
    lines = [
        "| method | seeds | final mean % | final IQM % | best mean % | best IQM % | baseline "
        "| P(final > baseline) | P(best > baseline) | paper % |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for row in rows:
        agg = row.stats.aggregates
        cells = [_cell(agg[k][a]) for k in KINDS for a in ("mean", "iqm")]
        lines.append(
            f"| {row.label} | {len(row.runs)} | {' | '.join(cells)} | "
            f"{' | '.join(_baseline_cells(row))} | {_published(row)} |"
        )
    return "\n".join(lines)


def legend(reps: int, seed: int) -> str:
    """What the table's numbers are."""
    return (
        "A **score** is the success rate of one task in one run (seed); a row's scores form a "
        "seeds x tasks matrix. **final**: each run's final evaluation (`train.final_eval_episodes` "
        "episodes per task); **best**: each run's best evaluation (the highest success averaged "
        "over tasks; what the mtrl-family papers report). **mean**: the mean of the scores (the "
        "mean over seeds of the success averaged over tasks); **IQM**: the interquartile mean of "
        "all seeds x tasks scores (the middle 50%). Success in percent, with its 95% confidence "
        "interval in brackets: percentile interval of a stratified bootstrap (seeds resampled with "
        f"replacement within each task, {reps} replicates, bootstrap seed {seed}; rliable), none "
        "for one seed. **baseline**: the row without surgery and balancer and otherwise the same "
        "config (or the row `--baseline` names). **P(X > baseline)**: the probability of "
        "improvement, i.e. the chance that a seed of this row scores higher than a seed of the "
        "baseline on a task (ties count half), averaged over tasks, with its 95% interval (seeds "
        "of both rows resampled); above 0.5 favours this row, an interval that excludes 0.5 is a "
        "difference the seeds resolve (Agarwal et al., NeurIPS 2021). Protocols are never pooled. "
        "**paper**: the published number (mean ± s.e.) for this method under this protocol, only "
        "where the runs follow the protocol without deviations and the paper's preset in every "
        "setting that changes results (results.csv names the source)."
    )


def statistic_note(key: ProtocolKey, rows: list[Row]) -> str:
    """Which column the protocol's papers report, and what keeps a paper's number away."""
    name = dict(key)["name"]
    statistic = rows[0].runs[0].statistic if rows else None
    if name == "none" or statistic is None:
        return "No paper protocol: no published number applies."
    column = "best" if statistic == "best" else "final"
    text = (
        f"Papers under the {name} protocol report the {statistic} evaluation of each run: "
        f"compare the **{column} mean** with **paper**."
    )
    deviating = [row.label for row in rows if row.deviations]
    if deviating:
        changed = sorted({k for row in rows for k in row.deviations})
        text += (
            f" Rows that change the protocol's {', '.join(changed)} get no paper number: "
            f"{'; '.join(deviating)}."
        )
    benchmark = str(dict(key)["benchmark"])
    other = []
    for row in rows:
        paper, differences = reference_setting(row.runs[0].config, benchmark, name)
        if paper is not None and differences and not row.deviations:
            other.append(f"{row.label} ({', '.join(differences)})")
    if other:
        text += (
            " The paper's number is a reference in another setting only, not shown, for rows "
            f"whose settings differ from the paper's preset: {'; '.join(other)}."
        )
    missing = caveats(name, benchmark)
    if missing:
        text += f" Not reproduced here: {'; '.join(missing)}."
    return text


def _row_columns(proto: ProtocolKey, row: Row) -> dict[str, Any]:
    protocol = dict(proto)
    model, method, balancer = row.method
    return {
        "protocol": protocol["name"],
        **{k: protocol[k] for k in PROTOCOL_KEYS[1:]},
        "model": model,
        "method": method,
        "balancer": balancer,
        "variant": row.variant,
    }


def _estimate_columns(prefix: str, estimate: Estimate | None) -> dict[str, Any]:
    """``prefix``, ``prefix_low``, ``prefix_high`` (empty where there is no number)."""
    values = (math.nan,) * 3 if estimate is None else (estimate.value, estimate.low, estimate.high)
    return {
        f"{prefix}{suffix}": "" if math.isnan(v) else v
        for suffix, v in zip(BOUNDS, values, strict=True)
    }


def csv_rows(grouped: dict[ProtocolKey, list[Row]], reps: int, seed: int) -> list[dict[str, Any]]:
    out = []
    for proto, rows in grouped.items():
        for row in rows:
            s, paper = row.stats, row.published()
            record = {
                **_row_columns(proto, row),
                "deviations": json.dumps(row.deviations, sort_keys=True),
                "n_seeds": len(row.runs),
                "seeds": " ".join(map(str, row.seeds)),
                "baseline": "" if s.baseline is None else s.baseline.label,
                "bootstrap_reps": reps,
                "bootstrap_seed": seed,
                "reported_statistic": row.runs[0].statistic or "",
                "published_mean": "" if paper is None else paper.success,
                "published_se": "" if paper is None or paper.stderr is None else paper.stderr,
                "published_source": "" if paper is None else paper.source,
            }
            for k in KINDS:
                for a in ("mean", "iqm"):
                    record.update(_estimate_columns(f"{k}_{a}", s.aggregates[k][a]))
                record.update(_estimate_columns(f"p_improvement_{k}", s.improvement.get(k)))
            out.append(record)
    return out


def per_task(row: Row, kind: str, reps: int, seed: int) -> dict[str, Estimate]:
    """Each task's mean success over the row's seeds with its interval, tasks in one-hot order."""
    means = stats.task_means(row.scores(kind), reps, seed)
    return {t: Estimate(*map(float, means[:, i])) for i, t in enumerate(row.tasks)}


# --------------------------------------------------------------------------- plots
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


# --------------------------------------------------------------------------- the report
@dataclass
class Report:
    grouped: dict[ProtocolKey, list[Row]]
    notes: list[str]
    files: list[Path]
    markdown: str


def load_runs(
    paths: Sequence[Path], notes: list[str], exclude: Path | None = None
) -> tuple[list[Run], int]:
    """The finished runs at or below ``paths`` (none inside ``exclude``), and how many run folders
    were found."""
    run_dirs = find_run_dirs(paths, notes)
    skip = None if exclude is None else Path(exclude).resolve()
    runs = [r for d in run_dirs if skip not in d.parents and (r := load_run(d, notes))]
    return runs, len(run_dirs)


def check_baseline(grouped: dict[ProtocolKey, list[Row]], label: str, notes: list[str]) -> str:
    """An error message when no row is labelled ``label``; notes the protocols without it."""
    labels = sorted({row.label for rows in grouped.values() for row in rows})
    if label not in labels:
        return f"--baseline '{label}' names no row; the rows are: {'; '.join(labels)}"
    for key, rows in grouped.items():
        if all(row.label != label for row in rows):
            notes.append(f"[{protocol_label(key)}] has no row '{label}': no baseline there")
    return ""


def build_report(
    paths: Sequence[Path],
    out: Path,
    plots: bool = True,
    reps: int = stats.DEFAULT_REPS,
    seed: int = stats.DEFAULT_SEED,
    baseline: str | None = None,
) -> Report:
    """Read, group and summarize the runs and write the report's files into ``out``. Raises
    ValueError when ``baseline`` names no row."""
    notes: list[str] = []
    out = Path(out).resolve()
    runs, found = load_runs(paths, notes, exclude=out)
    grouped = group_runs(runs, notes)
    files: list[Path] = []
    markdown = ""
    if grouped:
        if baseline is not None and (problem := check_baseline(grouped, baseline, notes)):
            raise ValueError(problem)
        summarize(grouped, reps, seed, baseline)
        out.mkdir(parents=True, exist_ok=True)
        files += _write_csvs(grouped, out, reps, seed)
        if plots:
            files += _write_plots(grouped, out, reps, seed)
        markdown = _markdown(grouped, notes, found, plots, reps, seed)
        (out / "report.md").write_text(markdown, encoding="utf-8")
        files.insert(0, out / "report.md")
    return Report(grouped, notes, files, markdown)


def _write_plots(
    grouped: dict[ProtocolKey, list[Row]], out: Path, reps: int, seed: int
) -> list[Path]:
    """Per protocol: the learning curves (PNG and their numbers, curves-*.csv) and the per-task
    heatmap."""
    files = []
    for key, rows in grouped.items():
        slug = protocol_slug(key)
        curves = [(row, *learning_curve(row, reps, seed)) for row in rows]
        paths = [out / f"curves-{slug}.png", out / f"curves-{slug}.csv", out / f"tasks-{slug}.png"]
        plot_curves(key, curves, paths[0])
        _write_curves_csv(key, curves, paths[1])
        plot_task_heatmap(key, rows, paths[2])
        files += paths
    return files


def _write_curves_csv(
    key: ProtocolKey, curves: list[tuple[Row, np.ndarray, dict[str, np.ndarray]]], path: Path
) -> None:
    columns = [*ROW_COLUMNS, "step", "n_seeds", *_bounded("mean", "iqm")]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row, steps, bands in curves:
            for i, step in enumerate(steps):
                record = {**_row_columns(key, row), "step": int(step), "n_seeds": len(row.runs)}
                for a in ("mean", "iqm"):
                    record.update(_estimate_columns(a, Estimate(*map(float, bands[a][:, i]))))
                writer.writerow(record)


def _write_csvs(
    grouped: dict[ProtocolKey, list[Row]], out: Path, reps: int, seed: int
) -> list[Path]:
    results = out / "results.csv"
    with results.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(csv_rows(grouped, reps, seed))
    tasks = out / "per_task.csv"
    columns = [*ROW_COLUMNS, "task", "n_seeds", *_bounded(*(f"{k}_mean" for k in KINDS))]
    with tasks.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for proto, rows in grouped.items():
            for row in rows:
                by_kind = {k: per_task(row, k, reps, seed) for k in KINDS}
                for task in row.tasks:
                    record = {**_row_columns(proto, row), "task": task, "n_seeds": len(row.runs)}
                    for k in KINDS:
                        record.update(_estimate_columns(f"{k}_mean", by_kind[k][task]))
                    writer.writerow(record)
    return [results, tasks]


def _markdown(
    grouped: dict[ProtocolKey, list[Row]],
    notes: list[str],
    found: int,
    plots: bool,
    reps: int,
    seed: int,
) -> str:
    used = sum(len(row.runs) for rows in grouped.values() for row in rows)
    parts = [
        "# mtrl report",
        "",
        f"{found} run folders found, {used} finished runs in the tables.",
        "",
        legend(reps, seed),
    ]
    for key, rows in grouped.items():
        slug = protocol_slug(key)
        parts += [
            "",
            f"## {protocol_label(key)}",
            "",
            statistic_note(key, rows),
            "",
            markdown_table(rows),
        ]
        if plots:
            parts += [
                "",
                f"![learning curves](curves-{slug}.png)",
                "",
                f"![final success per task](tasks-{slug}.png)",
            ]
    if notes:
        parts += ["", "## Notes", "", *(f"- {n}" for n in notes)]
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------- command line
def _reps(text: str) -> int:
    try:
        reps = int(text)
    except ValueError:
        reps = 0
    if reps < stats.MIN_REPS:
        raise argparse.ArgumentTypeError(
            f"must be an integer >= {stats.MIN_REPS} (2000 for a report, 50000 for numbers to "
            f"publish), got '{text}'"
        )
    return reps


def _parser() -> argparse.ArgumentParser:
    from mtrl.cli import OneLineParser
    from mtrl.triad_figure import COMPONENTS, METRICS

    parser = OneLineParser(
        prog=PROG,
        description="Tables (Markdown, CSV) and plots (learning curves, per-task heatmap) of the "
        "runs in RUN_OR_SWEEP_DIR..., with 95% stratified-bootstrap intervals (rliable). Runs of "
        "different benchmark protocols are never pooled. With --triad-figure: the PCGrad paper's "
        "Figure 4 (the tragic triad) from the runs instead.",
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="RUN_OR_SWEEP_DIR")
    parser.add_argument(
        "--out", type=Path, default=Path("report"), help="output folder (default: ./report)"
    )
    parser.add_argument(
        "--no-plots", action="store_true", help="tables only (no matplotlib needed)"
    )
    parser.add_argument(
        "--reps",
        type=_reps,
        default=stats.DEFAULT_REPS,
        help=f"bootstrap replicates per interval (default {stats.DEFAULT_REPS}; rliable's own "
        "default, 50000, for numbers to publish)",
    )
    parser.add_argument(
        "--bootstrap-seed",
        type=int,
        default=stats.DEFAULT_SEED,
        help=f"seed of the bootstrap: the same runs and seed give the same intervals "
        f"(default {stats.DEFAULT_SEED})",
    )
    parser.add_argument(
        "--baseline",
        metavar="METHOD_LABEL",
        help="the row (its label in the table, e.g. 'none' or 'pcgrad') every other row of its "
        "protocol is compared with; default: for each row, the row without surgery and balancer "
        "and otherwise the same config",
    )
    parser.add_argument(
        "--triad-figure",
        type=Path,
        metavar="PNG",
        help="write the PCGrad paper's Figure 4 from runs with tragic-triad diagnostics: "
        "curvature; share of positive cosines and, among conflicting task pairs, of condition (a) "
        "and of xi <= 1; per-task success or return; one colour per method (no tables)",
    )
    parser.add_argument(
        "--component",
        choices=COMPONENTS,
        default=COMPONENTS[0],
        help="whose loss's diagnostics --triad-figure plots (default: critic)",
    )
    parser.add_argument(
        "--triad-metric",
        choices=METRICS,
        default=METRICS[0],
        help="the right panel of --triad-figure: per-task evaluation success or return "
        "(default: success)",
    )
    return parser


def _missing_dependency(plots: bool) -> str:
    """One line naming what to install, or ''."""
    if plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return "the plots need matplotlib: pip install 'mtrl[report]' (or pass --no-plots)"
    try:
        import rliable.library  # noqa: F401
    except ImportError:
        return "the statistics need rliable: pip install 'mtrl[report]'"
    except Exception as exc:  # arch 7 (rliable's) raises TypeError on import beside pandas 3
        return (
            f"rliable does not import ({type(exc).__name__}: {exc}); its arch 7 needs pandas<3: "
            "pip install 'mtrl[report]'"
        )
    return ""


def report_main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    figure = args.triad_figure is not None
    if problem := _missing_dependency(plots=figure or not args.no_plots):
        print(f"{PROG}: error: {problem}", file=sys.stderr)
        return 2
    if figure:
        from mtrl.triad_figure import triad_main

        return triad_main(args)
    try:
        report = build_report(
            args.paths, args.out, not args.no_plots, args.reps, args.bootstrap_seed, args.baseline
        )
    except ValueError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    for note in report.notes:
        print(f"{PROG}: {note}", file=sys.stderr)
    if not report.grouped:
        print(f"{PROG}: error: no finished runs to report", file=sys.stderr)
        return 2
    print(legend(args.reps, args.bootstrap_seed))
    for key, rows in report.grouped.items():
        print(f"\n{protocol_label(key)}\n{statistic_note(key, rows)}\n{markdown_table(rows)}")
    print("\nwrote " + ", ".join(str(f) for f in report.files))
    return 0


if __name__ == "__main__":
    sys.exit(report_main())
