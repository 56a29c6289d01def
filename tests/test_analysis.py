"""mtrl.analysis: the report unchanged on the archived study logs, the claims weighted by
diagnostic updates (against a hand-computed case), and single-task controls beside a pair."""

from __future__ import annotations

import csv
import json
import math
import shutil
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from run_folders import PAIR, TWO_TASKS, write_run

from mtrl.analysis.claims import diagnostic_counts, run_claims
from mtrl.analysis.cli import report_main
from mtrl.analysis.controls import find_controls
from mtrl.analysis.runs import group_runs, load_runs
from mtrl.analysis.stats import probability_of_improvement
from mtrl.config import load_config

pytest.importorskip("rliable.library")

ROOT = Path(__file__).resolve().parent.parent
STUDY = ROOT / "docs" / "results"
PAIR_REPORT = STUDY / "pcgrad-pair"
HARD = "button-press-topdown-v3"
ALONE = f"train.total_steps={load_config('mt10-short').train.total_steps // 2}"
"""The budget of a control beside a pair at mt10-short's: the pair's per task (the control is
compared as it ran, not cut)."""


MT10_RUNS = ("mt10-", "fig3-")
"""The study's MT10 runs, reported apart (docs/results/pcgrad-mt10), as `scripts/study_pcgrad.sh
report` does."""
TRIAD_FIGURES = ("fig4", "longpair")
"""The pair's studies with a triad figure (``<study>.png`` and its numbers, ``<study>.csv``)."""


@pytest.fixture(scope="module")
def study_runs(tmp_path_factory) -> Path:
    """The finished runs' logs of the PCGrad study, as scripts/study_pcgrad.sh restores them."""
    root = tmp_path_factory.mktemp("study")
    with tarfile.open(STUDY / "pcgrad-study-runs.tar.gz") as archive:
        archive.extractall(root, filter="data")
    return root


def test_report_outputs_unchanged_on_the_archived_study_logs(study_runs, tmp_path):
    """The committed report and triad figures' numbers are what the archived logs give (the pair,
    its controls and the long runs, as `scripts/study_pcgrad.sh report` writes them): the same
    tables and CSVs (the claims have their own test), the figures with the paper's H of the sum."""
    pytest.importorskip("matplotlib")
    out = tmp_path / "report"
    pair = [str(p) for p in sorted(study_runs.iterdir()) if not p.name.startswith(MT10_RUNS)]
    assert report_main([*pair, "--out", str(out)]) == 0
    names = {p.name for p in PAIR_REPORT.iterdir() if p.suffix in (".csv", ".md")}
    made = {p.name for p in out.iterdir() if p.suffix in (".csv", ".md")}
    figures = {f"{study}.csv" for study in TRIAD_FIGURES if any(study_runs.glob(f"{study}-*"))}
    assert made == names - figures - {"claims.md"}  # every table committed, held.csv too
    for name in sorted(made):
        assert (out / name).read_text() == (PAIR_REPORT / name).read_text(), name
    for name in sorted(figures):
        runs = [str(p) for p in sorted(study_runs.glob(f"{Path(name).stem}-*"))]
        png = str(out / Path(name).with_suffix(".png"))
        assert report_main([*runs, "--triad-figure", png]) == 0
        after = list(csv.reader((out / name).open()))
        assert after == list(csv.reader((PAIR_REPORT / name).open())), name
        assert {"curvature, L = sum", "curvature / |grad L|^2, L = sum"} <= {r[1] for r in after}


def test_mt10_report_unchanged_on_the_archived_study_logs(study_runs, tmp_path):
    """MT10 and Figure 3's runs are reported apart, in docs/results/pcgrad-mt10: the committed
    tables are what their archived logs give (and there is no such folder before they exist)."""
    runs = [str(p) for p in sorted(study_runs.iterdir()) if p.name.startswith(MT10_RUNS)]
    committed = STUDY / "pcgrad-mt10"
    if not runs:
        assert not committed.exists()
        return
    pytest.importorskip("matplotlib")
    out = tmp_path / "report"
    assert report_main([*runs, "--out", str(out)]) == 0
    for made in sorted(p for p in out.iterdir() if p.suffix in (".csv", ".md")):
        assert made.read_text() == (committed / made.name).read_text(), made.name


