"""Running mtrl-train / mtrl-eval in a subprocess, as ``python -m <module>``.

``sys.executable -m`` works both where the package is pip-installed (console scripts on PATH)
and in a plain checkout; the checkout that the tests import is put first on PYTHONPATH.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import mtrl

SOURCE_ROOT = Path(mtrl.__file__).resolve().parent.parent
TRAIN = "mtrl.cli"
EVAL = "mtrl.eval_cli"


def tiny_mt1(total_steps: int, out: Path, *overrides: str) -> list[str]:
    """mtrl-train arguments for one Meta-World task (builds in about a second), 20-step
    episodes and tiny networks. Flags come first: argparse takes KEY=VALUE only at the end."""
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
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(**env),
    )


def start_module(module: str, *args: str, log: Path) -> subprocess.Popen:
    """Start in the background; stdout and stderr go to ``log`` (no pipe to fill up)."""
    out = log.open("w")
    return subprocess.Popen(
        [sys.executable, "-m", module, *args], stdout=out, stderr=subprocess.STDOUT, env=child_env()
    )


def snapshot(folder: Path) -> dict[str, str]:
    """Path -> content hash of every file below ``folder``: to prove nothing was modified."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
