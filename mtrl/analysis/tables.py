"""The report's tables: Markdown (``report.md``, the terminal) and CSV (``results.csv``,
``per_task.csv``, the numbers behind each learning-curve plot)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mtrl.analysis.controls import BUDGET_STEP, CONTROL_KINDS, HELD, LATE, Control, Held
from mtrl.analysis.runs import KINDS, PROTOCOL_KEYS, ProtocolKey, Row, protocol_label, protocol_slug
from mtrl.analysis.stats import Estimate
from mtrl.analysis.summary import per_task
from mtrl.published import caveats, reference_setting

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


def write_tables(
    grouped: dict[ProtocolKey, list[Row]], out: Path, reps: int, seed: int
) -> list[Path]:
    results, tasks = out / "results.csv", out / "per_task.csv"
    write_csv(results, CSV_COLUMNS, csv_rows(grouped, reps, seed))
    columns = [*ROW_COLUMNS, "task", "n_seeds", *_bounded(*(f"{k}_mean" for k in KINDS))]
    write_csv(tasks, columns, _per_task_records(grouped, reps, seed))
    return [results, tasks]


def _per_task_records(
    grouped: dict[ProtocolKey, list[Row]], reps: int, seed: int
) -> Iterator[dict[str, Any]]:
    for proto, rows in grouped.items():
        for row in rows:
            by_kind = {k: per_task(row, k, reps, seed) for k in KINDS}
            for task in row.tasks:
                record = {**_row_columns(proto, row), "task": task, "n_seeds": len(row.runs)}
                for k in KINDS:
                    record.update(_estimate_columns(f"{k}_mean", by_kind[k][task]))
                yield record


def write_csv(path: Path, columns: list[str], records: Iterable[dict[str, Any]]) -> None:
    """A header line of ``columns``, then a line per record."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(records)


def write_curves_csv(
    key: ProtocolKey, curves: list[tuple[Row, np.ndarray, dict[str, np.ndarray]]], path: Path
) -> None:
    def records() -> Iterator[dict[str, Any]]:
        for row, steps, bands in curves:
            for i, step in enumerate(steps):
                record = {**_row_columns(key, row), "step": int(step), "n_seeds": len(row.runs)}
                for a in ("mean", "iqm"):
                    record.update(_estimate_columns(a, Estimate(*map(float, bands[a][:, i]))))
                yield record

    write_csv(path, [*ROW_COLUMNS, "step", "n_seeds", *_bounded("mean", "iqm")], records())


CONTROL_COLUMNS = [
    "task_set",
    "control_benchmark",
    "task",
    "method",
    "control_method",
    "n_seeds",
    "control_n_seeds",
    "transitions_per_task",
    "control_transitions_per_task",
    "control_cut_at",
    *_bounded(*(f"{k}_mean" for k in CONTROL_KINDS)),
    *_bounded(*(f"control_{k}_mean" for k in CONTROL_KINDS)),
    *_bounded(*(f"p_improvement_{k}" for k in CONTROL_KINDS)),
    *_bounded("first_solved_mean", "control_first_solved_mean"),
]


def _thousands(transitions: float) -> str:
    """``150k``."""
    return f"{transitions / 1000:g}k"


def controls_table(controls: list[Control]) -> str:
    """One line per task of a task-set row with a single-task control."""
    lines = [
        "| task | method | control | seeds | task set final % | alone final % | "
        "P(final: set > alone) | task set best % | alone best % | P(best: set > alone) | "
        f"task set, last {LATE} % | alone, last {LATE} % | P(last {LATE}: set > alone) | "
        "first solved, task set | first solved, alone | transitions per task (set / alone) |",
        "|---|---|---|---|" + "---:|" * 11 + "---|",
    ]
    for c in controls:
        cells = [
            c.task,
            c.row.label,
            f"{dict(c.control)['benchmark']}: {c.control_row.label}"
            + ("" if c.cut_at is None else f", cut at {_thousands(c.cut_at)}"),
            f"{len(c.row.runs)} / {len(c.control_row.runs)}",
        ]
        for k in CONTROL_KINDS:
            cells += [_cell(c.success[k]), _cell(c.control_success[k])]
            cells.append(_cell(c.improvement[k], 1.0, 2))
        cells += [_cell(estimate, 1.0, 0) for estimate in c.first_solved]
        cells.append(" / ".join(f"{n:.0f}" for n in c.transitions_per_task))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_controls(controls: list[Control], path: Path) -> None:
    write_csv(path, CONTROL_COLUMNS, map(_control_record, controls))


