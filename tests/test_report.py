"""mtrl-report on run folders from tiny real runs (and copies of them with known numbers)."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import yaml
from run_folders import PAIR, TWO_TASKS, write_run

from mtrl.analysis.cli import report_main
from mtrl.analysis.runs import protocol_slug
from mtrl.cli import train_main
from mtrl.config import flatten, load_config
from mtrl.published import PUBLISHED, MethodKey, lookup, method_key, paper_number

library = pytest.importorskip("rliable.library")
metrics = pytest.importorskip("rliable.metrics")

TINY = [
    "--benchmark", "mt1:reach-v3", "--config", "smoke", "--total-steps", "200", "--no-progress",
    "train.warmup_steps=100", "train.eval_every=100", "train.eval_episodes=1",
    "train.final_eval_episodes=1", "train.log_every=100", "env.max_episode_steps=50",
]  # fmt: skip
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REPS = ["--reps", "200"]
"""Few bootstrap replicates: tests check the numbers against rliable's, not their precision."""


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory) -> Path:
    """Three tiny real runs: seeds 0 and 1 with random goals, seed 0 with fixed goals."""
    root = tmp_path_factory.mktemp("real")
    for name, extra in (("s0", ["--seed", "0"]), ("s1", ["--seed", "1"]),
                        ("fixed-s0", ["--seed", "0", "env.goal_mode=fixed"])):  # fmt: skip
        flags, overrides = extra[:2], extra[2:]
        assert (
            train_main([*TINY[:7], *flags, "--out", str(root / name), *TINY[7:], *overrides]) == 0
        )
    return root


