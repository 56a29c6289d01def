"""mtrl-train and mtrl-eval with every model: a tiny one-task run per model whose checkpoint
mtrl-eval reads back, and one MT10 run of CARE with an embeddings file and PCGrad."""

import json

import pytest
import torch
from helpers import MT10_TASKS, TINY_MODEL_OPTIONS, tiny_mt1

from mtrl import models
from mtrl.checkpoint import latest_checkpoint, load_checkpoint, step_file
from mtrl.cli import train_main
from mtrl.config import load_config
from mtrl.eval_cli import eval_main
from mtrl.logger import read_metrics
from mtrl.train import Trainer


def model_overrides(name: str) -> list[str]:
    options = TINY_MODEL_OPTIONS[name]
    return [f"agent.model={name}", *(f"agent.model_options.{k}={v}" for k, v in options.items())]


def write_embeddings(path, tasks, dim: int = 6) -> list[list[float]]:
    vectors = [[(i + 1) * 0.1 + j * 0.01 for j in range(dim)] for i in range(len(tasks))]
    path.write_text(
        json.dumps({"unused-task": [0.0] * dim, **dict(zip(tasks, vectors, strict=True))})
    )
    return vectors


@pytest.mark.parametrize("variant", [*models.available(), "care+file"])
def test_every_model_trains_checkpoints_and_evaluates(variant, tmp_path, capsys):
    name = variant.removesuffix("+file")
    overrides = model_overrides(name)
    embeddings = tmp_path / "embeddings.json"
    if variant.endswith("+file"):
        vectors = write_embeddings(embeddings, ["reach-v3"])
        overrides.append(f"agent.task_embeddings={embeddings}")
    run = tmp_path / "run"
    short = ["train.eval_every=0", "train.final_eval_episodes=1", "checkpoint.every=40"]
    args = tiny_mt1(60, run, *short, *overrides)
    assert train_main(args) == 0
    config = load_config(str(run / "config.yaml"))
    assert config.agent.model == name

    state = load_checkpoint(latest_checkpoint(run)).state
    assert state["finished"] and state["agent"]["updates"] > 0
    if variant.endswith("+file"):
        torch.testing.assert_close(state["task_embeddings"], torch.tensor(vectors))
        embeddings.unlink()  # resume and evaluation take the vectors from the checkpoint
        resumed = Trainer(config, run, progress=False, resume=load_checkpoint(step_file(run, 40)))
        fixed = resumed.agent.actor.model.embedding.vectors
        torch.testing.assert_close(fixed, state["task_embeddings"])
        resumed.close()
    else:
        assert state["task_embeddings"] is None

    capsys.readouterr()
    assert eval_main([str(run), "--episodes", "1"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[3].split()[0] == "reach-v3" and table[4].split()[0] == "mean"


def test_care_with_an_embeddings_file_and_pcgrad_on_mt10(tmp_path):
    """Ten tasks: the file's rows reach the networks in the benchmark's task order, the surgery
    combines the shared parameters (its diagnostics are logged) and training completes."""
    embeddings = tmp_path / "embeddings.json"
    vectors = write_embeddings(embeddings, list(reversed(MT10_TASKS)))[::-1]
    run = tmp_path / "run"
    args = [
        "--config",
        "smoke",
        "--surgery",
        "pcgrad",
        "--total-steps",
        "300",
        "--no-progress",
        "--out",
        str(run),
        "env.max_episode_steps=20",
        "train.warmup_steps=200",
        "train.log_every=100",
        "train.eval_every=0",
        "train.final_eval_episodes=1",
        "surgery.diagnostics_every=2",
        f"agent.task_embeddings={embeddings}",
        *model_overrides("care"),
    ]
    assert train_main(args) == 0
    state = load_checkpoint(latest_checkpoint(run)).state
    torch.testing.assert_close(state["task_embeddings"], torch.tensor(vectors))
    actor = state["agent"]["networks"]["actor"]
    torch.testing.assert_close(actor["model.embedding.vectors"], torch.tensor(vectors))
    records = read_metrics(run)
    assert any("diag/critic/cos" in r for r in records)
    assert [r.get("final") for r in records if "eval/success" in r] == [True]
