"""mtrl-report on run folders from tiny real runs (and copies of them with known numbers)."""

from __future__ import annotations

import csv
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from mtrl.cli import train_main
from mtrl.report import interquartile_mean, report_main, run_method, standard_error, t975

TINY = [
    "--benchmark", "mt1:reach-v3", "--config", "smoke", "--total-steps", "200", "--no-progress",
    "train.warmup_steps=100", "train.eval_every=100", "train.eval_episodes=1",
    "train.final_eval_episodes=1", "train.log_every=100", "env.max_episode_steps=50",
]  # fmt: skip
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


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


def test_statistics():
    values = [0.1, 0.9, 0.3, 0.5, 0.2, 0.8, 0.4, 0.6, 0.7, 1.0]
    assert standard_error(values) == pytest.approx(np.std(values, ddof=1) / math.sqrt(10))
    assert math.isnan(standard_error([0.5]))
    # n = 10: drop the 2 lowest and the 2 highest.
    assert interquartile_mean(values) == pytest.approx(np.mean([0.3, 0.4, 0.5, 0.6, 0.7, 0.8]))
    assert interquartile_mean([0.2, 0.4, 0.9]) == pytest.approx(0.5)  # below 4 values: the mean
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 9, 30, 31, 60, 200):
        assert t975(df) == pytest.approx(scipy_stats.t.ppf(0.975, df), abs=2e-3)


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
                      str(out)])  # fmt: skip
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
    finals, bests = [0.4, 0.8, 0.9], [0.6, 0.8, 0.9]
    assert float(c["final_mean"]) == pytest.approx(np.mean(finals))
    assert float(c["final_se"]) == pytest.approx(standard_error(finals))
    assert float(c["max_mean"]) == pytest.approx(np.mean(bests))
    assert float(c["max_iqm"]) == pytest.approx(np.mean(bests))
    tasks = _csv(out / "per_task.csv")
    assert {r["task"] for r in tasks} == {"reach-v3"}

    markdown = (out / "report.md").read_text()
    assert (
        "## mt1:reach-v3, fixed goals" in markdown and "## mt1:reach-v3, random goals" in markdown
    )
    assert "| cagrad(c=0.5) | 3 | 70.0 ± 15.3 |" in markdown
    assert "## Notes" in markdown and "cut" in markdown
    pngs = sorted(out.glob("*.png"))
    assert [p.name.split("-")[0] for p in pngs] == ["curves", "curves", "tasks", "tasks"]
    for png in pngs:
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 10_000


def test_runs_that_differ_in_config_are_not_pooled(real_runs, tmp_path, capsys):
    runs = tmp_path / "runs"
    shutil.copytree(real_runs / "s0", runs / "a")
    _with_success(real_runs / "s1", runs / "b", [0.0, 1.0])
    config = yaml.safe_load((runs / "b" / "config.yaml").read_text())
    config["agent"]["hidden_dims"] = [32, 32]
    (runs / "b" / "config.yaml").write_text(yaml.safe_dump(config))
    shutil.copytree(real_runs / "s0", runs / "a-again")  # the same seed twice

    assert report_main([str(runs), "--out", str(tmp_path / "report"), "--no-plots"]) == 0
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


def test_without_matplotlib_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert report_main([str(tmp_path)]) == 2
    assert "pip install 'mtrl[report]'" in capsys.readouterr().err


def test_a_balancer_is_part_of_the_method():
    config = {"surgery": {"name": "pcgrad", "options": {}}}
    assert run_method(config) == "pcgrad"
    config["balancer"] = {"name": "none", "options": {}, "components": ["critic"]}
    assert run_method(config) == "pcgrad"
    config["balancer"] = {"name": "famo", "options": {"gamma": 0.01}, "components": ["critic"]}
    assert run_method(config) == "famo(gamma=0.01)+pcgrad"
