"""A task set as a benchmark (mt50:reach-v3,button-press-topdown-v3) end to end: train with the
gradient diagnostics, resume exactly, evaluate; and the log-time shares among conflicts."""

import json
import shutil

import pytest
from helpers import EVAL, TRAIN, assert_same_checkpoint, run_module

from mtrl.checkpoint import step_file
from mtrl.config import load_config
from mtrl.envs import parse_benchmark
from mtrl.logger import read_metrics
from mtrl.rundir import default_run_dir
from mtrl.train import shares_among_conflicts

PAIR = ("reach-v3", "button-press-topdown-v3")


def tiny_pair(out, *overrides: str) -> list[str]:
    return [
        "--benchmark",
        f"MT50: {PAIR[0]}, {PAIR[1]}",  # any spelling: stored as mt50:reach-v3,button-...
        "--surgery",
        "pcgrad",
        "--no-progress",
        "--total-steps",
        "240",
        "--out",
        str(out),
        "env.max_episode_steps=20",
        "env.goal_mode=fixed",
        "agent.hidden_dims=[32,32]",
        "agent.batch_per_task=16",
        "train.buffer_size=2000",
        "train.warmup_steps=40",
        "train.eval_every=120",
        "train.eval_episodes=1",
        "train.final_eval_episodes=1",
        "train.log_every=40",
        "surgery.diagnostics_every=2",
        "checkpoint.every=120",
        "checkpoint.keep_last=2",
        *overrides,
    ]


@pytest.fixture(scope="module")
def pair_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("pair") / "run"
    result = run_module(TRAIN, *tiny_pair(run))
    assert result.returncode == 0, result.stderr
    return run


def test_a_task_set_trains_with_its_own_one_hot_and_logs_per_pair(pair_run):
    meta = json.loads((pair_run / "meta.json").read_text())
    assert meta["protocol"]["benchmark"] == "mt50:reach-v3,button-press-topdown-v3"
    records = read_metrics(pair_run)
    evaluations = [r for r in records if "eval/success" in r]
    assert [r["step"] for r in evaluations] == [120, 240]
    assert all(set(PAIR) <= {k.split("/")[-1] for k in r} for r in evaluations)
    diagnosed = [r for r in records if "diag/critic/curvature" in r]
    assert diagnosed
    for r in diagnosed:
        for component in ("critic", "actor"):
            prefix = f"diag/{component}/"
            pair = f"{prefix}pair/{PAIR[0]}|{PAIR[1]}/"
            assert r[pair + "cos"] == pytest.approx(r[prefix + "cos"])  # one pair: its mean
            assert r[pair + "xi"] >= 0 and 0 <= r[pair + "gms"] <= 1
            if r[prefix + "conflict"] > 0:
                share = r[prefix + "cond_a"] / r[prefix + "conflict"]
                assert r[prefix + "cond_a_given_conflict"] == pytest.approx(share)
            else:
                assert prefix + "cond_a_given_conflict" not in r


def test_a_task_set_resumes_exactly_and_evaluates(pair_run, tmp_path):
    cut = tmp_path / "cut"
    shutil.copytree(pair_run, cut)
    step_file(cut, 240).unlink()
    resumed = run_module(TRAIN, "--resume", str(cut), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_checkpoint(step_file(pair_run, 240), step_file(cut, 240))

    result = run_module(EVAL, str(pair_run), "--episodes", "1", "--json", str(tmp_path / "e.json"))
    assert result.returncode == 0, result.stderr
    assert list(json.loads((tmp_path / "e.json").read_text())["success"]) == list(PAIR)


def test_shares_among_conflicts_are_ratios_of_interval_means():
    metrics = {
        "diag/critic/conflict": 0.5,
        "diag/critic/cond_a": 0.4,
        "diag/critic/xi_le_1": 0.1,
        "diag/actor/conflict": 0.0,
        "diag/actor/cond_a": 0.0,
        "diag/actor/xi_le_1": 0.0,
        "train/critic_loss": 3.0,
    }
    assert shares_among_conflicts(metrics) == {
        "diag/critic/cond_a_given_conflict": pytest.approx(0.8),
        "diag/critic/xi_le_1_given_conflict": pytest.approx(0.2),
    }


def test_default_run_folders_of_task_sets_are_short_and_distinct():
    all_tasks = ",".join(parse_benchmark("mt50").task_names)
    names = {
        default_run_dir(load_config(overrides=[f"env.benchmark=mt50:{tasks}"])).name
        for tasks in (all_tasks, all_tasks.replace("reach-v3,", ""), "reach-v3,push-v3")
    }
    assert len(names) == 3 and all(len(name) < 100 for name in names)
    assert any(name.startswith("mt50-reach-v3-push-v3-none-s0-") for name in names)
