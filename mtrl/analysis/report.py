"""``mtrl-report``'s report of many runs: read, group, summarize, then write the tables and
figures into one folder."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mtrl.analysis import stats
from mtrl.analysis.controls import find_controls, held_by_budget
from mtrl.analysis.figures import plot_curves, plot_task_heatmap
from mtrl.analysis.runs import ProtocolKey, Row, group_runs, load_runs, protocol_slug
from mtrl.analysis.summary import check_baseline, learning_curve, summarize
from mtrl.analysis.tables import (
    markdown_report,
    write_controls,
    write_curves_csv,
    write_held,
    write_tables,
)


@dataclass
class Report:
    grouped: dict[ProtocolKey, list[Row]]
    notes: list[str]
    files: list[Path]
    markdown: str


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
        files += write_tables(grouped, out, reps, seed)
        controls = find_controls(grouped, reps, seed, notes)
        if controls:
            write_controls(controls, out / "controls.csv")
            files.append(out / "controls.csv")
        held = held_by_budget(grouped, reps, seed)
        if held:
            write_held(held, out / "held.csv")
            files.append(out / "held.csv")
        if plots:
            files += _write_plots(grouped, out, reps, seed)
        markdown = markdown_report(grouped, notes, found, plots, reps, seed, controls, held)
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
        write_curves_csv(key, curves, paths[1])
        plot_task_heatmap(key, rows, paths[2])
        files += paths
    return files
