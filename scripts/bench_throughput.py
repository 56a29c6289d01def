"""MT10 collector vs a bare env loop, side by side, and the time of one MT-SAC update.

The collector is the trainer's own (policy forward pass, final-observation handling, replay
insert, episode statistics). The bare loop steps a twin of its 10 envs (built with the same
seed) and does nothing else, replaying the very actions the collector took, so both follow the
same trajectories: MuJoCo's cost depends on the actions (this policy's actions simulate ~30%
slower than uniform ones here), and only equal trajectories make the ratio the collector's own
overhead. Two phases:

- policy: the collector acting with the MT-SAC policy (MT10 default networks);
- random: the collector's warm-up path (uniform random actions).

Collector and bare loop alternate step by step, so drift on a shared machine hits both alike.

    python scripts/bench_throughput.py            # 3000 vector steps per phase
    python scripts/bench_throughput.py --quick
    python scripts/bench_throughput.py --quick --config pcgrad-fig4   # seconds: the script runs
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from mtrl.config import load_config
from mtrl.envs import make_envs
from mtrl.train import Trainer


def compare(trainer: Trainer, twin: gym.vector.VectorEnv, steps: int) -> dict[str, float]:
    """Alternate one collector step and one bare step on the twin with the same actions.

    Step-by-step alternation makes machine drift hit both sides alike; the twin's trajectory
    equals the collector's, so both pay the same physics.
    """
    envs = trainer.envs.env  # the vector env inside the serial collector
    step = envs.step
    taken: list[np.ndarray] = []

    def recording_step(action: np.ndarray):
        taken.append(np.array(action, copy=True))
        return step(action)

    envs.step = recording_step  # type: ignore[method-assign]
    collector_s = bare_s = 0.0
    try:
        for _ in range(steps):
            start = time.perf_counter()
            trainer.collect()
            middle = time.perf_counter()
            twin_obs, *_ = twin.step(taken.pop())
            collector_s += middle - start
            bare_s += time.perf_counter() - middle
    finally:
        del envs.step  # back to the class's method
    assert np.array_equal(twin_obs, trainer.obs), "the twin envs left the trajectory"
    env_steps = steps * trainer.num_tasks
    return {
        "collector": env_steps / collector_s,
        "bare": env_steps / bare_s,
        "ratio": bare_s / collector_s,
    }


def time_update(trainer: Trainer, repeats: int, threads: int) -> float:
    torch.set_num_threads(threads)
    agent = trainer.agent
    for _ in range(3):
        agent.update(trainer.sample())
    start = time.perf_counter()
    for _ in range(repeats):
        agent.update(trainer.sample())
    return (time.perf_counter() - start) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="100 vector steps, eager updates (train.compile=none)"
    )
    parser.add_argument("--config", default="mt10")
    args = parser.parse_args()
    steps, repeats = (100, 3) if args.quick else (3000, 20)
    torch.set_num_threads(1)

    overrides = ["train.warmup_steps=0", "train.device=cpu"]
    config = load_config(args.config, overrides + (["train.compile=none"] if args.quick else []))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, Path(tmp), progress=False)
        twin = make_envs(trainer.benchmark, config.env, config.train.seed)
        twin.reset()  # the trainer's envs were reset once, by the same seed: same state now
        phases = {"policy": compare(trainer, twin, steps)}
        trainer.config.train.warmup_steps = trainer.step + 10**9  # the uniform-action path
        phases["random"] = compare(trainer, twin, steps)
        update_ms = {t: time_update(trainer, repeats, t) for t in (1, 2)}
        twin.close()
        trainer.close()

    hidden, batch = config.agent.hidden_dims, config.agent.batch_per_task * trainer.num_tasks
    benchmark = config.env.benchmark.upper()
    print(
        f"{benchmark} env steps/s over {steps} vector steps, collector and bare loop alternating:"
    )
    for name, phase in phases.items():
        print(
            f"  {name:<7} collector {phase['collector']:7.0f}   bare loop, same actions "
            f"{phase['bare']:7.0f}   collector / bare {phase['ratio']:.3f}"
        )
    print(f"MT-SAC update, {hidden} networks, batch {batch}, mean of {repeats}:")
    for threads, ms in update_ms.items():
        print(f"  torch threads = {threads}: {ms:8.1f} ms")
    summary = {f"{name}_{k}": round(v, 3) for name, p in phases.items() for k, v in p.items()}
    summary.update({f"update_ms_{t}_threads": round(ms, 1) for t, ms in update_ms.items()})
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
