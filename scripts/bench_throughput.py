"""MT10 collector vs a bare env loop, side by side, and the time of one MT-SAC update.

The collector is the trainer's own (policy forward, final-observation handling, replay insert,
episode statistics); the bare loop steps the same 10 envs with random actions and does nothing
else. Blocks of the two alternate so that drift on a shared machine hits both alike.

    python scripts/bench_throughput.py            # MT10 defaults (3 x 400, batch 1280)
    python scripts/bench_throughput.py --quick    # fewer repetitions
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mtrl.config import load_config
from mtrl.train import Trainer


def time_collector(trainer: Trainer, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        trainer.collect()
    return steps * trainer.num_tasks / (time.perf_counter() - start)


def time_bare_loop(trainer: Trainer, steps: int, rng: np.random.Generator) -> float:
    envs = trainer.envs
    shape = (envs.num_envs, trainer.action_dim)
    start = time.perf_counter()
    for _ in range(steps):
        envs.step(rng.uniform(-1.0, 1.0, shape))
    return steps * envs.num_envs / (time.perf_counter() - start)


def time_update(trainer: Trainer, repeats: int, threads: int) -> float:
    torch.set_num_threads(threads)
    agent, replay = trainer.agent, trainer.replay
    for _ in range(3):
        agent.update(replay.sample(trainer.batch_size))
    start = time.perf_counter()
    for _ in range(repeats):
        agent.update(replay.sample(trainer.batch_size))
    return (time.perf_counter() - start) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--config", default="mt10")
    args = parser.parse_args()
    blocks, block_steps, repeats = (4, 100, 5) if args.quick else (8, 250, 20)

    config = load_config(args.config, ["train.warmup_steps=0", "train.device=cpu"])
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, Path(tmp), progress=False)
        rng = np.random.default_rng(0)
        trainer.collect()  # warm-up: first policy call, first replay write
        collector, bare = [], []
        for _ in range(blocks):
            bare.append(time_bare_loop(trainer, block_steps, rng))
            collector.append(time_collector(trainer, block_steps))
        update_ms = {t: time_update(trainer, repeats, t) for t in (1, 2)}
        trainer.close()

    ratio = statistics.median(c / b for c, b in zip(collector, bare, strict=True))
    hidden = config.agent.hidden_dims
    batch = config.agent.batch_per_task * trainer.num_tasks
    print(f"MT10 env steps/s, {blocks} alternating blocks of {block_steps} vector steps:")
    print(f"  bare loop (random actions)   {statistics.median(bare):8.0f}")
    print(f"  mtrl collector (policy)      {statistics.median(collector):8.0f}")
    print(f"  collector / bare (median)    {ratio:8.3f}")
    print(f"MT-SAC update, {hidden} networks, batch {batch}, mean of {repeats}:")
    for threads, ms in update_ms.items():
        print(f"  torch threads = {threads}           {ms:8.1f} ms")
    print(
        json.dumps(
            {
                "collector_steps_per_s": round(statistics.median(collector)),
                "bare_steps_per_s": round(statistics.median(bare)),
                "collector_over_bare": round(ratio, 3),
                "update_ms_1_thread": round(update_ms[1], 1),
                "update_ms_2_threads": round(update_ms[2], 1),
            }
        )
    )


if __name__ == "__main__":
    main()
