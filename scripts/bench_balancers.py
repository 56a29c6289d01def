"""One full MT-SAC update with each loss balancer (on the critic) vs without, alone and with PCGrad.

Same networks, batches and round-robin timing as ``bench_update.py`` (every round times each
variant once; medians over rounds). FAMO costs one extra critic forward (the losses after the
step), GradNorm one backward from the losses to the last shared layer batched over the tasks
(on the surgery path: norms of the rows it already has), uncertainty weighting a K-vector.

    python scripts/bench_balancers.py                      # CPU, MT10
    python scripts/bench_balancers.py --benchmarks mt10 mt50 --device cuda
    python scripts/bench_balancers.py --quick              # one round: the script runs
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from bench_update import ACTION_DIM, STATE_DIM, TASKS, random_batch, timed

from mtrl import balancers
from mtrl.agent import MTSAC
from mtrl.config import AgentConfig, BalancerConfig, SurgeryConfig

VARIANTS = [
    ("none", "none"),
    *((name, "none") for name in balancers.available()),
    ("none", "pcgrad"),
    *((name, "pcgrad") for name in balancers.available()),
]


def label(balancer: str, surgery: str) -> str:
    return "+".join(part for part in (balancer, surgery) if part != "none") or "plain"


def make_agent(num_tasks: int, balancer: str, surgery: str, device: torch.device) -> MTSAC:
    torch.manual_seed(0)
    return MTSAC(
        STATE_DIM + num_tasks,
        ACTION_DIM,
        num_tasks,
        AgentConfig(),
        device,
        seed=0,
        surgery=SurgeryConfig(name=surgery, diagnostics_every=0),
        balancer=BalancerConfig(name=balancer),
    )


def bench(benchmark: str, rounds: int, device: torch.device) -> dict[str, float]:
    num_tasks = TASKS[benchmark]
    agents = {label(*v): make_agent(num_tasks, *v, device) for v in VARIANTS}
    batches = [random_batch(num_tasks, 128, device, seed) for seed in range(4)]
    for agent in agents.values():  # warm-up
        agent.update(batches[0])
    times: dict[str, list[float]] = {name: [] for name in agents}
    for r in range(rounds):
        batch = batches[r % len(batches)]
        for name, agent in agents.items():
            times[name].append(timed(lambda a=agent, b=batch: a.update(b), device))
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--benchmarks", nargs="+", default=["mt10"], choices=list(TASKS))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="1 round")
    args = parser.parse_args()
    if args.quick:
        args.rounds = 1
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device: {device}, torch {torch.__version__}, threads {args.threads}")
    summary: dict[str, object] = {"device": str(device)}
    for benchmark in args.benchmarks:
        ms = bench(benchmark, args.rounds, device)
        plain = ms["plain"]
        print(f"\n{benchmark.upper()}: MT-SAC update, 3 x 400, batch 128/task, median of "
              f"{args.rounds}")  # fmt: skip
        print(f"  {'variant':<18}{'ms':>10}{'x plain':>10}")
        for name, value in ms.items():
            print(f"  {name:<18}{value:10.1f}{value / plain:10.2f}")
        summary[f"{benchmark}_plain_ms"] = round(plain, 2)
        summary[f"{benchmark}_ratio"] = {name: round(v / plain, 3) for name, v in ms.items()}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
