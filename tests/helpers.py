"""Shared test helpers: running the command-line tools, MT10 task names, synthetic batches."""

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

import mtrl
from mtrl.logger import read_metrics
from mtrl.replay import Batch

MT10_TASKS = (
    "reach-v3",
    "push-v3",
    "pick-place-v3",
    "door-open-v3",
    "drawer-open-v3",
    "drawer-close-v3",
    "button-press-topdown-v3",
    "peg-insert-side-v3",
    "window-open-v3",
    "window-close-v3",
)
K, STATE, ACT, N = 3, 5, 2, 8
"""Small synthetic problems: tasks, state dims (plus the K one-hot), action dims, per-task batch."""
TINY_MODEL_OPTIONS = {
    "mlp": {},
    "multihead": {},
    # three layers of modules: the middle layer's routing is conditioned on the first's
    "soft_modularization": {
        "num_layers": 3,
        "num_modules": 3,
        "module_hidden": 8,
        "routing_hidden": 8,
    },
    "care": {"num_experts": 3, "encoder_dim": 6, "context_dim": 5},
    "moore": {"num_experts": 3},
    "paco": {"num_param_sets": 3},
}
"""Small options for every model (agent.model_options; every option that shapes the network
differs from 1)."""


def run_cli(command: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run an installed console script (``mtrl-train``, ...) as a user would, one thread."""
    executable = Path(sys.executable).parent / command
    return subprocess.run(
        [str(executable), *args], capture_output=True, text=True, timeout=timeout, env=child_env()
    )


def make_batch(seed: int = 0, per_task: int = N) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    onehot = torch.eye(K)[:, None, :].expand(K, per_task, K)

    def obs():
        return torch.cat([torch.randn(K, per_task, STATE, generator=gen), onehot], -1)

    return Batch(
        obs=obs(),
        action=torch.rand(K, per_task, ACT, generator=gen) * 2 - 1,
        reward=torch.randn(K, per_task, generator=gen),
        next_obs=obs(),
        terminated=torch.zeros(K, per_task),
        truncated=torch.zeros(K, per_task),
        drawn=torch.ones(K, per_task),
    )


SOURCE_ROOT = Path(mtrl.__file__).resolve().parent.parent
TRAIN = "mtrl.cli"
EVAL = "mtrl.eval_cli"


def tiny_mt1(total_steps: int, out: Path, *overrides: str) -> list[str]:
    """mtrl-train arguments for one Meta-World task (builds in about a second), 20-step
    episodes and tiny networks."""
    return [
        "--benchmark",
        "mt1:reach-v3",
        "--no-progress",
        "--total-steps",
        str(total_steps),
        "--out",
        str(out),
        "env.max_episode_steps=20",
        "agent.hidden_dims=[32,32]",
        "agent.batch_per_task=16",
        "train.buffer_size=5000",
        "train.warmup_steps=40",
        "train.eval_every=100",
        "train.eval_episodes=1",
        "train.final_eval_episodes=2",
        "train.log_every=20",
        *overrides,
    ]


def child_env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(SOURCE_ROOT), os.environ.get("PYTHONPATH")) if p)
    return {
        **os.environ,
        "PYTHONPATH": path,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        **extra,
    }


def run_module(module: str, *args: str, timeout: float = 600, **env: str):
    """``python -m module``: this checkout's code, also where another mtrl is installed."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(**env),
    )


def start_module(module: str, *args: str, log: Path, **popen) -> subprocess.Popen:
    """Start in the background; stdout and stderr go to ``log`` (no pipe to fill up)."""
    out = log.open("w")
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=child_env(),
        **popen,
    )


def snapshot(folder: Path) -> dict[str, str]:
    """Path -> content hash of every file below ``folder``: to prove nothing was modified."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def wait_for(condition, process, what: str, timeout: float = 300) -> None:
    """Poll ``condition`` while the background ``process`` runs."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the run ended (rc {process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def logged_after(run: Path, step: int) -> bool:
    metrics = run / "metrics.jsonl"
    return metrics.exists() and any(r["step"] > step for r in read_metrics(run))


def without_timing(records):
    return [{k: v for k, v in r.items() if k != "train/steps_per_s"} for r in records]


def assert_same_checkpoint(a: Path, b: Path, ignore: tuple[str, ...] = ()) -> None:
    """Every tensor bit for bit and the same state, but for when it was written, the byte
    length of metrics.jsonl (its steps_per_s are timings) and the ``ignore`` keys."""
    raw_a, raw_b = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert raw_a["tensors"].keys() == raw_b["tensors"].keys()
    for name, tensor in raw_a["tensors"].items():
        other = raw_b["tensors"][name]
        assert tensor.dtype == other.dtype and torch.equal(tensor, other), name
    state_a, state_b = json.loads(raw_a["state"]), json.loads(raw_b["state"])
    for key in ("created", "logger", *ignore):
        state_a.pop(key, None), state_b.pop(key, None)
    assert state_a == state_b
