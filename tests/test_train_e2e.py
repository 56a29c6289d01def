"""mtrl-train on real MT10 envs with the smoke preset, shrunk to a few hundred steps, under the
mtrl protocol (whose budget, evaluation interval and update burst it overrides; its schedule
stays: an evaluation before the first step, none at the end) and with W&B logging in offline
mode."""

import json

import pytest
from helpers import MT10_TASKS, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mtrl.config import load_config
from mtrl.logger import read_metrics, wandb_run_id

TOTAL, EVAL_EVERY, LOG_EVERY, WARMUP, BURST = 600, 300, 100, 200, 20


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("e2e") / "run"
    result = run_cli(
        "mtrl-train",
        "--config",
        "smoke",
        "--total-steps",
        str(TOTAL),
        "--seed",
        "5",
        "--no-progress",
        "--out",
        str(run),
        f"train.warmup_steps={WARMUP}",
        f"train.eval_every={EVAL_EVERY}",
        f"train.log_every={LOG_EVERY}",
        f"train.warmup_updates={BURST}",
        "train.eval_episodes=1",
        "train.final_eval_episodes=2",
        "--protocol",
        "mtrl",
        "logger.wandb=true",
    )
    assert result.returncode == 0, result.stderr
    return run, result


def test_prints_a_final_success_table(smoke_run):
    _, result = smoke_run
    table = result.stdout.splitlines()
    for task in (*MT10_TASKS, "mean"):
        assert any(line.startswith(task) for line in table), task


def test_run_folder_has_resolved_config_and_provenance(smoke_run):
    run, _ = smoke_run
    config = load_config(str(run / "config.yaml"))
    assert config.train.total_steps == TOTAL and config.train.seed == 5
    assert config.agent.hidden_dims == [64, 64]
    meta = json.loads((run / "meta.json").read_text())
    assert meta["mtrl_version"]
    assert meta["git_commit"]
    protocol = meta["protocol"]
    assert {k: v for k, v in protocol.items() if k != "deviations"} == {
        "name": "mtrl",
        "benchmark": "mt10",
        "goal_mode": "fixed",  # the protocol's: smoke does not set it
        "max_episode_steps": 500,
        "reward_version": "v2",
        "statistic": "best",
    }
    assert protocol["deviations"]["train.total_steps"] == TOTAL
    assert protocol["deviations"]["agent.batch_per_task"] == 32  # smoke's
    assert "env.goal_mode" not in protocol["deviations"]


def test_metrics_jsonl_has_training_and_evaluation_lines(smoke_run):
    run, _ = smoke_run
    records = read_metrics(run)
    assert all("step" in r for r in records)
    train = [r for r in records if "train/steps_per_s" in r]
    assert [r["step"] for r in train] == list(range(LOG_EVERY, TOTAL + 1, LOG_EVERY))
    for r in train:
        assert r["train/steps_per_s"] > 0
        if r["step"] > WARMUP:
            for key in ("train/critic_loss", "train/actor_loss", "train/alpha_loss"):
                assert isinstance(r[key], float), key
            for task in MT10_TASKS:
                assert r[f"train/alpha/{task}"] > 0
    # the burst when the warm-up ends, then one update per vector step
    assert train[-1]["train/updates"] == BURST + (TOTAL - WARMUP) // 10

    evals = [r for r in records if "eval/success" in r]
    assert [r["step"] for r in evals] == [0, EVAL_EVERY]  # the one at 300 is the final one
    assert [r.get("final", False) for r in evals] == [False, True]
    assert all(r["protocol"] == "mtrl" for r in evals)
    assert [r["eval/episodes"] for r in evals] == [1, 2]
    for r in evals:
        per_task = [r[f"eval/success/{task}"] for task in MT10_TASKS]
        assert all(0.0 <= s <= 1.0 for s in per_task)
        assert r["eval/success"] == pytest.approx(sum(per_task) / 10)


def test_tensorboard_event_files_hold_the_scalars(smoke_run):
    run, _ = smoke_run
    assert list(run.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(run))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"eval/success", "train/critic_loss", "train/steps_per_s"} <= tags
    assert {f"eval/success/{task}" for task in MT10_TASKS} <= tags
    assert [e.step for e in events.Scalars("eval/success")] == [0, EVAL_EVERY]


def test_wandb_offline_run_in_the_run_folder(smoke_run):
    run, _ = smoke_run
    (offline,) = (run / "wandb").glob("offline-run-*")
    assert offline.name.endswith(wandb_run_id(run))
    (history,) = offline.glob("run-*.wandb")
    assert history.stat().st_size > 0
