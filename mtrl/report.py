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

from mtrl.config import RUN_ONLY_KEYS, flatten
from mtrl.logger import METRICS_FILE, read_metrics
from mtrl.published import Published, caveats, method_key, paper_number, reference_setting
from mtrl.rundir import CONFIG_FILE, META_FILE

PROTOCOL_KEYS = ("name", "benchmark", "goal_mode", "max_episode_steps", "reward_version")
"""What makes success rates comparable (mtrl.rundir records it in meta.json): runs that differ in
one of these are never pooled."""
SUCCESS = "eval/success"
TASK_PREFIX = "eval/success/"
PROG = "mtrl-report"

# Two-sided 95% Student t quantiles t(0.975, df) for df = 1..30 (standard table values).
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


# --------------------------------------------------------------------------- statistics
def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (95% two-sided CI)."""
    if df < 1:
        raise ValueError("a confidence interval needs at least two values")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964  # Cornish-Fisher expansion around the normal quantile; < 1e-3 off for df > 30
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def standard_error(values: Sequence[float]) -> float:
    """Sample standard deviation over sqrt(n); NaN for fewer than two values."""
    if len(values) < 2:
        return math.nan
    return float(np.std(values, ddof=1) / math.sqrt(len(values)))


def interquartile_mean(values: Sequence[float]) -> float:
    """Mean of the middle 50%: drop floor(n/4) values at each end (the mean when n < 4)."""
    ordered = np.sort(np.asarray(values, dtype=float))
    cut = len(ordered) // 4
    return float(ordered[cut : len(ordered) - cut].mean())


@dataclass
class Summary:
    n: int
    mean: float
    se: float
    iqm: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        return cls(
            len(values), float(np.mean(values)), standard_error(values), interquartile_mean(values)
        )


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
    def final_success(self) -> float:
        return float(self.final[SUCCESS])

    @property
    def max_success(self) -> float:
        return max(float(e[SUCCESS]) for e in self.evals)

    @property
    def tasks(self) -> list[str]:
        return [k.removeprefix(TASK_PREFIX) for k in self.final if k.startswith(TASK_PREFIX)]


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
    p = dict(key)
    raw = (
        f"{p['benchmark']}-{p['name']}-{p['goal_mode']}-h{p['max_episode_steps']}-"
        f"{p['reward_version']}"
    )
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in raw)


MethodId = tuple[str, str, str]
"""(model, surgery label, balancer label)."""


@dataclass
class Row:
    """One table row: runs of one protocol, method and config variant, one per seed."""

    protocol: ProtocolKey
    method: MethodId
    variant: str
    runs: list[Run] = field(default_factory=list)

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

    def final(self) -> Summary:
        return Summary.of([r.final_success for r in self.runs])

    def best(self) -> Summary:
        return Summary.of([r.max_success for r in self.runs])


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


def _differing_keys(runs: list[Run]) -> list[str]:
    keys = sorted(set().union(*(r.config for r in runs)))
    ignored = RUN_ONLY_KEYS | {f"env.{k}" for k in PROTOCOL_KEYS}
    return [
        k
        for k in keys
        if k not in ignored
        and not k.startswith(("surgery.", "balancer.", "checkpoint.", "logger."))
        and k not in ("agent.model", "agent.multi_head")
        and len({json.dumps(r.config.get(k), sort_keys=True) for r in runs}) > 1
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


# --------------------------------------------------------------------------- tables
CSV_COLUMNS = [
    "protocol",
    *PROTOCOL_KEYS[1:],
    "model",
    "method",
    "balancer",
    "variant",
    "deviations",
    "n_seeds",
    "seeds",
    "final_mean",
    "final_se",
    "final_iqm",
    "max_mean",
    "max_se",
    "max_iqm",
    "reported_statistic",
    "published_mean",
    "published_se",
    "published_source",
]


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.1f}"


def _mean_se(s: Summary) -> str:
    return f"{_pct(s.mean)} ± {_pct(s.se)}" if s.n > 1 else f"{_pct(s.mean)} (1 seed)"


def _published(row: Row) -> str:
    paper = row.published()
    if paper is None:
        return "—"
    se = "" if paper.stderr is None else f" ± {_pct(paper.stderr)}"
    return f"{_pct(paper.success)}{se} ({paper.label})"


def markdown_table(rows: list[Row]) -> str:
    lines = [
        "| method | seeds | final success % | final IQM % | max success % | max IQM % | paper % |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        final, best = row.final(), row.best()
        lines.append(
            f"| {row.label} | {final.n} | {_mean_se(final)} | {_pct(final.iqm)} | "
            f"{_mean_se(best)} | {_pct(best.iqm)} | {_published(row)} |"
        )
    return "\n".join(lines)


def statistic_note(key: ProtocolKey, rows: list[Row]) -> str:
    """Which column the protocol's papers report, and what keeps a paper's number away."""
    name = dict(key)["name"]
    statistic = rows[0].runs[0].statistic if rows else None
    if name == "none" or statistic is None:
        return "No paper protocol: no published number applies."
    column = "max" if statistic == "best" else "final"
    text = (
        f"Papers under the {name} protocol report the {statistic} evaluation of each run: "
        f"compare the **{column}** column with **paper**."
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


def csv_rows(grouped: dict[ProtocolKey, list[Row]]) -> list[dict[str, Any]]:
    out = []
    for proto, rows in grouped.items():
        protocol = dict(proto)
        for row in rows:
            final, best = row.final(), row.best()
            paper = row.published()
            model, method, balancer = row.method
            out.append(
                {
                    "protocol": protocol["name"],
                    **{k: protocol[k] for k in PROTOCOL_KEYS[1:]},
                    "model": model,
                    "method": method,
                    "balancer": balancer,
                    "variant": row.variant,
                    "deviations": json.dumps(row.deviations, sort_keys=True),
                    "n_seeds": final.n,
                    "seeds": " ".join(map(str, row.seeds)),
                    "final_mean": final.mean,
                    "final_se": "" if math.isnan(final.se) else final.se,
                    "final_iqm": final.iqm,
                    "max_mean": best.mean,
                    "max_se": "" if math.isnan(best.se) else best.se,
                    "max_iqm": best.iqm,
                    "reported_statistic": row.runs[0].statistic or "",
                    "published_mean": "" if paper is None else paper.success,
                    "published_se": "" if paper is None or paper.stderr is None else paper.stderr,
                    "published_source": "" if paper is None else paper.source,
                }
            )
    return out


def per_task(row: Row) -> dict[str, Summary]:
    """Final success per task over the row's seeds, tasks in one-hot order."""
    tasks = row.runs[0].tasks
    return {
        t: Summary.of(
            [float(r.final[TASK_PREFIX + t]) for r in row.runs if TASK_PREFIX + t in r.final]
        )
        for t in tasks
    }


