"""Shared test helpers: running the console scripts, MT10 task names, synthetic batches."""

import os
import subprocess
import sys
from pathlib import Path

import torch

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


def run_cli(command: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run an installed console script (``mtrl-train``, ...) as a user would, one thread."""
    executable = Path(sys.executable).parent / command
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run(
        [str(executable), *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def make_batch(seed: int = 0) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    onehot = torch.eye(K)[:, None, :].expand(K, N, K)

    def obs():
        return torch.cat([torch.randn(K, N, STATE, generator=gen), onehot], -1)

    return Batch(
        obs=obs(),
        action=torch.rand(K, N, ACT, generator=gen) * 2 - 1,
        reward=torch.randn(K, N, generator=gen),
        next_obs=obs(),
        terminated=torch.zeros(K, N),
        truncated=torch.zeros(K, N),
    )