def _control_record(c: Control) -> dict[str, Any]:
    per_task, alone = c.transitions_per_task
    record = {
        "task_set": dict(c.task_set)["benchmark"],
        "control_benchmark": dict(c.control)["benchmark"],
        "task": c.task,
        "method": c.row.label,
        "control_method": c.control_row.label,
        "n_seeds": len(c.row.runs),
        "control_n_seeds": len(c.control_row.runs),
        "transitions_per_task": per_task,
        "control_transitions_per_task": alone,
        "control_cut_at": "" if c.cut_at is None else c.cut_at,
    }
    for k in CONTROL_KINDS:
        record.update(_estimate_columns(f"{k}_mean", c.success[k]))
        record.update(_estimate_columns(f"control_{k}_mean", c.control_success[k]))
        record.update(_estimate_columns(f"p_improvement_{k}", c.improvement[k]))
    task_set, alone = c.first_solved
    record.update(_estimate_columns("first_solved_mean", task_set))
    record.update(_estimate_columns("control_first_solved_mean", alone))
    return record


CONTROLS_LEGEND = (
    "Each task of a task set that was also trained alone (a single-task control: the same paper "
    "protocol, goal mode, horizon and reward): the task's mean success over the task set's seeds "
    "and over the control's, in percent with 95% bootstrap intervals, and the probability that "
    "a run of the task set scores higher on the task than a run alone (ties count half). "
    "**best**: the task's success at each run's best evaluation (best averaged over its tasks); "
    f"**last {LATE}**: its mean success over each run's last {LATE} evaluations (is it held?); "
    "**first solved**: the task's own transitions until its first success (a task set's step "
    "over its number of tasks; the budget where never solved), mean over seeds. "
    "The control of a method is a single-task row of the same method, else one without surgery "
    "and balancer: the one with the task set's budget per task, else the shortest longer one, cut "
    "at that budget (**cut at**: each run's evaluations up to it, the last of them its final, the "
    "budget its first solved where unsolved); a method whose controls all stop earlier has none "
    "(see the notes). controls.csv holds the numbers."
)


HELD_COLUMNS = [*ROW_COLUMNS, "task", "budget", "n_seeds", "held_seeds", *_bounded("late_mean")]


def held_table(held: list[Held]) -> str:
    """One line per single-task row and budget."""
    lines = [
        f"| benchmark | method | budget | seeds holding it | last {LATE} up to the budget % |",
        "|---|---|---:|---:|---:|",
    ]
    for h in held:
        cells = [
            str(dict(h.protocol)["benchmark"]),
            h.row.label,
            _thousands(h.budget),
            f"{h.held} / {len(h.row.runs)}",
            _cell(h.late),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_held(held: list[Held], path: Path) -> None:
    write_csv(path, HELD_COLUMNS, map(_held_record, held))


def _held_record(h: Held) -> dict[str, Any]:
    record = {
        **_row_columns(h.protocol, h.row),
        "task": h.task,
        "budget": h.budget,
        "n_seeds": len(h.row.runs),
        "held_seeds": h.held,
    }
    record.update(_estimate_columns("late_mean", h.late))
    return record


HELD_LEGEND = (
    f"Each task trained alone, at budgets B of {_thousands(BUDGET_STEP)}, "
    f"{_thousands(2 * BUDGET_STEP)}, ... transitions up to its runs' budget and at that budget: "
    f"a seed **holds** the task at B when its mean success over its last {LATE} evaluations up "
    f"to B (all of them where there are fewer) is at least {HELD:g} ({100 * HELD:.0f}%). "
    "**seeds holding it**: how many do; "
    f"**last {LATE} up to the budget**: that mean success, mean over the seeds, in percent with "
    "its 95% bootstrap interval (the runs read as if they had stopped at B, as a control cut at B "
    "is). held.csv holds the numbers."
)


def markdown_report(
    grouped: dict[ProtocolKey, list[Row]],
    notes: list[str],
    found: int,
    plots: bool,
    reps: int,
    seed: int,
    controls: list[Control],
    held: list[Held],
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
    if controls:
        parts += ["", "## Single-task controls", "", CONTROLS_LEGEND, "", controls_table(controls)]
    if held:
        parts += ["", "## Held alone by budget", "", HELD_LEGEND, "", held_table(held)]
    if notes:
        parts += ["", "## Notes", "", *(f"- {n}" for n in notes)]
    return "\n".join(parts) + "\n"