# --------------------------------------------------------------------------- plots
def learning_curve(row: Row) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Steps, mean success, and the 95% t confidence band over seeds (NaN where n < 2)."""
    values: dict[int, list[float]] = defaultdict(list)
    for run in row.runs:
        for e in run.evals:
            values[int(e["step"])].append(float(e[SUCCESS]))
    steps = np.array(sorted(values))
    mean = np.array([np.mean(values[s]) for s in steps])
    half = np.array(
        [
            t975(len(values[s]) - 1) * standard_error(values[s]) if len(values[s]) > 1 else np.nan
            for s in steps
        ]
    )
    return steps, mean, np.clip(mean - half, 0, 1), np.clip(mean + half, 0, 1)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(key: ProtocolKey, rows: list[Row], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    for row in rows:
        steps, mean, low, high = learning_curve(row)
        (line,) = ax.plot(
            steps, mean, marker="o", markersize=3, label=f"{row.label} (n={len(row.runs)})"
        )
        if not np.isnan(low).all():
            ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel("environment steps (summed over tasks)")
    ax.set_ylabel("mean success rate over tasks")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{protocol_label(key)}\nmean over seeds, band: 95% t-interval", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_task_heatmap(key: ProtocolKey, rows: list[Row], path: Path) -> None:
    plt = _pyplot()
    tasks = list(dict.fromkeys(t for row in rows for t in row.runs[0].tasks))
    grid = np.full((len(rows), len(tasks)), np.nan)
    for i, row in enumerate(rows):
        for task, summary in per_task(row).items():
            grid[i, tasks.index(task)] = summary.mean
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


def build_report(paths: Sequence[Path], out: Path, plots: bool = True) -> Report:
    notes: list[str] = []
    run_dirs = find_run_dirs(paths, notes)
    out = Path(out).resolve()
    runs = [r for d in run_dirs if out not in d.parents and (r := load_run(d, notes))]
    grouped = group_runs(runs, notes)
    files: list[Path] = []
    if grouped:
        out.mkdir(parents=True, exist_ok=True)
        files += _write_csvs(grouped, out)
        if plots:
            for key, rows in grouped.items():
                slug = protocol_slug(key)
                plot_curves(key, rows, out / f"curves-{slug}.png")
                plot_task_heatmap(key, rows, out / f"tasks-{slug}.png")
                files += [out / f"curves-{slug}.png", out / f"tasks-{slug}.png"]
        markdown = _markdown(grouped, notes, len(run_dirs), plots)
        (out / "report.md").write_text(markdown, encoding="utf-8")
        files.insert(0, out / "report.md")
    else:
        markdown = ""
    return Report(grouped, notes, files, markdown)


def _write_csvs(grouped: dict[ProtocolKey, list[Row]], out: Path) -> list[Path]:
    results = out / "results.csv"
    with results.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(csv_rows(grouped))
    tasks = out / "per_task.csv"
    with tasks.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "protocol",
                *PROTOCOL_KEYS[1:],
                "model",
                "method",
                "balancer",
                "variant",
                "task",
                "n_seeds",
                "final_mean",
                "final_se",
            ]
        )
        for proto, rows in grouped.items():
            for row in rows:
                for task, s in per_task(row).items():
                    se = "" if math.isnan(s.se) else s.se
                    writer.writerow(
                        [*dict(proto).values(), *row.method, row.variant, task, s.n, s.mean, se]
                    )
    return [results, tasks]


def _markdown(
    grouped: dict[ProtocolKey, list[Row]], notes: list[str], found: int, plots: bool
) -> str:
    used = sum(len(row.runs) for rows in grouped.values() for row in rows)
    parts = [
        "# mtrl report",
        "",
        f"{found} run folders found, {used} finished runs in the tables.",
        'Success in percent. **final**: the last evaluation of each run (`"final": true`, '
        "`train.final_eval_episodes` episodes per task); **max**: the best evaluation of each run "
        "(what the mtrl-family papers report). Mean ± standard error over seeds; IQM: "
        "interquartile mean over seeds (the middle 50%; the plain mean below 4 seeds). "
        "Protocols are never pooled. **paper**: the published number (mean ± s.e.) for this "
        "method under this protocol, with its source in results.csv, only where the runs follow "
        "the protocol without deviations and the paper's preset in every setting that changes "
        "results (results.csv names the source; the README's table names the presets).",
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
def _parser() -> argparse.ArgumentParser:
    from mtrl.cli import OneLineParser

    parser = OneLineParser(
        prog=PROG,
        description="Tables (Markdown, CSV) and plots (learning curves, per-task heatmap) of the "
        "runs in RUN_OR_SWEEP_DIR... Runs of different benchmark protocols are never pooled.",
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="RUN_OR_SWEEP_DIR")
    parser.add_argument(
        "--out", type=Path, default=Path("report"), help="output folder (default: ./report)"
    )
    parser.add_argument(
        "--no-plots", action="store_true", help="tables only (no matplotlib needed)"
    )
    return parser


def report_main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if not args.no_plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print(
                f"{PROG}: error: plots need matplotlib: pip install 'mtrl[report]' "
                "(or pass --no-plots)",
                file=sys.stderr,
            )
            return 2
    report = build_report(args.paths, args.out, plots=not args.no_plots)
    for note in report.notes:
        print(f"{PROG}: {note}", file=sys.stderr)
    if not report.grouped:
        print(f"{PROG}: error: no finished runs to report", file=sys.stderr)
        return 2
    for key, rows in report.grouped.items():
        print(f"\n{protocol_label(key)}\n{statistic_note(key, rows)}\n{markdown_table(rows)}")
    print("\nwrote " + ", ".join(str(f) for f in report.files))
    return 0


if __name__ == "__main__":
    sys.exit(report_main())
