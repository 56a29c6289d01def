"""One full MT-SAC update (critic + actor + temperature) with each surgery method and with each
network model, vs the plain update of the one-hot MLP.

MT10 and MT50 batches (128 per task), on the chosen device, side by side in one run: every round
times every variant once, so drift on a shared machine hits all alike; the tables show medians
over rounds. Tables: (1) each surgery method with the default 3 x 400 MLP; (2) the per-task
critic gradients: one vmapped pass vs a loop of K backward passes vs one plain backward; (3) each
model (``agent.model``, with the network of its paper preset ``configs/<benchmark>-<model>``)
without surgery and with PCGrad. The last line is one JSON object with the ratios.

    python scripts/bench_update.py                      # CPU, MT10 and MT50, everything
    python scripts/bench_update.py --device cuda        # on a GPU
    python scripts/bench_update.py --quick --benchmarks mt10 --methods pcgrad cagrad --models
    python scripts/bench_update.py --methods --models moore paco   # models table only
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import replace

import torch

from mtrl import models, surgery
from mtrl.agent import MTSAC, CriticInputs
from mtrl.config import AgentConfig, SurgeryConfig, load_config
from mtrl.replay import Batch

STATE_DIM, ACTION_DIM = 39, 4
TASKS = {"mt10": 10, "mt50": 50}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Milliseconds of one call, the device's queue drained before and after."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return (time.perf_counter() - start) * 1000


def random_batch(num_tasks: int, per_task: int, device: torch.device, seed: int) -> Batch:
    gen = torch.Generator(device).manual_seed(seed)
    onehot = torch.eye(num_tasks, device=device)[:, None, :].expand(num_tasks, per_task, -1)

    def obs() -> torch.Tensor:
        state = torch.randn(num_tasks, per_task, STATE_DIM, generator=gen, device=device)
        return torch.cat([state, onehot], -1)

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=gen, device=device)

    return Batch(
        obs=obs(),
        action=uniform(num_tasks, per_task, ACTION_DIM) * 2 - 1,
        reward=uniform(num_tasks, per_task) * 10,
        next_obs=obs(),
        terminated=torch.zeros(num_tasks, per_task, device=device),
        truncated=torch.zeros(num_tasks, per_task, device=device),
    )


def make_agent(
    num_tasks: int, method: str, device: torch.device, config: AgentConfig | None = None
) -> MTSAC:
    torch.manual_seed(0)
    return MTSAC(
        STATE_DIM + num_tasks,
        ACTION_DIM,
        num_tasks,
        config or AgentConfig(),
        device,
        seed=0,
        surgery=SurgeryConfig(name=method, diagnostics_every=0),
    )


def model_config(benchmark: str, model: str) -> AgentConfig:
    """The network of the model's paper preset (``configs/<benchmark>-<model>``; the benchmark's
    own preset for ``mlp``, ``-mhsac`` for ``multihead``) with the benchmark's batch of 128 per
    task, so that only the network differs between the rows."""
    presets = {"mlp": benchmark, "multihead": f"{benchmark}-mhsac"}
    agent = load_config(presets.get(model, f"{benchmark}-{model}")).agent
    return replace(agent, model=model, multi_head=False, batch_per_task=128)


def bench_updates(
    agents: dict[str, MTSAC], num_tasks: int, rounds: int, device: torch.device
) -> dict[str, float]:
    """Median milliseconds of one update per agent, the agents interleaved within each round."""
    batches = [random_batch(num_tasks, 128, device, seed) for seed in range(4)]
    for agent in agents.values():  # warm-up: allocations, solver compilation, caches
        agent.update(batches[0])
    times: dict[str, list[float]] = {name: [] for name in agents}
    for r in range(rounds):
        batch = batches[r % len(batches)]
        for name, agent in agents.items():
            times[name].append(timed(lambda a=agent, b=batch: a.update(b), device))
    return {name: statistics.median(t) for name, t in times.items()}


def bench_models(
    benchmark: str, names: list[str], rounds: int, device: torch.device
) -> dict[tuple[str, str], float]:
    """(model, surgery) -> ms, for surgery none and pcgrad."""
    num_tasks = TASKS[benchmark]
    agents = {
        (name, method): make_agent(num_tasks, method, device, model_config(benchmark, name))
        for name in names
        for method in ("none", "pcgrad")
    }
    ms = bench_updates({f"{n}/{m}": a for (n, m), a in agents.items()}, num_tasks, rounds, device)
    return {(n, m): ms[f"{n}/{m}"] for n, m in agents}


def bench_per_task_grads(benchmark: str, rounds: int, device: torch.device) -> dict[str, float]:
    """The critic's K per-task gradients: vmap pass, loop of K backward passes, plain backward."""
    num_tasks = TASKS[benchmark]
    agent = make_agent(num_tasks, "none", device)
    batch = random_batch(num_tasks, 128, device, 0)
    inputs = CriticInputs(batch.obs, batch.action, agent.critic_target_values(batch))
    critic = agent.components["critic"]
    params = list(critic.params.values())

    def one_pass() -> None:
        surgery.per_task_grads(critic.loss, critic.params, inputs, randomness="error")

    def loop() -> None:
        losses = critic.loss(critic.params, inputs)
        rows = [
            torch.cat([g.flatten() for g in torch.autograd.grad(loss, params, retain_graph=True)])
            for loss in losses
        ]
        torch.stack(rows)

    def plain() -> None:
        torch.autograd.grad(critic.loss(critic.params, inputs).mean(), params)

    variants = {"vmap one pass": one_pass, "loop of K backward": loop, "plain backward": plain}
    for fn in variants.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            times[name].append(timed(fn, device))
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--benchmarks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--methods", nargs="*", default=surgery.available())
    parser.add_argument(
        "--models", nargs="*", default=models.available(), help="models table ('mlp' added)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 5, 3)")
    parser.add_argument("--quick", action="store_true", help="2 rounds")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    label = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {device} ({label}), torch {torch.__version__}, threads {args.threads}")

    summary: dict[str, object] = {"device": str(device)}
    for benchmark in args.benchmarks:
        rounds = args.rounds or (2 if args.quick else (5 if benchmark == "mt10" else 3))
        if args.methods:
            bench_methods(benchmark, args.methods, rounds, device, summary)
        if args.models:
            names = ["mlp", *(m for m in args.models if m != "mlp")]
            report_models(benchmark, bench_models(benchmark, names, rounds, device), summary)
    print(json.dumps(summary))


