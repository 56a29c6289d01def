"""mtrl-train --balancer end to end: each balancer on one task, a balancer with gradient surgery
on MT10, and an exact resume with a balancer (seconds each)."""

import shutil

import pytest
from helpers import MT10_TASKS, TRAIN, run_module, tiny_mt1
from test_resume import assert_same_checkpoint, without_timing

from mtrl.checkpoint import load_checkpoint, step_file
from mtrl.config import load_config
from mtrl.logger import read_metrics


@pytest.mark.parametrize(
    "balancer,options",
    [("famo", {"gamma": 0.01}), ("uw", {}), ("gradnorm", {"alpha": 1.0})],
)
def test_each_balancer_trains_and_logs_its_weights(balancer, options, tmp_path):
    run = tmp_path / "run"
    overrides = [f"balancer.options.{k}={v}" for k, v in options.items()]
    result = run_module(TRAIN, *tiny_mt1(100, run, "--balancer", balancer, *overrides))
    assert result.returncode == 0, result.stderr
    config = load_config(str(run / "config.yaml"))
    assert (config.balancer.name, config.balancer.options) == (balancer, options)
    assert config.balancer.components == ["critic"]
    logged = [r for r in read_metrics(run) if "train/balancer/critic/weight" in r]
    assert logged and all(r["train/balancer/critic/weight/reach-v3"] > 0 for r in logged)
    state = load_checkpoint(step_file(run, 100)).state["agent"]["balancer"]
    assert set(state) == {"critic"} and state["critic"]["method"] == balancer


def test_famo_with_pcgrad_on_mt10_logs_every_tasks_weight(tmp_path):
    run = tmp_path / "run"
    result = run_module(
        TRAIN,
        *("--config", "smoke", "--balancer", "famo", "--surgery", "pcgrad", "--no-progress"),
        *("--total-steps", "300", "--out", str(run), "env.max_episode_steps=50"),
        *("train.warmup_steps=100", "train.log_every=100", "train.eval_every=0"),
        *("train.final_eval_episodes=1", "surgery.diagnostics_every=5"),
    )
    assert result.returncode == 0, result.stderr
    records = read_metrics(run)
    weights = [r for r in records if "train/balancer/critic/weight" in r]
    assert weights and all(
        r[f"train/balancer/critic/weight/{t}"] > 0 for t in MT10_TASKS for r in weights
    )
    assert all(r["train/balancer/critic/weight"] == pytest.approx(1.0) for r in weights)  # sum K
    assert any("diag/critic/cos" in r for r in records), "surgery ran as well"


def test_resume_with_a_balancer_continues_exactly(tmp_path):
    """Uncertainty weighting with PCGrad on one task, killed after its checkpoint at 100: the
    resumed run ends with the uninterrupted run's checkpoint (log-variances and their Adam
    moments included) and metrics."""
    straight = tmp_path / "straight"
    args = tiny_mt1(
        200, straight, "--balancer", "uw", "--surgery", "pcgrad", "checkpoint.every=100"
    )
    result = run_module(TRAIN, *args)
    assert result.returncode == 0, result.stderr
    resumed = tmp_path / "resumed"
    shutil.copytree(straight, resumed)
    step_file(resumed, 200).unlink()
    result = run_module(TRAIN, "--resume", str(resumed), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert_same_checkpoint(step_file(straight, 200), step_file(resumed, 200))
    assert without_timing(read_metrics(straight)) == without_timing(read_metrics(resumed))
    uw = load_checkpoint(step_file(resumed, 200)).state["agent"]["balancer"]["critic"]
    assert uw["param"].abs().sum() > 0, "the log-variances moved: real state was restored"
