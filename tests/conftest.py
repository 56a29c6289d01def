"""Tests run with one torch thread: on small CPU machines more threads only busy-wait."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch

torch.set_num_threads(1)


import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402


def run_cli(command: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run an installed console script (``mtrl-train``, ...) as a user would, one thread."""
    executable = Path(sys.executable).parent / command
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run(
        [str(executable), *args], capture_output=True, text=True, timeout=timeout, env=env
    )
