"""mtrl-report on run folders from tiny real runs (and copies of them with known numbers)."""

from __future__ import annotations

import csv
import json
import math
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import yaml

from mtrl.cli import train_main
from mtrl.config import flatten, load_config, to_yaml
from mtrl.published import PUBLISHED, MethodKey, lookup, method_key, paper_number
from mtrl.report import interquartile_mean, report_main, standard_error, t975
from mtrl.rundir import protocol

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
    assert "## mt1:reach-v3, no paper protocol, fixed goals" in markdown
    assert "## mt1:reach-v3, no paper protocol, random goals" in markdown
    assert "| cagrad(c=0.5) | 3 | 70.0 ± 15.3 |" in markdown
    assert "No paper protocol: no published number applies." in markdown
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


# --------------------------------------------------------------------------- protocols, papers
def _synthetic_run(path: Path, preset: str, seed: int, evals: list[float], *overrides: str):
    """A run folder as mtrl-train writes it (resolved config, meta.json, metrics.jsonl) whose
    evaluations report ``evals`` (the last one is the final evaluation)."""
    config = load_config(preset, [f"train.seed={seed}", *overrides])
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(to_yaml(config))
    (path / "meta.json").write_text(json.dumps({"protocol": protocol(config)}))
    every = config.train.eval_every
    lines = [
        {"step": every * (i + 1), "protocol": config.train.protocol, "eval/success": value,
         **({"final": True} if i == len(evals) - 1 else {})}
        for i, value in enumerate(evals)
    ]  # fmt: skip
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


def test_published_numbers_only_beside_runs_of_the_same_protocol_and_method(tmp_path, capsys):
    runs = tmp_path / "runs"
    evals = {0: [0.5, 0.9, 0.6], 1: [0.7, 0.6, 0.8], 2: [0.4, 0.8, 0.7]}
    for seed, values in evals.items():
        _synthetic_run(runs / f"pcgrad-s{seed}", "mt10-pcgrad", seed, values)
        mwplus = "train.protocol=mwplus"
        _synthetic_run(runs / f"mwplus-s{seed}", "mt10-pcgrad", seed, values, mwplus)
    assert report_main([str(runs), "--out", str(tmp_path / "report"), "--no-plots"]) == 0
    rows = {r["protocol"]: r for r in _csv(tmp_path / "report" / "results.csv")}
    assert set(rows) == {"mtrl", "mwplus"}
    mtrl = rows["mtrl"]
    bests, finals = [0.9, 0.8, 0.8], [0.6, 0.8, 0.7]
    assert float(mtrl["max_mean"]) == pytest.approx(np.mean(bests))
    assert float(mtrl["max_se"]) == pytest.approx(np.std(bests, ddof=1) / math.sqrt(3))
    assert float(mtrl["final_mean"]) == pytest.approx(np.mean(finals))
    assert mtrl["reported_statistic"] == "best" and mtrl["n_seeds"] == "3"
    assert float(mtrl["published_mean"]) == 0.72 and float(mtrl["published_se"]) == 0.022
    assert "CAGrad" in mtrl["published_source"] and "Table 3" in mtrl["published_source"]
    # The same method under Meta-World+: no number of the mtrl family is shown beside it.
    assert rows["mwplus"]["reported_statistic"] == "final"
    assert rows["mwplus"]["published_mean"] == ""
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "| pcgrad | 3 |" in markdown and "72.0 ± 2.2 (PCGrad) |" in markdown
    assert "compare the **max** column" in markdown and "compare the **final** column" in markdown
    capsys.readouterr()


def test_no_published_number_for_deviating_runs_or_other_options(tmp_path):
    runs = tmp_path / "runs"
    _synthetic_run(runs / "short", "mt10-short", 0, [0.2, 0.3])
    _synthetic_run(runs / "cagrad-c05", "mt10-cagrad", 0, [0.5, 0.6], "surgery.options.c=0.5")
    _synthetic_run(runs / "cagrad", "mt10-cagrad", 0, [0.7, 0.8])
    assert report_main([str(runs), "--out", str(tmp_path / "report"), "--no-plots"]) == 0
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
