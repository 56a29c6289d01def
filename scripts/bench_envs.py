"""MT10 vs MT50 vector env step, side by side (random actions, one process, sync stepping).

The wall-time estimates in the README's GPU plan need the cost of one vector step per
benchmark. The two vector envs alternate in blocks, so drift on a shared machine hits both
alike; the ratio is the result, the milliseconds depend on the load.

    python scripts/bench_envs.py              # 10 rounds of 50 vector steps each
    python scripts/bench_envs.py --quick
    python scripts/bench_envs.py --quick --benchmarks mt1:reach-v3 mt50:reach-v3,push-v3  # seconds
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
    parser.add_argument(
        "--benchmarks",
        nargs=2,
        default=["mt10", "mt50"],
        metavar=("SMALL", "LARGE"),
        help="the two vector envs (default mt10 mt50; building MT50 takes about a minute)",
    )
    args = parser.parse_args()
    rounds, block = (3, 20) if args.quick else (args.rounds, args.block)

    names = tuple(args.benchmarks)
    benchmarks = {name: parse_benchmark(name) for name in names}
    envs = {name: make_envs(b, EnvConfig(), seed=0) for name, b in benchmarks.items()}
    for vec in envs.values():
        vec.action_space.seed(0)
        vec.reset(seed=0)
        time_block(vec, 5)  # warm caches
    seconds = {name: [] for name in envs}
    for _ in range(rounds):
        for name, vec in envs.items():
            seconds[name].append(time_block(vec, block) / block)
    ms = {name: 1e3 * float(np.median(s)) for name, s in seconds.items()}
    small, large = names
    ratio = ms[large] / ms[small]
    print("| benchmark | vector step (ms, median of blocks) | env steps/s |")
    print("|---|---:|---:|")
    for name, benchmark in benchmarks.items():
        print(f"| {name} | {ms[name]:.2f} | {benchmark.num_tasks * 1e3 / ms[name]:,.0f} |")
    envs_ratio = benchmarks[large].num_tasks / benchmarks[small].num_tasks
    print(
        f"{large.upper()} step / {small.upper()} step: {ratio:.2f}x "
        f"(ideal for {envs_ratio:g}x the envs: {envs_ratio:g}x)"
    )
    print(json.dumps({f"{small}_ms": ms[small], f"{large}_ms": ms[large], "ratio": ratio}))


if __name__ == "__main__":
    main()