def bench_methods(
    benchmark: str, methods: list[str], rounds: int, device: torch.device, summary: dict
) -> None:
    """Table 1 (surgery methods, default MLP) and table 2 (per-task critic gradients)."""
    num_tasks = TASKS[benchmark]
    agents = {m: make_agent(num_tasks, m, device) for m in ["none", *methods]}
    ms = bench_updates(agents, num_tasks, rounds, device)
    plain = ms["none"]
    print(f"\n{benchmark.upper()}: MT-SAC update, 3 x 400, batch 128/task, median of {rounds}")
    print(f"  {'method':<14}{'ms':>10}{'x plain':>10}")
    for method, value in ms.items():
        print(f"  {method:<14}{value:10.1f}{value / plain:10.2f}")
    summary[f"{benchmark}_plain_ms"] = round(plain, 2)
    summary[f"{benchmark}_ratio"] = {m: round(v / plain, 3) for m, v in ms.items()}

    grads = bench_per_task_grads(benchmark, rounds, device)
    print(f"  per-task critic gradients ({num_tasks} tasks):")
    for name, value in grads.items():
        print(f"    {name:<20}{value:10.1f} ms{value / grads['plain backward']:8.2f}x plain")
    summary[f"{benchmark}_vmap_over_plain_backward"] = round(
        grads["vmap one pass"] / grads["plain backward"], 3
    )
    summary[f"{benchmark}_loop_over_vmap"] = round(
        grads["loop of K backward"] / grads["vmap one pass"], 3
    )


def report_models(benchmark: str, ms: dict[tuple[str, str], float], summary: dict) -> None:
    """Table 3: each model without surgery and with PCGrad, relative to the plain MLP update."""
    mlp = ms[("mlp", "none")]
    print(f"\n{benchmark.upper()}: MT-SAC update per model (paper presets), batch 128/task")
    print(f"  {'model':<21}{'ms':>9}{'x mlp':>8}{'pcgrad ms':>11}{'x mlp':>8}{'x own':>8}")
    for name in dict.fromkeys(n for n, _ in ms):
        plain, pcgrad = ms[(name, "none")], ms[(name, "pcgrad")]
        print(
            f"  {name:<21}{plain:9.1f}{plain / mlp:8.2f}{pcgrad:11.1f}{pcgrad / mlp:8.2f}"
            f"{pcgrad / plain:8.2f}"
        )
    summary[f"{benchmark}_models_ms"] = {f"{n}/{m}": round(v, 2) for (n, m), v in ms.items()}


if __name__ == "__main__":
    main()