def _with_success(src: Path, dst: Path, values: list[float], method: dict | None = None) -> None:
    """A copy of a real run whose evaluations report ``values`` (the last one is the final)."""
    shutil.copytree(src, dst)
    lines = [json.loads(x) for x in (dst / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in lines if "eval/success" in r]
    assert len(evals) == len(values)
    for record, value in zip(evals, values, strict=True):
        record["eval/success"] = record["eval/success/reach-v3"] = value
    (dst / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    if method:
        config = yaml.safe_load((dst / "config.yaml").read_text())
        config["surgery"] = method
        (dst / "config.yaml").write_text(yaml.safe_dump(config))


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _rliable(data, func, seed: int = 0, reps: int = 200) -> np.ndarray:
    """rliable called directly: ``[3, k]`` point estimates, lower and upper bounds."""
    np.random.seed(seed)
    points, intervals = library.get_interval_estimates({"x": data}, func, reps=reps)
    return np.vstack([np.atleast_1d(points["x"]), intervals["x"]])


def _mean_and_iqm(scores):
    return np.array([metrics.aggregate_mean(scores), metrics.aggregate_iqm(scores)])


def _numbers(row: dict[str, str], prefix: str) -> list[float]:
    return [float(row[f"{prefix}{s}"]) for s in ("", "_low", "_high")]


def test_report_from_real_runs(real_runs, tmp_path, capsys):
    runs = tmp_path / "runs"
    shutil.copytree(real_runs, runs)
    # A second method with known numbers, three seeds (copies of the real seed-0 run).
    cagrad = {"name": "cagrad", "options": {"c": 0.5}}
    for seed, values in ((0, [0.6, 0.4]), (1, [0.3, 0.8]), (2, [0.9, 0.9])):
        _with_success(real_runs / "s0", runs / f"cagrad-s{seed}", values, cagrad)
        config = yaml.safe_load((runs / f"cagrad-s{seed}" / "config.yaml").read_text())
        config["train"]["seed"] = seed
        (runs / f"cagrad-s{seed}" / "config.yaml").write_text(yaml.safe_dump(config))
    # A run killed mid-write: its last line is cut (and it has no final evaluation).
    shutil.copytree(real_runs / "s1", runs / "killed")
    text = (runs / "killed" / "metrics.jsonl").read_text()
    (runs / "killed" / "metrics.jsonl").write_text(text[: text.rindex("{") + 25])
    (tmp_path / "empty").mkdir()
    out = tmp_path / "report"

    rc = report_main([str(runs), str(tmp_path / "empty"), str(tmp_path / "missing"), "--out",
                      str(out), *REPS])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    for message in (
        "empty: no runs found",
        "missing: does not exist",
        "killed: the last line of metrics.jsonl is cut",
        "killed: skipped, unfinished",
        "2 different protocols",
    ):
        assert message in captured.err, message

    rows = {(r["goal_mode"], r["method"]): r for r in _csv(out / "results.csv")}
    assert set(rows) == {("random", "none"), ("random", "cagrad(c=0.5)"), ("fixed", "none")}
    # Never pooled: the fixed-goal run is its own row, the random-goal rows have its seeds only.
    assert rows[("fixed", "none")]["n_seeds"] == "1"
    assert rows[("random", "none")]["seeds"] == "0 1"
    c = rows[("random", "cagrad(c=0.5)")]
    assert c["n_seeds"] == "3"
    finals, bests = np.array([[0.4], [0.8], [0.9]]), np.array([[0.6], [0.8], [0.9]])
    final, best = _rliable(finals, _mean_and_iqm), _rliable(bests, _mean_and_iqm)
    assert _numbers(c, "final_mean") == final[:, 0].tolist()
    assert _numbers(c, "best_iqm") == best[:, 1].tolist()
    assert float(c["final_mean"]) == pytest.approx(0.7)
    # The real runs have no surgery: their row is the cagrad row's baseline.
    assert c["baseline"] == "none" and rows[("random", "none")]["p_improvement_final"] == ""
    tasks = _csv(out / "per_task.csv")
    assert {r["task"] for r in tasks} == {"reach-v3"}

    markdown = (out / "report.md").read_text()
    assert "## mt1:reach-v3, no paper protocol, fixed goals" in markdown
    assert "## mt1:reach-v3, no paper protocol, random goals" in markdown
    low, high = 100 * final[1:, 0]
    assert f"| cagrad(c=0.5) | 3 | 70.0 [{low:.1f}, {high:.1f}] |" in markdown
    assert "No paper protocol: no published number applies." in markdown
    assert "## Notes" in markdown and "cut" in markdown
    pngs = sorted(out.glob("*.png"))
    assert [p.name.split("-")[0] for p in pngs] == ["curves", "curves", "tasks", "tasks"]
    for png in pngs:
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 10_000
    curve = [r for f in out.glob("curves-*.csv") for r in _csv(f) if r["method"] == "cagrad(c=0.5)"]
    assert [float(r["mean"]) for r in curve] == pytest.approx([0.6, 0.7])  # mean over seeds


def test_runs_that_differ_in_config_are_not_pooled(real_runs, tmp_path, capsys):
    runs = tmp_path / "runs"
    shutil.copytree(real_runs / "s0", runs / "a")
    _with_success(real_runs / "s1", runs / "b", [0.0, 1.0])
    config = yaml.safe_load((runs / "b" / "config.yaml").read_text())
    config["agent"]["hidden_dims"] = [32, 32]
    (runs / "b" / "config.yaml").write_text(yaml.safe_dump(config))
    shutil.copytree(real_runs / "s0", runs / "a-again")  # the same seed twice

    assert report_main([str(runs), "--out", str(tmp_path / "report"), "--no-plots", *REPS]) == 0
    err = capsys.readouterr().err
    assert "runs differ in agent.hidden_dims" in err
    assert "2 runs with seed 0" in err
    rows = _csv(tmp_path / "report" / "results.csv")
    assert sorted((r["variant"], r["n_seeds"]) for r in rows) == [
        ("agent.hidden_dims=[32, 32]", "1"),
        ("agent.hidden_dims=[64, 64]", "1"),
    ]
    assert not list((tmp_path / "report").glob("*.png"))


def test_nothing_to_report(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2, "a"\n{"step"')
    assert report_main([str(tmp_path), "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err
    assert "junk: skipped, no config.yaml" in err
    assert "no finished runs to report" in err
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize("module", ["matplotlib", "rliable.library"])
def test_without_a_dependency_a_one_line_error(module, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, module, None)
    assert report_main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "pip install 'mtrl[report]'" in err and err.count("\n") == 1


@pytest.mark.parametrize("reps", ["10", "many"])
def test_bad_reps_a_one_line_error(reps, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        report_main([str(tmp_path), "--reps", reps])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "argument --reps: must be an integer >= 100" in err
    assert err.count("\n") == 1


# --------------------------------------------------------------------------- statistics
THREE = ("reach-v3", "push-v3", "pick-place-v3")
SUBSET = "mt50:" + ",".join(THREE)
SUCCESS = {  # method -> seed -> evaluations x tasks (the last evaluation is the final one)
    "none": {
        0: [[0.2, 0.0, 0.1], [0.6, 0.1, 0.0], [0.3, 0.2, 0.0]],
        1: [[0.5, 0.0, 0.0], [0.4, 0.0, 0.3], [0.7, 0.1, 0.0]],
        2: [[0.1, 0.1, 0.1], [0.2, 0.3, 0.0], [0.9, 0.0, 0.1]],
        3: [[0.0, 0.0, 0.0], [0.8, 0.2, 0.1], [0.9, 0.1, 0.1]],
    },
    "pcgrad": {
        0: [[0.4, 0.2, 0.0], [0.9, 0.5, 0.0], [0.6, 0.4, 0.1]],
        1: [[0.3, 0.0, 0.0], [1.0, 0.2, 0.2], [0.9, 0.6, 0.0]],
        2: [[0.7, 0.3, 0.1], [0.6, 0.1, 0.4], [0.7, 0.3, 0.2]],
    },
}


def _subset_runs(root: Path, success=SUCCESS, **extra) -> Path:
    for method, seeds in success.items():
        for seed, evals in seeds.items():
            surgery = {"name": method, "options": {}}
            write_run(root / f"{method}-s{seed}", evals, preset="mt10-short", seed=seed,
                      benchmark=SUBSET, tasks=THREE, surgery=surgery, **extra)  # fmt: skip
    return root


def _scores(method: str, kind: str) -> np.ndarray:
    """The score matrix [seeds, tasks] as the test data define it."""
    rows = []
    for evals in SUCCESS[method].values():
        best = max(range(len(evals)), key=lambda i: (np.mean(evals[i]), -i))  # earliest best
        rows.append(evals[-1] if kind == "final" else evals[best])
    return np.array(rows)


def test_statistics_are_rliables_on_the_same_scores(tmp_path, capsys):
    runs = _subset_runs(tmp_path / "runs")
    out = tmp_path / "report"
    assert report_main([str(runs), "--out", str(out), *REPS, "--bootstrap-seed", "5"]) == 0
    rows = {r["method"]: r for r in _csv(out / "results.csv")}
    # none seed 3: evaluations 2 and 3 tie for best (the earliest counts); pcgrad seed 2: the
    # best evaluation is not made of each task's best.
    assert _scores("none", "best")[3].tolist() == [0.8, 0.2, 0.1]
    assert _scores("pcgrad", "best")[2].tolist() == [0.7, 0.3, 0.2]
    for method, row in rows.items():
        assert row["bootstrap_reps"] == "200" and row["bootstrap_seed"] == "5"
        for kind in ("final", "best"):
            expected = _rliable(_scores(method, kind), _mean_and_iqm, seed=5)
            assert _numbers(row, f"{kind}_mean") == expected[:, 0].tolist()
            assert _numbers(row, f"{kind}_iqm") == expected[:, 1].tolist()
    pcgrad = rows["pcgrad"]
    assert pcgrad["baseline"] == "none" and rows["none"]["p_improvement_best"] == ""
    for kind in ("final", "best"):
        data = [_scores("pcgrad", kind), _scores("none", kind)]
        expected = _rliable(data, metrics.probability_of_improvement, seed=5)
        assert _numbers(pcgrad, f"p_improvement_{kind}") == expected[:, 0].tolist()
    tasks = {(r["method"], r["task"]): r for r in _csv(out / "per_task.csv")}
    expected = _rliable(_scores("pcgrad", "final"), lambda s: s.mean(axis=0), seed=5)
    for i, task in enumerate(THREE):
        assert _numbers(tasks[("pcgrad", task)], "final_mean") == expected[:, i].tolist()
    # Learning curves: mean and IQM over seeds x tasks at each evaluation, bands as rliable's.
    curves = [r for r in _csv(next(out.glob("curves-*.csv"))) if r["method"] == "none"]
    cube = np.array(list(SUCCESS["none"].values())).transpose(0, 2, 1)  # [seeds, tasks, evals]
    per_evaluation = lambda s: np.array([metrics.aggregate_iqm(s[..., k]) for k in range(3)])  # noqa: E731
    expected = _rliable(cube, per_evaluation, seed=5)
    found = np.array([_numbers(r, "iqm") for r in curves]).T
    np.testing.assert_allclose(found, expected, rtol=0, atol=1e-12)
    assert [int(r["step"]) for r in curves] == sorted(int(r["step"]) for r in curves)

    text = capsys.readouterr().out
    assert "A **score** is the success rate of one task in one run" in text
    table = next(line for line in text.splitlines() if line.startswith("| pcgrad |"))
    p = _numbers(pcgrad, "p_improvement_final")
    assert f"| none | {p[0]:.2f} [{p[1]:.2f}, {p[2]:.2f}] |" in table
    assert "| none | 4 |" in text and "| (baseline) | — | — |" in text


def test_same_bootstrap_seed_same_numbers(tmp_path):
    runs = _subset_runs(tmp_path / "runs")

    def results(name: str, *args: str) -> str:
        out = tmp_path / name
        assert report_main([str(runs), "--out", str(out), "--no-plots", *REPS, *args]) == 0
        return (out / "results.csv").read_text()

    first = results("a")
    np.random.seed(1234)  # whatever state numpy's global RNG is in
    assert results("b") == first
    assert results("c", "--bootstrap-seed", "0") == first  # the default seed
    other = results("d", "--bootstrap-seed", "1")
    assert other != first  # other intervals, the same point estimates:
    points = ["final_mean", "final_iqm", "best_mean", "best_iqm", "p_improvement_final"]
    rows = zip(csv.DictReader(first.splitlines()), csv.DictReader(other.splitlines()), strict=True)
    for a, b in rows:
        assert [a[k] for k in points] == [b[k] for k in points]


def test_baselines_share_model_and_config(tmp_path, capsys):
    runs = tmp_path / "runs"
    for seed in (0, 1):
        for name, preset, overrides in (
            ("none", "mt10", ["agent.hidden_dims=[32,32]"]),
            # mt10-pcgrad is CARE's PCGrad command (one temperature); the plain runs learn one
            # per task as CARE's Multi-task SAC does, so these share that setting
            ("pcgrad", "mt10-pcgrad", ["agent.hidden_dims=[32,32]", "agent.temperature=per_task"]),
            ("pcgrad-wide", "mt10-pcgrad", ["agent.temperature=per_task"]),  # no such plain row
            ("mh", "mt10-mhsac", ["agent.hidden_dims=[32,32]"]),  # no plain multi-head row
            ("mh-pcgrad", "mt10-mhsac", ["agent.hidden_dims=[32,32]", "surgery.name=pcgrad"]),
        ):
            evals = [0.1 * (seed + 1), 0.2 * (seed + 1)]
            write_run(
                runs / f"{name}-s{seed}", evals, preset=preset, seed=seed, overrides=overrides
            )
    out = tmp_path / "report"
    assert report_main([str(runs), "--out", str(out), "--no-plots", *REPS]) == 0
    rows = {(r["model"], r["method"], r["variant"]): r for r in _csv(out / "results.csv")}
    narrow, wide = "agent.hidden_dims=[32, 32]", "agent.hidden_dims=[400, 400, 400]"
    baselines = {key: row["baseline"] for key, row in rows.items()}
    assert baselines == {
        ("mlp", "none", ""): "none",  # its own baseline
        ("mlp", "pcgrad", narrow): "none",
        ("mlp", "pcgrad", wide): "",
        ("multihead", "none", ""): "multihead + none",
        ("multihead", "pcgrad", ""): "multihead + none",
    }
    assert rows[("mlp", "pcgrad", wide)]["p_improvement_final"] == ""
    # Identical scores: no improvement either way, exactly one half.
    assert float(rows[("mlp", "pcgrad", narrow)]["p_improvement_final"]) == 0.5
    text = capsys.readouterr().out
    assert f"| pcgrad [{wide}] | 2 |" in text
    line = next(x for x in text.splitlines() if x.startswith(f"| pcgrad [{wide}]"))
    assert "| — | — | — |" in line


def test_baseline_chosen_by_label(tmp_path, capsys):
    runs = _subset_runs(tmp_path / "runs")
    out = tmp_path / "report"
    args = [str(runs), "--out", str(out), "--no-plots", *REPS]
    assert report_main([*args, "--baseline", "pcgrad"]) == 0
    rows = {r["method"]: r for r in _csv(out / "results.csv")}
    assert rows["none"]["baseline"] == "pcgrad" and rows["pcgrad"]["p_improvement_final"] == ""
    assert report_main(args) == 0
    default = {r["method"]: r for r in _csv(out / "results.csv")}
    for kind in ("final", "best"):  # P(none > pcgrad) = 1 - P(pcgrad > none)
        p = float(rows["none"][f"p_improvement_{kind}"])
        assert p == pytest.approx(1 - float(default["pcgrad"][f"p_improvement_{kind}"]))
    capsys.readouterr()
    assert report_main([*args, "--baseline", "sgd"]) == 2
    err = capsys.readouterr().err
    assert "--baseline 'sgd' names no row; the rows are: none; pcgrad" in err
    assert err.count("\n") == 1


def test_ties_in_the_probability_of_improvement(tmp_path):
    # One task, two seeds each: pcgrad [0.5, 0.7] vs none [0.5, 0.3] -> pairs tie, win, win, win.
    success = {"none": {0: [[0.5, 0, 0]], 1: [[0.3, 0, 0]]},
               "pcgrad": {0: [[0.5, 0, 0]], 1: [[0.7, 0, 0]]}}  # fmt: skip
    runs = _subset_runs(tmp_path / "runs", success)
    out = tmp_path / "report"
    assert report_main([str(runs), "--out", str(out), "--no-plots", *REPS]) == 0
    pcgrad = next(r for r in _csv(out / "results.csv") if r["method"] == "pcgrad")
    # Tasks 2 and 3 tie everywhere (1/2 each): (3.5/4 + 1/2 + 1/2) / 3.
    assert float(pcgrad["p_improvement_final"]) == pytest.approx((3.5 / 4 + 1.0) / 3)


def test_task_subset_benchmarks_and_ablation_names(tmp_path, capsys):
    runs = tmp_path / "runs"
    for seed in (0, 1):
        for method in ("none", "pcgrad_direction", "pcgrad_magnitude"):
            evals = [[0.5, 0.1 * seed], [0.9, 0.2]]
            write_run(runs / f"{method}-s{seed}", evals, preset="mt10-short", seed=seed,
                      benchmark=PAIR, tasks=TWO_TASKS, surgery={"name": method})  # fmt: skip
    out = tmp_path / "report"
    assert report_main([str(runs), "--out", str(out), *REPS]) == 0
    rows = {r["method"]: r for r in _csv(out / "results.csv")}
    assert set(rows) == {"none", "pcgrad_direction", "pcgrad_magnitude"}
    assert {r["benchmark"] for r in rows.values()} == {PAIR}
    assert rows["pcgrad_magnitude"]["baseline"] == "none"
    files = {p.name for p in out.iterdir()}
    slug = "mt50-reach-v3-button-press-topdown-v3-mtrl-fixed-h500-v2"
    assert {f"curves-{slug}.png", f"tasks-{slug}.png", f"curves-{slug}.csv"} <= files
    assert f"## {PAIR}, mtrl protocol, fixed goals" in (out / "report.md").read_text()
    assert "| pcgrad_direction | 2 |" in capsys.readouterr().out


def test_protocol_slugs_are_file_names():
    def slug(benchmark: str) -> str:
        key = (("name", "none"), ("benchmark", benchmark), ("goal_mode", "random"),
               ("max_episode_steps", 500), ("reward_version", "v2"))  # fmt: skip
        return protocol_slug(key)

    tasks = [f"task-number-{i}-v3" for i in range(20)]
    # Two long subsets that differ only after the cut: the hash tells them apart.
    long_a, long_b = slug("mt50:" + ",".join(tasks)), slug("mt50:" + ",".join(tasks[:19]))
    for name in (slug(PAIR), long_a, long_b, slug("mt50:a/b,..,ü")):
        assert len(name) <= 80 and all(c.isascii() and (c.isalnum() or c in "._-") for c in name)
    assert long_a != long_b and long_a[:69] == long_b[:69]
    assert slug("mt10") == "mt10-none-random-h500-v2"


# --------------------------------------------------------------------------- protocols, papers
def _synthetic_run(path: Path, preset: str, seed: int, evals: list[float], *overrides: str):
    """A run whose evaluations report ``evals`` on every task (the last one is the final)."""
    write_run(path, evals, preset=preset, seed=seed, overrides=overrides)


def test_published_numbers_only_beside_runs_of_the_same_protocol_and_method(tmp_path, capsys):
    runs = tmp_path / "runs"
    evals = {0: [0.5, 0.9, 0.6], 1: [0.7, 0.6, 0.8], 2: [0.4, 0.8, 0.7]}
    for seed, values in evals.items():
        _synthetic_run(runs / f"pcgrad-s{seed}", "mt10-pcgrad", seed, values)
        mwplus = "train.protocol=mwplus"
        _synthetic_run(runs / f"mwplus-s{seed}", "mt10-pcgrad", seed, values, mwplus)
    assert report_main([str(runs), "--out", str(tmp_path / "report"), "--no-plots", *REPS]) == 0
    rows = {r["protocol"]: r for r in _csv(tmp_path / "report" / "results.csv")}
    assert set(rows) == {"mtrl", "mwplus"}
    mtrl = rows["mtrl"]
    bests, finals = [0.9, 0.8, 0.8], [0.6, 0.8, 0.7]
    assert float(mtrl["best_mean"]) == pytest.approx(np.mean(bests))
    assert float(mtrl["final_mean"]) == pytest.approx(np.mean(finals))
    assert mtrl["reported_statistic"] == "best" and mtrl["n_seeds"] == "3"
    assert float(mtrl["published_mean"]) == 0.72 and float(mtrl["published_se"]) == 0.022
    assert "CAGrad" in mtrl["published_source"] and "Table 3" in mtrl["published_source"]
    # The same method under Meta-World+: no number of the mtrl family is shown beside it.
    assert rows["mwplus"]["reported_statistic"] == "final"
    assert rows["mwplus"]["published_mean"] == ""
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "| pcgrad | 3 |" in markdown and "72.0 ± 2.2 (PCGrad) |" in markdown
    assert "compare the **best mean**" in markdown and "compare the **final mean**" in markdown
    capsys.readouterr()


def test_no_published_number_for_deviating_runs_or_other_options(tmp_path):
    runs = tmp_path / "runs"
    _synthetic_run(runs / "short", "mt10-short", 0, [0.2, 0.3])
    _synthetic_run(runs / "cagrad-c05", "mt10-cagrad", 0, [0.5, 0.6], "surgery.options.c=0.5")
    _synthetic_run(runs / "cagrad", "mt10-cagrad", 0, [0.7, 0.8])
    assert report_main([str(runs), "--out", str(tmp_path / "report"), "--no-plots", *REPS]) == 0
    rows = {(r["method"], r["variant"]): r for r in _csv(tmp_path / "report" / "results.csv")}
    published = {key: row["published_mean"] for key, row in rows.items()}
    assert published == {
        ("none", ""): "",  # mt10-short: the budget deviates from the protocol
        ("cagrad(c=0.5,rescale=True)", ""): "",  # the paper used c = 0.9 on MT10
        ("cagrad(c=0.9,rescale=True)", ""): "0.83",
    }
    assert json.loads(rows[("none", "")]["deviations"]) == {"train.total_steps": 2_000_000}
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "change the protocol's train.total_steps get no paper number" in markdown


def test_published_table_is_keyed_by_benchmark_protocol_and_method():
    keys = [(p.benchmark, p.protocol, p.method) for p in PUBLISHED]
    assert len(keys) == len(set(keys))  # one number per key
    assert lookup("mt10", "mtrl", MethodKey()).success == 0.49
    assert lookup("mt50", "mtrl", MethodKey()).success == 0.36
    assert lookup("mt10", "mtrl", MethodKey(model="multihead")).success == 0.61
    assert lookup("mt10", "mwplus", MethodKey()) is None
    assert lookup("mt1:reach-v3", "mtrl", MethodKey()) is None
    cagrad = {"surgery.name": "cagrad", "surgery.options.c": 0.9, "surgery.options.rescale": True}
    assert lookup("mt10", "mtrl", method_key(cagrad)).label == "CAGrad"
    assert lookup("mt50", "mtrl", method_key(cagrad)) is None  # MT50 used c = 0.5
    care = {"agent.model": "care", "agent.task_embeddings": "mt10.json"}
    assert lookup("mt10", "mtrl", method_key(care)).label == "CARE"
    # CARE without the paper's pretrained embeddings is another method
    assert lookup("mt10", "mtrl", method_key({"agent.model": "care"})) is None


@pytest.mark.parametrize(
    "preset,label",
    [
        ("mt10", "Multi-task SAC"),
        ("mt50-mhsac", "Multi-headed SAC"),
        ("mt10-pcgrad", "PCGrad"),
        ("mt50-cagrad", "CAGrad"),
        ("mt10-cagrad_fast", "CAGrad-Fast"),
        ("mt10-soft_modularization", "Soft Modularization"),
        ("mt10-famo", "FAMO"),
        ("mt10-mgda", None),
        ("mt10-care", None),  # the paper's CARE needs its task embeddings
        ("mt10-mwplus", None),
    ],
)
def test_paper_presets_find_their_published_number(preset, label):
    config = load_config(preset)
    flat = flatten(asdict(config))
    found = paper_number(flat, config.env.benchmark, config.train.protocol)
    assert (found and found.label) == label
    with_embeddings = {**flat, "agent.task_embeddings": "tasks.json"}
    if preset == "mt10-care":
        assert paper_number(with_embeddings, "mt10", "mtrl").label == "CARE"


@pytest.mark.parametrize(
    "preset,overrides",
    [
        ("mt10", ["agent.hidden_dims=[8]"]),
        ("mt10", ["agent.actor_lr=1.0"]),
        ("mt10-pcgrad", ["surgery.components=[critic]"]),
        ("mt10-famo", ["balancer.components=[critic,actor]"]),
        ("mt10-soft_modularization", ["agent.model_options.num_modules=1"]),
    ],
)
def test_no_published_number_for_another_setting_of_the_method(preset, overrides):
    """The method and the protocol match the paper, a result-relevant setting does not."""
    paper = flatten(asdict(load_config(preset)))
    changed = flatten(asdict(load_config(preset, overrides)))
    assert paper_number(paper, "mt10", "mtrl") is not None
    assert paper_number(changed, "mt10", "mtrl") is None


def test_published_number_kept_for_changes_of_where_and_how_a_run_executes():
    run_only = [
        "train.seed=7",
        "train.threads=4",
        "train.collector=overlap",
        "checkpoint.every=1000",
        "logger.wandb=true",
        "surgery.options.solver=device",
    ]
    flat = flatten(asdict(load_config("mt10-pcgrad", run_only)))
    assert paper_number(flat, "mt10", "mtrl").label == "PCGrad"


def test_mtrls_own_choices_are_a_reference_in_another_setting_and_caveats_are_declared(tmp_path):
    """CAGrad with mtrl's choices (per-task temperatures, the task one-hot, balanced replay):
    the temperature is the row's setting (no number, named as another setting), the one-hot and
    the replay are the protocol's (deviations); beside the numbers the report declares what no
    setting reproduces."""
    runs = tmp_path / "runs"
    _synthetic_run(runs / "paper", "mt10-cagrad", 0, [0.7, 0.8])
    _synthetic_run(runs / "alpha", "mt10-cagrad", 0, [0.7, 0.9], "agent.temperature=per_task")
    onehot = ("agent.task_input=true", "train.replay_sampling=balanced")
    _synthetic_run(runs / "onehot", "mt10-cagrad", 0, [0.6, 0.9], *onehot)
    _synthetic_run(runs / "mwplus", "mt50-mwplus", 0, [0.1, 0.2])
    assert report_main([str(runs), "--out", str(tmp_path / "report"), "--no-plots"]) == 0
    rows = _csv(tmp_path / "report" / "results.csv")
    paper = "agent.task_input=False, agent.temperature=shared, train.replay_sampling=uniform"
    alpha = "agent.task_input=False, agent.temperature=per_task, train.replay_sampling=uniform"
    mine = "agent.task_input=True, agent.temperature=shared, train.replay_sampling=balanced"
    published = {(r["protocol"], r["variant"]): r["published_mean"] for r in rows}
    assert published == {
        ("mtrl", paper): "0.83",
        ("mtrl", alpha): "",
        ("mtrl", mine): "",
        ("mwplus", ""): "",  # nothing recorded for Meta-World+
    }
    deviations = {r["variant"]: json.loads(r["deviations"]) for r in rows}
    assert deviations[mine] == {"agent.task_input": True, "train.replay_sampling": "balanced"}
    assert deviations[paper] == deviations[alpha] == {}
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "reference in another setting only" in markdown
    assert "(agent.temperature)" in markdown
    assert "Not reproduced here: the papers ran the V1 envs" in markdown
    assert "2026-05-19" in markdown and "mt50-mwplus extrapolates" in markdown
