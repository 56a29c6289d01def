"""Where a training iteration's time goes on MT10: env step, act, update and the whole loop,
with the serial collector and with the overlapped one, side by side.

Two trainers are built from the same config, one with ``train.collector=serial`` and one with
``train.collector=overlap``, run past a short warm-up, then timed in alternating blocks of
iterations, so that drift on a shared machine hits both alike. In each loop the parts are
timed: ``step_async`` (the serial collector steps the K envs there; the overlapped one hands the
actions to its workers), ``step_wait`` (the overlapped one waits for its workers), ``act`` (the
policy's forward pass) and ``update`` (replay sample and MT-SAC update). With env = the serial
loop's env step and update = its update, the script prints

- loop / (env + update): about 1 for the serial loop (plus act and bookkeeping); below 1 for the
  overlapped loop by the share of the env step it hides behind the update;
- loop / max(env, update): the overlap's goal is a value close to 1, which takes one core for
  the learner plus one per env worker.

What a machine with about one effective core (the 2-core development VM, shared with other
jobs) can and cannot show: the env workers and the learner then share that core, so the
overlapped loop cannot beat the serial one; the worker's env step runs inside the learner's
``step_async`` or stretches its ``update`` instead of running beside it. It can show that the
overlap adds little of its own (two process switches and a few kB through a pipe per
iteration) and that the parts add up as expected. Whether the env step hides behind the update
needs a node with ``train.env_workers`` + 1 free cores. With the default 3 x 400 networks the
update dominates (~200 ms against ~5 ms for the MT10 env step on one CPU core), so there is
little to hide on a CPU; small networks (``--hidden 64 64 --batch-per-task 32``) or a GPU update
make the two comparable.

    python scripts/bench_loop.py                                   # mt10 preset networks
    python scripts/bench_loop.py --hidden 64 64 --batch-per-task 32
    python scripts/bench_loop.py --quick --workers 4
    python scripts/bench_loop.py --quick --config pcgrad-fig4      # seconds: the script runs
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mtrl.collector import default_env_workers
from mtrl.config import Config, load_config
from mtrl.train import Trainer


class Timers:
    """Seconds spent per name while ``on``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.on = False

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                if self.on:
                    self.seconds[name] += time.perf_counter() - start

        return timed

    def ms_per_iteration(self, name: str, iterations: int) -> float:
        return self.seconds[name] / iterations * 1000


def instrument(trainer: Trainer, timers: Timers) -> None:
    """Time the parts of the trainer's iterations. The serial collector steps its envs in
    ``step_async``; the overlapped one waits for its workers in ``step_wait``."""
    for owner, method, name in (
        (trainer.envs, "step_async", "step_async"),
        (trainer.envs, "step_wait", "step_wait"),
        (trainer.agent, "act", "act"),
        (trainer, "learn", "update"),
        (trainer, "train_step", "loop"),
    ):
        setattr(owner, method, timers.wrap(name, getattr(owner, method)))


def measure(trainers: dict[str, Trainer], rounds: int, block: int) -> dict[str, Timers]:
    timers = {name: Timers() for name in trainers}
    for name, trainer in trainers.items():
        instrument(trainer, timers[name])
    for _ in range(rounds):
        for name, trainer in trainers.items():
            timers[name].on = True
            for _ in range(block):
                trainer.train_step()
            timers[name].on = False
    return timers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="mt10", help="preset or YAML file (default mt10)")
    parser.add_argument("--hidden", type=int, nargs="+", help="agent.hidden_dims")
    parser.add_argument("--batch-per-task", type=int, help="agent.batch_per_task")
    parser.add_argument("--workers", type=int, default=0, help="train.env_workers (0: default)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the learner")
    parser.add_argument("--rounds", type=int, default=10, help="alternating blocks per trainer")
    parser.add_argument("--block", type=int, default=20, help="iterations per block")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="3 rounds of 10 iterations, eager updates (train.compile=none), 2 x 32 networks and "
        "16 per task unless given",
    )
    args = parser.parse_args()
    rounds, block = (3, 10) if args.quick else (args.rounds, args.block)
    if args.quick:
        args.hidden = args.hidden or [32, 32]
        args.batch_per_task = args.batch_per_task or 16

    overrides = [
        "train.device=cpu",
        f"train.threads={args.threads}",
        "train.buffer_size=100000",  # the replay's size does not change a sample's cost
        "train.warmup_steps=100",  # 10 vector steps of random actions fill every task's replay
    ]
    if args.quick:
        overrides.append("train.compile=none")
    if args.hidden:
        overrides.append(f"agent.hidden_dims=[{','.join(map(str, args.hidden))}]")
    if args.batch_per_task:
        overrides.append(f"agent.batch_per_task={args.batch_per_task}")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {}
        for collector in ("serial", "overlap"):
            config = load_config(
                args.config,
                [*overrides, f"train.collector={collector}", f"train.env_workers={args.workers}"],
            )
            trainer = trainers[collector] = Trainer(config, Path(tmp) / collector, progress=False)
            while trainer.step < 2 * config.train.warmup_steps:  # past the warm-up
                trainer.train_step()
        try:
            timers = measure(trainers, rounds, block)
        finally:
            for trainer in trainers.values():
                trainer.close()

    workers = args.workers or default_env_workers(trainers["serial"].num_tasks)
    report(trainers["serial"].config, workers, timers, rounds, block)


def report(
    config: Config, workers: int, timers: dict[str, Timers], rounds: int, block: int
) -> None:
    """The table and a JSON line. ``env`` and ``update`` of the ratios are the serial loop's
    (the stand-alone costs of the two parts)."""
    n = rounds * block
    columns = ("loop", "step_async", "step_wait", "act", "update")
    ms = {c: {k: t.ms_per_iteration(k, n) for k in columns} for c, t in timers.items()}
    env, update = ms["serial"]["step_async"], ms["serial"]["update"]
    print(
        f"{config.env.benchmark}: networks {config.agent.hidden_dims}, batch "
        f"{config.agent.batch_per_task} per task, {config.train.threads} torch thread(s), "
        f"{workers} env worker(s); ms per iteration, mean of {n} per collector in {rounds} "
        "alternating blocks"
    )
    columns = (*columns, "loop/(env+update)", "loop/max(env,update)")
    widths = {c: max(len(c), 8) + 2 for c in columns}
    print(f"{'collector':<9}" + "".join(f"{c:>{widths[c]}}" for c in columns))
    summary: dict[str, float] = {}
    for collector, row in ms.items():
        row["loop/(env+update)"] = row["loop"] / (env + update)
        row["loop/max(env,update)"] = row["loop"] / max(env, update)
        print(f"{collector:<9}" + "".join(f"{row[c]:>{widths[c]}.3f}" for c in columns))
        summary.update({f"{collector} {c}": round(v, 3) for c, v in row.items()})
    summary["overlap/serial"] = round(ms["overlap"]["loop"] / ms["serial"]["loop"], 3)
    print(
        "step_async: the serial collector steps the envs here, the overlapped one hands the "
        "actions to its workers\n(on one core a woken worker may run its step within this "
        "time); step_wait: waiting for the workers"
    )
    print(f"overlap loop / serial loop: {summary['overlap/serial']:.3f}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
