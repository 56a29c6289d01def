"""mtrl-report --triad-figure (the PCGrad paper's Figure 4) on synthetic run folders."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from run_folders import PAIR, TWO_TASKS, write_run

from mtrl.analysis.cli import report_main

library = pytest.importorskip("rliable.library")
pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REPS = ["--reps", "200"]
SEEDS = (0, 1, 2)
DIAG_STEPS = (100, 300, 500)
"""Training lines with diagnostics; those at 200, 400, 600 have none (as between diagnostic
updates)."""
SUCCESS = [[1.0, 0.0], [1.0, 0.3], [1.0, 0.8]]


def _diag(method: str, seed: int, step: int, component: str) -> dict[str, float]:
    """Diagnostics of one interval; pcgrad seed 1 has no conflicting pair at step 300."""
    offset = 0.1 if component == "actor" else 0.0
    conflict = 0.0 if (method, seed, step) == ("pcgrad", 1, 300) else 0.2 + 0.1 * seed + offset
    values = {
        "conflict": conflict,
        "curvature": step / 100 + seed + (2.0 if method == "pcgrad" else 0.0) + offset,
        "curvature_rel": 0.01 * step,
        "cos": 0.1,
        "gms": 0.5,
        "xi": 0.9,
        f"pair/{TWO_TASKS[0]}|{TWO_TASKS[1]}/cos": 0.1,
    }
    if conflict > 0:
        values["cond_a_given_conflict"] = 0.5 + 0.1 * seed - step / 1000
        values["xi_le_1_given_conflict"] = 0.9 - 0.1 * seed
    return {f"diag/{component}/{k}": v for k, v in values.items()}


def _runs(root: Path, components=("critic", "actor"), methods=("none", "pcgrad")) -> Path:
    for method in methods:
        for seed in SEEDS:
            lines = []
            for step in range(100, 700, 100):
                line = {"step": step, "train/critic_loss": 1.0}
                if step in DIAG_STEPS:
                    for component in components:
                        line.update(_diag(method, seed, step, component))
                lines.append(line)
            success = [[min(1.0, s + 0.1 * seed) for s in e] for e in SUCCESS]
            write_run(root / f"{method}-s{seed}", success, preset="mt10-short", seed=seed,
                      overrides=["train.eval_every=200"], benchmark=PAIR, tasks=TWO_TASKS,
                      surgery={"name": method}, train_lines=lines)  # fmt: skip
    return root


def _curves(path: Path) -> dict[tuple[str, str, int], dict[str, str]]:
    with path.open() as f:
        return {(r["method"], r["series"], int(r["step"])): r for r in csv.DictReader(f)}


def _figure(tmp_path: Path, runs: Path, *args: str) -> int:
    png = tmp_path / "fig" / "triad.png"
    return report_main([str(runs), "--triad-figure", str(png), *REPS, *args])


def _critic(method: str, step: int, key: str) -> list[float]:
    """The seeds' values of ``diag/critic/<key>`` (seeds without one left out)."""
    diags = [_diag(method, seed, step, "critic") for seed in SEEDS]
    return [d[f"diag/critic/{key}"] for d in diags if f"diag/critic/{key}" in d]


def test_triad_figure_from_runs(tmp_path, capsys):
    runs = _runs(tmp_path / "runs")
    assert _figure(tmp_path, runs) == 0, capsys.readouterr().err
    png = tmp_path / "fig" / "triad.png"
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 30_000
    assert "wrote" in capsys.readouterr().out
    curves = _curves(png.with_suffix(".csv"))
    # Only steps with diagnostics; the mean over seeds.
    steps = sorted({s for (m, n, s) in curves if m == "none" and n == "curvature"})
    assert steps == list(DIAG_STEPS)
    for method in ("none", "pcgrad"):
        for step in DIAG_STEPS:
            row = curves[(method, "curvature", step)]
            assert float(row["mean"]) == pytest.approx(np.mean(_critic(method, step, "curvature")))
            positive = curves[(method, "positive cosine", step)]
            expected = 1 - np.mean(_critic(method, step, "conflict"))
            assert float(positive["mean"]) == pytest.approx(expected)
            cond_a = _critic(method, step, "cond_a_given_conflict")
            row = curves[(method, "condition (a) | conflict", step)]
            assert float(row["mean"]) == pytest.approx(np.mean(cond_a))
            assert int(row["n_seeds"]) == len(cond_a)
    assert int(curves[("pcgrad", "xi <= 1 | conflict", 300)]["n_seeds"]) == 2
    # The band of the curvature is rliable's bootstrap of the mean over seeds (steps together).
    values = np.array([_critic("none", step, "curvature") for step in DIAG_STEPS]).T
    np.random.seed(0)
    _, interval = library.get_interval_estimates(
        {"x": values[:, None, :]}, lambda s: s.mean(axis=(0, 1)), reps=200
    )
    rows = [curves[("none", "curvature", step)] for step in DIAG_STEPS]
    found = [[float(row[bound]) for row in rows] for bound in ("low", "high")]
    np.testing.assert_array_equal(found, interval["x"])
    # Right panel: per-task success at the evaluations.
    task = curves[("pcgrad", f"task:{TWO_TASKS[1]}", 600)]
    assert float(task["mean"]) == pytest.approx(np.mean([0.8, 0.9, 1.0]))
    assert float(task["low"]) <= float(task["mean"]) <= float(task["high"])


def test_component_and_metric(tmp_path, capsys):
    runs = _runs(tmp_path / "runs")
    assert _figure(tmp_path, runs, "--component", "actor", "--triad-metric", "return") == 0
    curves = _curves(tmp_path / "fig" / "triad.csv")
    expected = np.mean([_diag("none", s, 100, "actor")["diag/actor/curvature"] for s in SEEDS])
    assert float(curves[("none", "curvature", 100)]["mean"]) == pytest.approx(expected)
    returns = float(curves[("none", f"task:{TWO_TASKS[0]}", 200)]["mean"])
    assert returns == pytest.approx(1000.0)  # the synthetic runs return 1000 x success
    capsys.readouterr()


def test_runs_without_diagnostics_one_line_exit_2(tmp_path, capsys):
    runs = _runs(tmp_path / "runs", components=("critic",))
    assert _figure(tmp_path, runs, "--component", "actor") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "6 of 6 runs have no tragic-triad diagnostics of the actor" in err
    write_run(runs / "plain", [[0.5, 0.5]], preset="mt10-short", benchmark=PAIR, tasks=TWO_TASKS,
              seed=7, overrides=["train.eval_every=200"], surgery={"name": "none"})  # fmt: skip
    assert _figure(tmp_path, runs) == 2
    assert "1 of 7 runs have no tragic-triad diagnostics of the critic" in capsys.readouterr().err
    assert not (tmp_path / "fig" / "triad.png").exists()


def test_one_protocol_per_figure(tmp_path, capsys):
    runs = _runs(tmp_path / "runs", methods=("none",))
    write_run(runs / "mt10", [0.5], preset="mt10-short", seed=0)
    assert _figure(tmp_path, runs) == 2
    err = capsys.readouterr().err
    assert "the figure compares runs of one protocol; these runs use 2" in err
    assert _figure(tmp_path, tmp_path / "nothing") == 2
    assert "no finished runs for the figure" in capsys.readouterr().err
