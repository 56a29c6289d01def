"""What the gradient diagnostics (``surgery.diagnostics_every``) cost: one MT-SAC update that
computes them vs one that does not, side by side in one run, without and with PCGrad.

On the plain path a diagnostic update adds the per-task gradients (one vmapped pass per
component) to its ordinary backward pass; every diagnostic update adds the Gram statistics and
one more evaluation of each loss for the curvature. Each round times a burst of plain updates and
a burst of diagnostic updates of every setting, alternating, so drift on a shared machine hits
both alike; the table shows medians over rounds and the overhead averaged over training at
``diagnostics_every`` = 25 and 100 ((ratio - 1) / N). The last line is one JSON object.

    python scripts/bench_diagnostics.py            # the pcgrad-fig4 pair and MT10 (3 x 400)
    python scripts/bench_diagnostics.py --quick
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from bench_update import STATE_DIM, random_batch, timed

from mtrl.agent import MTSAC
from mtrl.config import AgentConfig, SurgeryConfig

SETTINGS = {
    "pair (2 x 256, 2 x 64)": (2, [256, 256], 64),
    "mt10 (3 x 400, 10 x 128)": (10, [400, 400, 400], 128),
}


def make_agent(tasks: int, hidden: list[int], per_task: int, method: str, every: int) -> MTSAC:
    torch.manual_seed(0)
    config = AgentConfig(hidden_dims=hidden, batch_per_task=per_task)
    surgery = SurgeryConfig(method, diagnostics_every=every)
    return MTSAC(STATE_DIM + tasks, 4, tasks, config, "cpu", 0, surgery)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--burst", type=int, default=10, help="updates per timing")
    parser.add_argument("--quick", action="store_true", help="1 round of 2 updates")
    args = parser.parse_args()
    rounds, burst = (1, 2) if args.quick else (args.rounds, args.burst)
    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    results = {}
    for name, (tasks, hidden, per_task) in SETTINGS.items():
        batch = random_batch(tasks, per_task, cpu, seed=0)
        for method in ("none", "pcgrad"):
            agents = {every: make_agent(tasks, hidden, per_task, method, every) for every in (0, 1)}
            times: dict[int, list[float]] = {0: [], 1: []}
            for _ in range(rounds + 1):  # the first round warms up
                for every, agent in agents.items():
                    updates = [agent.update] * burst
                    times[every].append(timed(lambda u=updates, b=batch: [f(b) for f in u], cpu))
            times = {every: [t / burst for t in ts] for every, ts in times.items()}
            plain, diagnostic = (statistics.median(times[e][1:]) for e in (0, 1))
            ratio = diagnostic / plain
            results[f"{name} {method}"] = {
                "update_ms": round(plain, 2),
                "diagnostic_update_ms": round(diagnostic, 2),
                "ratio": round(ratio, 3),
                "overhead_every_25": round((ratio - 1) / 25, 4),
                "overhead_every_100": round((ratio - 1) / 100, 4),
            }
    print(f"{'setting':<34} {'update':>9} {'with diag':>10} {'ratio':>6} {'/25':>7} {'/100':>7}")
    for key, r in results.items():
        print(
            f"{key:<34} {r['update_ms']:>7.2f}ms {r['diagnostic_update_ms']:>8.2f}ms "
            f"{r['ratio']:>6.2f} {r['overhead_every_25']:>7.1%} {r['overhead_every_100']:>7.1%}"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