def test_claims_on_the_archived_logs_weight_intervals_by_diagnostic_updates(study_runs, tmp_path):
    """The review's numbers, on the nine runs it read (none seeds 0-4, PCGrad 0-3): (a) among
    conflicting critic iterations before the task is solved, 0.071 (none) and 0.067 (PCGrad)
    once each interval counts its diagnostic updates."""
    out = tmp_path / "claims"
    reviewed = [study_runs / f"fig4-none-s{s}" for s in range(5)]
    reviewed += [study_runs / f"fig4-pcgrad-s{s}" for s in range(4)]
    args = [*map(str, reviewed), "--claims", HARD, "--out", str(out), "--reps", "100"]
    assert report_main(args) == 0
    text = (out / "claims.md").read_text()
    row = next(line for line in text.splitlines() if "(a) among conflicts, before the" in line)
    assert "| 0.07 [" in row and "(n=5) | 0.07 [" in row
    assert "| most conflicts meet (a) before the task is solved | none | mean 0.071 [" in text
    assert "| most conflicts meet (a) before the task is solved | pcgrad | mean 0.067 [" in text
    for heading in ("Figure 4: verdicts", "Figure 3: the ordering", "Section 5.2: MT10"):
        assert heading in text


def test_the_learning_claim_compares_pcgrad_with_none_at_the_same_budget(study_runs, tmp_path):
    """The pair at two budgets (here: three seeds per method of Figure 4, and the same logs again
    as if run at 400k transitions): one learning verdict per budget, PCGrad against none of that
    budget, never across budgets; the same logs give the same probabilities."""
    runs = []
    for method in ("none", "pcgrad"):
        for seed in range(3):
            run = study_runs / f"fig4-{method}-s{seed}"
            longer = shutil.copytree(run, tmp_path / f"longpair-{method}-s{seed}")
            config = longer / "config.yaml"
            text = config.read_text().replace("total_steps: 120000", "total_steps: 400000")
            config.write_text(text)
            runs += [run, longer]
    out = tmp_path / "claims"
    assert report_main([*map(str, runs), "--claims", HARD, "--out", str(out), "--reps", "100"]) == 0
    rows = [line for line in (out / "claims.md").read_text().splitlines() if "P(pcgrad" in line]
    compared = {line.split("|")[3].split(")")[0] + ")" for line in rows}
    budgets = ("train.total_steps=120000", "train.total_steps=400000")
    assert compared == {f" P(pcgrad [{b}] > none [{b}])" for b in budgets}
    assert len(rows) == 3 * len(budgets)  # final, best, last 10, per budget
    short, long = ([r.split("|")[3].split("]) ", 1)[1] for r in rows if b in r] for b in budgets)
    assert short == long


def test_diagnostic_counts_follow_the_cumulative_update_count():
    # The study's runs: 501 updates by the first log line after the warm-up, then 1000 per line.
    assert diagnostic_counts([0, 501, 1501, 2501], 25) == [0, 20, 40, 40]
    # Update n computes diagnostics when n % every == 0: 10, 20 | 30, 40, 50, 60 | 70 | none.
    assert diagnostic_counts([5, 25, 60, 70, 79], 10) == [0, 2, 4, 1, 0]


def _write_metrics(path: Path, lines: list[dict]) -> Path:
    path.mkdir(parents=True)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


def test_shares_and_curvature_are_weighted_by_diagnostic_updates(tmp_path):
    """Three intervals holding 2, 4 and 1 diagnostic updates (every 10 updates)."""
    intervals = [  # step, updates so far, conflict, cond_a, xi_le_1, H of the mean, H/|g|^2
        (100, 20, 0.5, 0.4, 0.1, 1.0, 0.02),
        (200, 60, 0.25, 0.05, 0.0, 2.0, 0.01),
        (300, 70, 1.0, 0.2, 0.5, -4.0, 0.04),
    ]
    lines = []
    for step, updates, conflict, cond_a, xi, h, rel in intervals:
        diag = {"conflict": conflict, "cond_a": cond_a, "xi_le_1": xi}
        diag |= {"curvature": h, "curvature_rel": rel}
        lines.append(
            {"step": step, "train/updates": updates, "train/critic_loss": 1.0}
            | {f"diag/critic/{k}": v for k, v in diag.items()}
        )
        solved = 1.0 if step == 300 else 0.0
        lines.append({"step": step, "eval/success": 0.5, f"eval/success/{HARD}": solved})
    result = run_claims(_write_metrics(tmp_path / "run", lines), HARD, "critic", 10, 2)
    # Before the task is first solved (step 300 included): (2*.4 + 4*.05 + 1*.2) / (2*.5 + 4*.25
    # + 1*1) = 1.2 / 3; averaging the intervals' ratios as if equal would give 0.65 / 1.75.
    assert result["cond_a_before"] == pytest.approx(0.4)
    assert result["xi_before"] == pytest.approx((0.2 + 0.0 + 0.5) / 3)
    assert math.isnan(result["cond_a_after"])  # no interval after step 300
    assert result["cond_a_10k"] == pytest.approx(0.4)
    assert result["h_positive"] == pytest.approx(6 / 7)  # the third interval's H < 0
    assert result["conflict"] == pytest.approx((2 * 0.5 + 4 * 0.25 + 1.0) / 7)
    # Thirds of three intervals: one each. H of the sum is K = 2 times H of the mean; the ratio
    # H / |grad L|^2 of the sum is 1/K times the mean's.
    assert result["h_early"] == pytest.approx(2.0)
    assert result["h_late"] == pytest.approx(-8.0)
    assert math.isnan(result["h_growth"])  # no log ratio of a negative curvature
    assert result["rel_early"] == pytest.approx(0.01)
    assert result["rel_growth"] == pytest.approx(math.log(2.0))
    assert result["first_solved"] == 300 and result["solved"] == 1.0


