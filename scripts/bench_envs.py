"""MT10 vs MT50 vector env step, side by side (random actions, one process, sync stepping).

The wall-time estimates in the README's GPU plan need the cost of one vector step per
benchmark. The two vector envs alternate in blocks, so drift on a shared machine hits both
alike; the ratio is the result, the milliseconds depend on the load.

    python scripts/bench_envs.py              # 10 rounds of 50 vector steps each
    python scripts/bench_envs.py --quick
"""

from __future__ import annotations

import argparse
import json
import time

import gymnasium as gym
import numpy as np

from mtrl.config import EnvConfig
from mtrl.envs import make_envs, parse_benchmark


def time_block(envs: gym.vector.VectorEnv, steps: int) -> float:
    """Seconds for ``steps`` vector steps with uniform random actions."""
    actions = [envs.action_space.sample() for _ in range(steps)]
    start = time.perf_counter()
    for action in actions:
        envs.step(action)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="alternating blocks per benchmark")
    parser.add_argument("--block", type=int, default=50, help="vector steps per block")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 20 vector steps")
    args = parser.parse_args()
    rounds, block = (3, 20) if args.quick else (args.rounds, args.block)

    names = ("mt10", "mt50")
    envs = {name: make_envs(parse_benchmark(name), EnvConfig(), seed=0) for name in names}
    for vec in envs.values():
        vec.action_space.seed(0)
        vec.reset(seed=0)
        time_block(vec, 5)  # warm caches
    seconds = {name: [] for name in envs}
    for _ in range(rounds):
        for name, vec in envs.items():
            seconds[name].append(time_block(vec, block) / block)
    ms = {name: 1e3 * float(np.median(s)) for name, s in seconds.items()}
    ratio = ms["mt50"] / ms["mt10"]
    print("| benchmark | vector step (ms, median of blocks) | env steps/s |")
    print("|---|---:|---:|")
    for name, k in (("mt10", 10), ("mt50", 50)):
        print(f"| {name} | {ms[name]:.2f} | {k * 1e3 / ms[name]:,.0f} |")
    print(f"MT50 step / MT10 step: {ratio:.2f}x (ideal for 5x the envs: 5x)")
    print(json.dumps({"mt10_ms": ms["mt10"], "mt50_ms": ms["mt50"], "ratio": ratio}))


if __name__ == "__main__":
    main()
