"""Size and write time of a training checkpoint with a full replay buffer, per preset.

Builds the real trainer of each preset (envs, agent, replay on the CPU), fills the replay to
capacity with random transitions whose observations end with the task one-hot (as Meta-World's
do), takes one gradient step so that the optimizers hold their moments, then times writing the
checkpoint (state capture, checksum, torch.save, fsync) and reading it back (load + verify).

    python scripts/checkpoint_size.py --presets mt10 mt50
    python scripts/checkpoint_size.py --quick --presets pcgrad-fig4   # seconds: the script runs
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from mtrl.checkpoint import BEST_FILE, checkpoint_dir, load_checkpoint
from mtrl.config import load_config
from mtrl.evaluation import EvalResult
from mtrl.train import Trainer


def fill_replay(trainer: Trainer) -> None:
    replay = trainer.replay
    k = replay.num_tasks
    generator = torch.Generator().manual_seed(0)
    replay.data.copy_(torch.randn(replay.data.shape, generator=generator))
    obs_dim, action_dim = replay._widths[0], replay._widths[1]
    onehot = torch.eye(k)[:, None, :]
    replay.data[:, :, obs_dim - k : obs_dim] = onehot
    next_end = obs_dim + action_dim + 1 + obs_dim
    replay.data[:, :, next_end - k : next_end] = onehot
    replay.size, replay.position = replay.capacity, 0


QUICK = ["train.buffer_size=2000", "agent.hidden_dims=[32,32]", "train.compile=none"]
"""The overrides of ``--quick``: a small replay and networks, the eager update."""


def measure(preset: str, folder: Path, overrides: Sequence[str] = ()) -> dict[str, float]:
    config = load_config(preset, ["train.device=cpu", *overrides])
    start = time.perf_counter()
    trainer = Trainer(config, folder / preset, progress=False)
    build = time.perf_counter() - start
    fill_replay(trainer)
    trainer.agent.update(trainer.sample())
    trainer.step = config.checkpoint.every

    start = time.perf_counter()
    path = trainer.checkpointer.save(trainer)
    write = time.perf_counter() - start
    tasks = trainer.benchmark.task_names
    fake = EvalResult({t: 0.5 for t in tasks}, {t: 100.0 for t in tasks}, 1)
    start = time.perf_counter()
    trainer.checkpointer.on_evaluation(trainer, fake)
    write_best = time.perf_counter() - start

    start = time.perf_counter()
    load_checkpoint(path)
    read = time.perf_counter() - start
    trainer.close()
    replay_bytes = trainer.replay.data.numel() * trainer.replay.data.element_size()
    return {
        "tasks": trainer.num_tasks,
        "replay_in_memory_mb": replay_bytes / 1e6,
        "checkpoint_mb": path.stat().st_size / 1e6,
        "write_s": write,
        "read_verify_s": read,
        "best_mb": (checkpoint_dir(folder / preset) / BEST_FILE).stat().st_size / 1e6,
        "write_best_s": write_best,
        "build_envs_s": build,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["mt10", "mt50"])
    parser.add_argument("--dir", type=Path, help="where to write (default: a temporary folder)")
    parser.add_argument("--quick", action="store_true", help=f"with {' '.join(QUICK)}")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        print(
            "| preset | tasks | replay in memory | checkpoint file | write | read + verify "
            "| best.pt | write best.pt |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for preset in args.presets:
            r = measure(preset, Path(tmp), QUICK if args.quick else [])
            print(
                f"| {preset} | {r['tasks']} | {r['replay_in_memory_mb']:.0f} MB "
                f"| {r['checkpoint_mb']:.0f} MB | {r['write_s']:.1f} s "
                f"| {r['read_verify_s']:.1f} s "
                f"| {r['best_mb']:.1f} MB | {r['write_best_s']:.2f} s |",
                flush=True,
            )


if __name__ == "__main__":
    main()