def _pair_and_controls(root: Path) -> Path:
    """Pair runs (none, pcgrad; 3 seeds) and single-task controls of button-press-topdown."""
    pair = {"none": [0.0, 0.2, 0.4], "pcgrad": [0.6, 0.8, 1.0]}
    alone = [0.4, 0.6, 0.8]
    for method, hard in pair.items():
        for seed, value in enumerate(hard):
            write_run(
                root / f"pair-{method}-s{seed}", [[1.0, value]], preset="mt10-short", seed=seed,
                benchmark=PAIR, tasks=TWO_TASKS, surgery={"name": method},
            )  # fmt: skip
    for seed, value in enumerate(alone):
        write_run(
            root / f"alone-s{seed}", [[value]], preset="mt10-short", seed=seed,
            benchmark=f"mt50:{HARD}", tasks=(HARD,), surgery={"name": "none"}, overrides=[ALONE],
        )  # fmt: skip
    return root


def test_single_task_controls_beside_the_pair_with_per_task_improvement(tmp_path):
    runs = _pair_and_controls(tmp_path / "runs")
    out = tmp_path / "report"
    assert report_main([str(runs), "--out", str(out), "--no-plots", "--reps", "200"]) == 0
    markdown = (out / "report.md").read_text()
    assert "## Single-task controls" in markdown
    with (out / "controls.csv").open() as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"none", "pcgrad"}
    alone = np.array([[0.4], [0.6], [0.8]])
    for method, hard in (("none", [0.0, 0.2, 0.4]), ("pcgrad", [0.6, 0.8, 1.0])):
        row = rows[method]
        assert row["task"] == HARD and row["control_method"] == "none"
        assert row["task_set"] == PAIR and row["control_benchmark"] == f"mt50:{HARD}"
        assert float(row["final_mean"]) == pytest.approx(np.mean(hard))
        assert float(row["control_final_mean"]) == pytest.approx(0.6)
        expected = probability_of_improvement(np.array(hard)[:, None], alone)
        assert float(row["p_improvement_final"]) == pytest.approx(expected)
        assert (
            float(row["p_improvement_final_low"])
            <= expected
            <= float(row["p_improvement_final_high"])
        )
    assert (
        float(rows["none"]["p_improvement_final"])
        < 0.5
        < float(rows["pcgrad"]["p_improvement_final"])
    )


def test_a_report_without_controls_writes_no_controls_file(tmp_path):
    runs = _pair_and_controls(tmp_path / "runs")
    for seed in range(3):
        (runs / f"alone-s{seed}" / "metrics.jsonl").unlink()
    out = tmp_path / "report"
    assert report_main([str(runs), "--out", str(out), "--no-plots", "--reps", "200"]) == 0
    assert not (out / "controls.csv").exists()
    assert "Single-task controls" not in (out / "report.md").read_text()


