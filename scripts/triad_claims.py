"""The PCGrad paper's Figure 4 claims (Section 5.3), tested on finished runs of one task set.

For each run it finds when the hard task was first solved (the first evaluation with success 1)
and computes, from the gradient diagnostics (``diag/<component>/...``, see the surgery docs):

- the curvature H: the share of log intervals with H > 0, and its mean in the first and the last
  third of the run (does it stay positive and grow?);
- among the conflicting (update, task pair)s before the hard task was first solved, and after it,
  the shares meeting condition (a) of Theorem 2 and xi <= 1 (a ratio of conflict-weighted
  interval means: every interval holds the same number of diagnostic updates);
- the hard task's success: final, best, the mean over the last ten evaluations, and whether and
  when it was first solved.

Per method (a row of mtrl-report): the mean over seeds with a 95% bootstrap interval
(:mod:`mtrl.stats`, rliable), and each method's probability of improvement over the row
without surgery and balancer on the hard task's success. Markdown tables on stdout.

    python scripts/triad_claims.py runs/study/fig4-*/ --task button-press-topdown-v3
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mtrl.logger import read_metrics
from mtrl.report import Row, group_runs, load_runs
from mtrl.stats import Estimate, aggregates, improvement

CLAIMS = {
    "curvature_positive": "intervals with H > 0",
    "curvature_early": "mean H, first third",
    "curvature_late": "mean H, last third",
    "cond_a_before": "(a) among conflicts, before the task is solved",
    "xi_before": "xi <= 1 among conflicts, before",
    "cond_a_after": "(a) among conflicts, after",
    "xi_after": "xi <= 1 among conflicts, after",
    "conflict": "task pairs in conflict",
}
SUCCESS = {
    "solved": "seeds that solved it at least once",
    "first_solved": "first solved at (transitions; unsolved seeds: the budget)",
    "final": "final success",
    "best": "best success",
    "late": "mean success, last 10 evaluations",
}


def run_statistics(path: Path, task: str, component: str) -> dict[str, float]:
    records = read_metrics(path)
    evals = [r for r in records if f"eval/success/{task}" in r]
    solved = [r["step"] for r in evals if r[f"eval/success/{task}"] >= 1.0]
    first = solved[0] if solved else math.inf
    prefix = f"diag/{component}/"
    diag = [r for r in records if prefix + "curvature" in r]
    if not diag:
        raise SystemExit(f"{path}: no {prefix}curvature lines (trained without diagnostics?)")
    curvature = np.array([r[prefix + "curvature"] for r in diag])
    third = max(len(diag) // 3, 1)
    out = {
        "curvature_positive": float((curvature > 0).mean()),
        "curvature_early": float(curvature[:third].mean()),
        "curvature_late": float(curvature[-third:].mean()),
        "conflict": float(np.mean([r[prefix + "conflict"] for r in diag])),
        "solved": float(bool(solved)),
        "first_solved": float(first if solved else evals[-1]["step"]),
        "final": float(evals[-1][f"eval/success/{task}"]),
        "best": float(max(r[f"eval/success/{task}"] for r in evals)),
        "late": float(np.mean([r[f"eval/success/{task}"] for r in evals[-10:]])),
    }
    for when, lines in (
        ("before", [r for r in diag if r["step"] <= first]),
        ("after", [r for r in diag if r["step"] > first]),
    ):
        conflicts = sum(r[prefix + "conflict"] for r in lines)
        for key, share in (("cond_a", "cond_a"), ("xi", "xi_le_1")):
            met = sum(r[prefix + share] for r in lines)
            out[f"{key}_{when}"] = met / conflicts if conflicts > 0 else math.nan
    return out


def estimate(values: Sequence[float], reps: int, seed: int) -> Estimate:
    """Mean over the seeds that have a value, with its bootstrap interval."""
    present = np.array([v for v in values if not math.isnan(v)])
    if len(present) == 0:
        return Estimate(math.nan)
    return aggregates(present[:, None], reps, seed)["mean"]


def show(e: Estimate, n: int, digits: int) -> str:
    if math.isnan(e.value):
        return "—"
    text = f"{e.value:.{digits}f}"
    if e.has_interval:
        text += f" [{e.low:.{digits}f}, {e.high:.{digits}f}]"
    return f"{text} (n={n})"


def table(rows: list[Row], stats: dict[str, list[dict]], names: dict[str, str], args) -> str:
    labels = [row.label for row in rows]
    lines = ["| | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for key, name in names.items():
        cells = []
        for label in labels:
            values = [s[key] for s in stats[label]]
            n = sum(not math.isnan(v) for v in values)
            digits = 0 if key == "first_solved" else 3 if key.startswith("curvature_e") else 2
            digits = 3 if key == "curvature_late" else digits
            cells.append(show(estimate(values, args.reps, args.bootstrap_seed), n, digits))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--task", default="button-press-topdown-v3", help="the hard task")
    parser.add_argument("--components", nargs="+", default=["critic", "actor"])
    parser.add_argument("--reps", type=int, default=2000)
    parser.add_argument("--bootstrap-seed", type=int, default=0)
    args = parser.parse_args(argv)
    notes: list[str] = []
    runs, _ = load_runs(args.runs, notes)
    for note in notes:
        print(f"note: {note}")
    grouped = group_runs(runs, notes)
    if len(grouped) != 1:
        raise SystemExit("give the runs of one task set and protocol")
    rows = next(iter(grouped.values()))
    baseline = next((row for row in rows if row.label == "none"), None)
    first = {
        row.label: [run_statistics(r.path, args.task, "critic") for r in row.runs] for row in rows
    }
    print(f"## {args.task}: success per method (mean over seeds, 95% bootstrap interval)\n")
    print(table(rows, first, SUCCESS, args))
    if baseline is not None:
        print(f"\nP(method > none) on {args.task}, 95% interval:\n")
        for row in rows:
            if row is baseline:
                continue
            cells = []
            for key in ("final", "best", "late"):
                x = np.array([[s[key]] for s in first[row.label]])
                y = np.array([[s[key]] for s in first[baseline.label]])
                e = improvement(x, y, args.reps, args.bootstrap_seed)
                cells.append(f"{key} {e.value:.2f} [{e.low:.2f}, {e.high:.2f}]")
            print(f"- {row.label}: " + "; ".join(cells))
    for component in args.components:
        stats = {
            row.label: [run_statistics(r.path, args.task, component) for r in row.runs]
            for row in rows
        }
        print(f"\n## the tragic triad, {component} loss (before/after: {args.task} first solved)\n")
        print(table(rows, stats, CLAIMS, args))


if __name__ == "__main__":
    main()
