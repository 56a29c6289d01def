"""One full MT-SAC update (critic + actor + temperature) with each surgery method and with each
network model, vs the plain update of the one-hot MLP.

MT10 and MT50 batches (128 per task), on the chosen device, side by side in one run: every round
times a burst of updates of every variant, so drift on a shared machine hits all alike; the
tables show medians over rounds of the time per update. A burst is queued back to back and the
device drained once at its end, as in training, where an update that never waits for the device
lets Python run ahead of it. Tables: (1) each surgery method with the default 3 x 400 MLP
(methods take options as NAME:KEY=VALUE, e.g. ``cagrad:solver=exact``: the host solver on a
GPU; ``--compile cudagraph`` adds each method replayed from a CUDA graph, ``+graph`` rows,
``--compile none inductor`` each method compiled, ``+inductor`` rows; ``--bf16`` each row
again with the update under ``torch.autocast`` in bfloat16, ``+bf16`` rows: another arithmetic,
which mtrl does not offer, measured for what a processor's bfloat16 products would give); (2)
the per-task critic gradients: one vmapped pass vs a loop of K backward passes vs one plain
backward; (3) each model (``agent.model``, with the network of its paper preset
``configs/<benchmark>-<model>``) without surgery and with PCGrad. The last line is one JSON
object with the times and ratios.

    python scripts/bench_update.py                      # CPU, MT10 and MT50, everything
    python scripts/bench_update.py --device cuda --compile none cudagraph
    python scripts/bench_update.py --compile none inductor --benchmarks mt10 --models
    python scripts/bench_update.py --compile inductor --bf16 --benchmarks mt10 --methods pcgrad
    python scripts/bench_update.py --quick --benchmarks mt10 --methods pcgrad cagrad --models
    python scripts/bench_update.py --methods --models moore paco   # models table only
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import replace

import torch
import yaml

from mtrl import models, surgery
from mtrl.agent import MTSAC, CriticInputs, capture_problem, flushing_denormals
from mtrl.capture import WARMUP
from mtrl.config import AgentConfig, SurgeryConfig, load_config
from mtrl.gradients import ComponentGradients
from mtrl.replay import Batch
from mtrl.sweep import parse_method

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
        drawn=torch.ones(num_tasks, per_task, device=device),  # a balanced batch: all drawn
    )


def surgery_config(spec: str) -> SurgeryConfig:
    """``NAME`` or ``NAME:KEY=VALUE,...`` (as mtrl-sweep's --methods), without diagnostics."""
    method = parse_method(spec)
    options = {key: yaml.safe_load(value) for key, value in method.options}
    return SurgeryConfig(name=method.name, options=options, diagnostics_every=0)


def make_agent(
    num_tasks: int,
    spec: str,
    device: torch.device,
    config: AgentConfig | None = None,
    cuda_graph: bool = False,
    compiled: bool = False,
) -> MTSAC:
    torch.manual_seed(0)
    return MTSAC(
        STATE_DIM + num_tasks,
        ACTION_DIM,
        num_tasks,
        config or AgentConfig(),
        device,
        seed=0,
        surgery=surgery_config(spec),
        cuda_graph=cuda_graph,
        compiled=compiled,
    )


def model_config(benchmark: str, model: str) -> AgentConfig:
    """The network of the model's paper preset (``configs/<benchmark>-<model>``; the benchmark's
    own preset for ``mlp``, ``-mhsac`` for ``multihead``) with the benchmark's batch of 128 per
    task, so that only the network differs between the rows."""
    presets = {"mlp": benchmark, "multihead": f"{benchmark}-mhsac"}
    agent = load_config(presets.get(model, f"{benchmark}-{model}")).agent
    return replace(agent, model=model, multi_head=False, batch_per_task=128)


def bench_updates(
    agents: dict[str, MTSAC], num_tasks: int, rounds: int, burst: int, device: torch.device
) -> dict[str, float]:
    """Median milliseconds per update of each agent, timed in bursts of ``burst`` updates, the
    agents interleaved within each round."""
    batches = [random_batch(num_tasks, 128, device, seed) for seed in range(4)]
    for agent in agents.values():  # warm-up: allocations, caches, the graphs' capture, compiling
        for step in range(WARMUP + 2 if agent.cuda_graph or agent.compiled else 1):
            agent.update(batches[step % len(batches)])
    times: dict[str, list[float]] = {name: [] for name in agents}

    def run(agent: MTSAC, first: int) -> None:
        for step in range(burst):
            agent.update(batches[(first + step) % len(batches)])

    for r in range(rounds):
        for name, agent in agents.items():
            times[name].append(timed(lambda a=agent, r=r: run(a, r), device) / burst)
    return {name: statistics.median(t) for name, t in times.items()}


def method_agents(
    num_tasks: int, methods: list[str], device: torch.device, modes: list[str], bf16: bool = False
) -> dict[str, MTSAC]:
    """The plain agent and one per method, eager, (``cudagraph`` in ``modes``) captured and
    (``inductor``) compiled; methods that cannot be captured are left out of the captured rows,
    with a note. The first mode's plain agent is the rows' reference. With ``bf16``, each agent
    again, its updates run under bfloat16 autocast (:func:`in_bfloat16`)."""
    agents = {}
    suffix = {"none": "", "cudagraph": "+graph", "inductor": "+inductor"}
    for mode in modes:
        graph = mode == "cudagraph"
        for spec in ["none", *methods]:
            problem = capture_problem(surgery_config(spec), device) if graph else None
            if problem is not None:
                print(f"  {spec}+graph: not captured ({problem})")
                continue
            for half in (False, True) if bf16 else (False,):
                agent = make_agent(
                    num_tasks, spec, device, cuda_graph=graph, compiled=mode == "inductor"
                )
                if half:
                    in_bfloat16(agent)
                agents[spec + suffix[mode] + ("+bf16" if half else "")] = agent
    return agents


def in_bfloat16(agent: MTSAC) -> None:
    """Run ``agent``'s updates under ``torch.autocast`` in bfloat16: the matrix products and the
    activations after them in bfloat16 (8 bits of mantissa); the parameters, Adam's state and
    the returned losses stay float32."""
    update = agent.update

    def autocast_update(*args, **kwargs):
        with torch.autocast(agent.device.type, dtype=torch.bfloat16):
            return update(*args, **kwargs)

    agent.update = autocast_update


def bench_models(
    benchmark: str, names: list[str], rounds: int, burst: int, device: torch.device
) -> dict[tuple[str, str], float]:
    """(model, surgery) -> ms, for surgery none and pcgrad."""
    num_tasks = TASKS[benchmark]
    agents = {
        (name, method): make_agent(num_tasks, method, device, model_config(benchmark, name))
        for name in names
        for method in ("none", "pcgrad")
    }
    labelled = {f"{n}/{m}": a for (n, m), a in agents.items()}
    ms = bench_updates(labelled, num_tasks, rounds, burst, device)
    return {(n, m): ms[f"{n}/{m}"] for n, m in agents}


def bench_per_task_grads(
    benchmark: str, rounds: int, device: torch.device, compiled: bool = False
) -> dict[str, float]:
    """The critic's K per-task gradients: vmap pass, loop of K backward passes, plain backward;
    with ``compiled``, the two ``train.compile=inductor`` paths too (mtrl.gradients)."""
    num_tasks = TASKS[benchmark]
    agent = make_agent(num_tasks, "none", device)
    batch = random_batch(num_tasks, 128, device, 0)
    target = agent.critic_target_values(batch)
    inputs = CriticInputs(batch.obs, batch.action, target, batch.drawn)
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
    if compiled:
        fast = ComponentGradients(critic.loss, compiled=True)
        variants["compiled one pass"] = lambda: fast.per_task(critic.params, inputs)
        variants["compiled plain"] = lambda: fast.mean(critic.params, inputs)
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
    parser.add_argument(
        "--methods", nargs="*", default=surgery.available(), help="NAME or NAME:KEY=VALUE,..."
    )
    parser.add_argument(
        "--compile",
        nargs="+",
        default=["none"],
        choices=["none", "inductor", "cudagraph"],
        dest="modes",
    )
    parser.add_argument(
        "--bf16", action="store_true", help="each method again under bfloat16 autocast (+bf16)"
    )
    parser.add_argument("--burst", type=int, default=None, help="updates per timing (1; cuda 20)")
    parser.add_argument(
        "--models", nargs="*", default=models.available(), help="models table ('mlp' added)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 5, 3)")
    parser.add_argument("--quick", action="store_true", help="2 rounds")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if "cudagraph" in args.modes and device.type != "cuda":
        parser.error("--compile cudagraph needs --device cuda")
    if "cudagraph" in args.modes and args.bf16:
        parser.error("--bf16 runs eager or inductor updates only (autocast is not captured)")
    burst = args.burst or (20 if device.type == "cuda" else 1)
    label = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {device} ({label}), torch {torch.__version__}, threads {args.threads}")

    summary: dict[str, object] = {"device": str(device)}
    for benchmark in args.benchmarks:
        rounds = args.rounds or (2 if args.quick else (5 if benchmark == "mt10" else 3))
        if args.methods:
            bench_methods(
                benchmark, args.methods, args.modes, rounds, burst, device, summary, args.bf16
            )
        if args.models:
            names = ["mlp", *(m for m in args.models if m != "mlp")]
            ms = bench_models(benchmark, names, rounds, burst, device)
            report_models(benchmark, ms, summary)
    print(json.dumps(summary))


def bench_methods(
    benchmark: str,
    methods: list[str],
    modes: list[str],
    rounds: int,
    burst: int,
    device: torch.device,
    summary: dict,
    bf16: bool = False,
) -> None:
    """Table 1 (surgery methods, default MLP) and table 2 (per-task critic gradients)."""
    num_tasks = TASKS[benchmark]
    agents = method_agents(num_tasks, methods, device, modes, bf16)
    ms = bench_updates(agents, num_tasks, rounds, burst, device)
    plain = next(iter(ms.values()))  # the first mode's plain update
    print(
        f"\n{benchmark.upper()}: MT-SAC update, 3 x 400, batch 128/task, ms per update in "
        f"bursts of {burst}, median of {rounds}"
    )
    print(f"  {'method':<24}{'ms':>10}{'x plain':>10}")
    for method, value in ms.items():
        print(f"  {method:<24}{value:10.2f}{value / plain:10.2f}")
    summary[f"{benchmark}_plain_ms"] = round(plain, 3)
    summary[f"{benchmark}_ms"] = {m: round(v, 3) for m, v in ms.items()}
    summary[f"{benchmark}_ratio"] = {m: round(v / plain, 3) for m, v in ms.items()}

    grads = bench_per_task_grads(benchmark, rounds, device, "inductor" in modes)
    print(f"  per-task critic gradients ({num_tasks} tasks):")
    for name, value in grads.items():
        print(f"    {name:<20}{value:10.1f} ms{value / grads['plain backward']:8.2f}x plain")
    summary[f"{benchmark}_vmap_over_plain_backward"] = round(
        grads["vmap one pass"] / grads["plain backward"], 3
    )
    summary[f"{benchmark}_loop_over_vmap"] = round(
        grads["loop of K backward"] / grads["vmap one pass"], 3
    )
    summary[f"{benchmark}_grads_ms"] = {name: round(value, 3) for name, value in grads.items()}
    adam = bench_adam(benchmark, rounds, device)
    print(f"  Adam step of the critic ({sum(adam.pop('numel'), 0):.0f} parameters):")
    for name, value in adam.items():
        print(f"    {name:<20}{value:10.3f} ms{value / adam['single-tensor']:8.2f}x single-tensor")
    summary[f"{benchmark}_adam_ms"] = {name: round(value, 4) for name, value in adam.items()}


def bench_adam(benchmark: str, rounds: int, device: torch.device) -> dict:
    """One Adam step of the critic's parameters on fixed gradients: the single-tensor path (the
    CPU default), ``foreach`` and ``fused``, in bursts of 20 steps. Then ``fused`` on a long
    run's state, where half the moments belong to dead units (gradient exactly zero) and decay
    through the denormal range, with and without flushing denormals (what the compiled update
    does on a CPU, ``mtrl.agent.flushing_denormals``); that state is restored before each burst."""
    critic = make_agent(TASKS[benchmark], "none", device).critic
    runs = {}
    for name, options, dead, flush in (
        ("single-tensor", {"foreach": False}, False, False),
        ("foreach", {"foreach": True}, False, False),
        ("fused", {"fused": True}, False, False),
        ("fused, denormals", {"fused": True}, True, False),
        ("fused, flushed", {"fused": True}, True, True),
    ):
        gen = torch.Generator(device).manual_seed(0)  # every arm: the same gradients and units
        params = [p.detach().clone().requires_grad_() for p in critic.parameters()]
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, device=device)
        optimizer = torch.optim.Adam(params, lr=1e-4, **options)
        saved = None
        if dead:
            optimizer.step()  # creates the moments
            for p in params:
                units = torch.rand(p.shape, generator=gen, device=device) < 0.5
                p.grad[units] = 0.0
                optimizer.state[p]["exp_avg"][units] = 1e-39  # float32's smallest normal: 1.2e-38
            saved = copy.deepcopy(optimizer.state_dict())
        runs[name] = (optimizer, saved, flush)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, (optimizer, saved, flush) in runs.items():
            if saved is not None:
                optimizer.load_state_dict(copy.deepcopy(saved))

            def burst(optimizer=optimizer, flush=flush) -> None:
                with flushing_denormals(flush):
                    for _ in range(20):
                        optimizer.step()

            times[name].append(timed(burst, device) / 20)
    out: dict = {name: statistics.median(t) for name, t in times.items()}
    out["numel"] = [p.numel() for p in critic.parameters()]
    return out


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