def test_without_rliable_no_plots_is_not_suggested(tmp_path, monkeypatch, capsys):
    """--no-plots still needs rliable: the message names the extra, as a checkout installs it."""
    monkeypatch.setitem(sys.modules, "rliable.library", None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert report_main([str(tmp_path), "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert "rliable" in err and "pip install -e '.[report]'" in err and "--no-plots" not in err


def test_controls_report_whether_the_task_is_held_and_when_it_is_first_solved(tmp_path):
    """``late``: the mean of the last 10 evaluations; ``first solved``: the task's own
    transitions until its first success (the pair's step over 2), the budget when unsolved."""
    every = load_config("mt10-short").train.eval_every
    budget = load_config("mt10-short").train.total_steps
    pair = [[1.0, 0.0]] * 3 + [[1.0, 1.0]] + [[1.0, 0.0]] * 11  # solved once, at eval 4
    for seed in range(2):
        write_run(
            tmp_path / f"pair-s{seed}", pair, preset="mt10-short", seed=seed,
            benchmark=PAIR, tasks=TWO_TASKS, surgery={"name": "none"},
        )  # fmt: skip
    alone = {0: [0.0] * 5 + [1.0] * 10, 1: [0.0] * 15}  # held from eval 6; never solved
    for seed, values in alone.items():
        write_run(
            tmp_path / f"alone-s{seed}", [[v] for v in values], preset="mt10-short", seed=seed,
            benchmark=f"mt50:{HARD}", tasks=(HARD,), surgery={"name": "none"}, overrides=[ALONE],
        )  # fmt: skip
    out = tmp_path / "report"
    assert report_main([str(tmp_path), "--out", str(out), "--no-plots", "--reps", "200"]) == 0
    with (out / "controls.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert float(row["late_mean"]) == pytest.approx(0.0)
    assert float(row["control_late_mean"]) == pytest.approx(0.5)
    assert float(row["p_improvement_late"]) == pytest.approx(0.25)  # 0 < 1 and 0 == 0 (half)
    assert float(row["first_solved_mean"]) == pytest.approx(4 * every / 2)
    assert float(row["control_first_solved_mean"]) == pytest.approx(
        (6 * every + budget / 2) / 2
    )  # ALONE
    assert "last 10 %" in (out / "report.md").read_text()


def _by_budget_runs(root: Path, pair_per_task: int, controls: dict[int, list[float]]) -> Path:
    """The pair at ``pair_per_task`` transitions per task (3 seeds, an evaluation every 10k of the
    pair's transitions, button-press-topdown never solved) and, per budget, 3 seeds of
    button-press-topdown alone with the given successes (an evaluation every 10k)."""
    every = "train.eval_every=10000"
    for seed in range(3):
        write_run(
            root / f"pair-s{seed}", [[1.0, 0.0]] * (2 * pair_per_task // 10_000),
            preset="mt10-short", seed=seed, benchmark=PAIR, tasks=TWO_TASKS,
            surgery={"name": "none"}, overrides=[f"train.total_steps={2 * pair_per_task}", every],
        )  # fmt: skip
        for budget, values in controls.items():
            write_run(
                root / f"alone-{budget}-s{seed}", [[v] for v in values], preset="mt10-short",
                seed=seed, benchmark=f"mt50:{HARD}", tasks=(HARD,), surgery={"name": "none"},
                overrides=[f"train.total_steps={budget}", every],
            )  # fmt: skip
    return root


def _controls_csv(runs: Path, out: Path) -> list[dict[str, str]]:
    assert report_main([str(runs), "--out", str(out), "--no-plots", "--reps", "200"]) == 0
    with (out / "controls.csv").open() as f:
        return list(csv.DictReader(f))


def test_the_control_with_the_task_sets_budget_per_task_is_chosen(tmp_path):
    """60k and 300k alone beside the pair at 60k per task: the 60k control, not cut."""
    runs = _by_budget_runs(tmp_path / "runs", 60_000, {60_000: [0.2] * 6, 300_000: [1.0] * 30})
    (row,) = _controls_csv(runs, tmp_path / "report")
    assert row["control_method"] == "none [train.total_steps=60000]"
    assert float(row["control_transitions_per_task"]) == 60_000
    assert row["control_cut_at"] == ""
    assert float(row["control_final_mean"]) == pytest.approx(0.2)
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert f"| mt50:{HARD}: none [train.total_steps=60000] |" in markdown


def test_a_longer_control_is_cut_at_the_task_sets_budget_per_task(tmp_path):
    """Alone for 300k, solved only after 60k: cut at the pair's 60k per task it is never solved
    (final, best and last 10 at 0, first solved at the budget); the runs read stay whole."""
    alone = [0.0] * 6 + [1.0] * 24  # evaluations at 10k, ..., 300k: solved from 70k on
    runs = _by_budget_runs(tmp_path / "runs", 60_000, {300_000: alone})
    out = tmp_path / "report"
    (row,) = _controls_csv(runs, out)
    assert row["control_method"] == "none"  # the only row of the method: no variant
    assert float(row["control_cut_at"]) == 60_000
    assert float(row["control_transitions_per_task"]) == 60_000
    for kind in ("final", "best", "late"):
        assert float(row[f"control_{kind}_mean"]) == 0.0, kind
    assert float(row["control_first_solved_mean"]) == 60_000
    assert f"| mt50:{HARD}: none, cut at 60k |" in (out / "report.md").read_text()

    notes: list[str] = []
    grouped = group_runs(load_runs([runs], notes)[0], notes)
    (control,) = find_controls(grouped, 200, 0, notes)
    assert control.cut_at == 60_000
    assert [e["step"] for e in control.control_row.runs[0].evals][-1] == 60_000
    (original,) = grouped[control.control]
    assert control.control_row is not original
    for run in original.runs:
        assert len(run.evals) == 30 and run.config["train.total_steps"] == 300_000


def test_no_control_when_every_control_is_shorter_than_the_task_sets_budget(tmp_path):
    runs = _by_budget_runs(tmp_path / "runs", 60_000, {30_000: [1.0] * 3})
    out = tmp_path / "report"
    assert report_main([str(runs), "--out", str(out), "--no-plots", "--reps", "200"]) == 0
    assert not (out / "controls.csv").exists()
    markdown = (out / "report.md").read_text()
    assert "## Single-task controls" not in markdown
    assert f"no single-task control of {HARD} runs and is evaluated up to its 60000" in markdown


def test_held_alone_by_budget_against_a_hand_computed_case(tmp_path):
    """Alone, evaluated every 10k: button-press-topdown for 150k (budgets 50k, 100k, 150k) and
    reach for 70k (50k and its own 70k), no task set beside them. Held at B: a mean success of at
    least 0.8 over the last 10 evaluations up to B (all of them where there are fewer: 5 at 50k,
    7 at reach's 70k)."""
    alone = {
        HARD: (150_000, [[0.0] * 5 + [1.0] * 10, [0.0] * 2 + [1.0] * 13, [1.0] * 15]),
        "reach-v3": (70_000, [[0.0] * 4 + [1.0] * 3, [1.0] * 7]),
    }
    for task, (budget, seeds) in alone.items():
        for seed, values in enumerate(seeds):
            write_run(
                tmp_path / "runs" / f"{task}-s{seed}", [[v] for v in values], preset="mt10-short",
                seed=seed, benchmark=f"mt50:{task}", tasks=(task,), surgery={"name": "none"},
                overrides=[f"train.total_steps={budget}", "train.eval_every=10000"],
            )  # fmt: skip
    out = tmp_path / "report"
    assert report_main([str(tmp_path / "runs"), "--out", str(out), "--no-plots"]) == 0
    with (out / "held.csv").open() as f:
        rows = {(r["task"], int(r["budget"])): r for r in csv.DictReader(f)}
    expected = {  # (held seeds, mean late success), seed by seed
        (HARD, 50_000): (1, (0.0 + 0.6 + 1.0) / 3),  # 5 evaluations: 0s; 0,0,1,1,1; 1s
        (HARD, 100_000): (2, (0.5 + 0.8 + 1.0) / 3),  # 0.8 is held
        (HARD, 150_000): (3, 1.0),
        ("reach-v3", 50_000): (1, (0.2 + 1.0) / 2),
        ("reach-v3", 70_000): (1, (3 / 7 + 1.0) / 2),  # the row's own budget, not a multiple
    }
    assert set(rows) == set(expected)
    for key, (held, late) in expected.items():
        row = rows[key]
        assert int(row["held_seeds"]) == held, key
        assert float(row["late_mean"]) == pytest.approx(late), key
        assert float(row["late_mean_low"]) <= late <= float(row["late_mean_high"]), key
        assert int(row["n_seeds"]) == len(alone[key[0]][1])
    markdown = (out / "report.md").read_text()
    assert "## Held alone by budget" in markdown and "## Single-task controls" not in markdown
    assert "is at least 0.8 (80%)" in markdown
    assert f"| mt50:{HARD} | none | 100k | 2 / 3 | 76.7 [" in markdown
    assert not (out / "controls.csv").exists()
