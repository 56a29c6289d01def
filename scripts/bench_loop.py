"""Where a training iteration's time goes on MT10: env step, act, update and the whole loop,
with the serial collector and with the overlapped one, side by side.

Two trainers are built from the same config, one with ``train.collector=serial`` and one with
``train.collector=overlap``, run past a short warm-up, then timed in alternating blocks of
iterations, so that drift on a shared machine hits both alike. Inside the serial trainer's loop
the parts are timed: the K envs' vector step, the policy's forward pass (act) and the
update(s) (replay sample and MT-SAC update). Both loops are then compared with those parts:

- loop / (env + update): about 1 for the serial loop (plus act and bookkeeping); the overlapped
  loop goes below 1 by the env time it hides behind the update.
- loop / max(env, update): the overlap's goal is a value close to 1, with one core for the
  learner and the envs on the others.

What a machine with about one effective core (the 2-core development VM) can and cannot show:
the env workers and the learner then share that core, so the overlapped loop cannot beat the
serial one; at best it costs the same, plus the pipe traffic (a few 10 us per step). It shows
that the overlap adds no cost of its own. Whether it hides the env step behind the update needs
a node with at least two free cores (``train.env_workers`` + 1). With the default 3 x 400
networks the update dominates the env step (~200 ms against ~5 ms on one CPU core), so there is
little to hide; small networks (``--hidden 64 64 --batch-per-task 32``) or a GPU make the two
comparable.

    python scripts/bench_loop.py                                   # mt10 preset networks
    python scripts/bench_loop.py --hidden 64 64 --batch-per-task 32
    python scripts/bench_loop.py --quick
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
from mtrl.config import load_config
from mtrl.train import Trainer


class Timers:
    """Seconds spent per name, and the number of calls, while ``on``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.on = False

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                if self.on:
                    self.seconds[name] += time.perf_counter() - start
                    self.calls[name] += 1

        return timed

    def ms_per_iteration(self, name: str, iterations: int) -> float:
        return self.seconds[name] / iterations * 1000


def instrument(trainer: Trainer, timers: Timers) -> None:
    """Time the parts of the trainer's iterations. The serial collector steps its envs in
    ``step_async``; the overlapped one waits for its workers in ``step_wait``."""
    trainer.envs.step_async = timers.wrap("env", trainer.envs.step_async)  # type: ignore[method-assign]
    trainer.envs.step_wait = timers.wrap("wait", trainer.envs.step_wait)  # type: ignore[method-assign]
    trainer.agent.act = timers.wrap("act", trainer.agent.act)  # type: ignore[method-assign]
    trainer.learn = timers.wrap("update", trainer.learn)  # type: ignore[method-assign]
    trainer.train_step = timers.wrap("loop", trainer.train_step)  # type: ignore[method-assign]


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
    parser.add_argument("--quick", action="store_true", help="3 rounds of 10 iterations")
    args = parser.parse_args()
    rounds, block = (3, 10) if args.quick else (args.rounds, args.block)

    overrides = [
        "train.device=cpu",
        f"train.threads={args.threads}",
        "train.buffer_size=100000",  # the replay's size does not change a sample's cost
        "train.warmup_steps=100",  # 10 vector steps of random actions fill every task's replay
    ]
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

    n = rounds * block
    config = trainers["serial"].config
    serial, overlap = timers["serial"], timers["overlap"]
    env, act, update = (serial.ms_per_iteration(k, n) for k in ("env", "act", "update"))
    workers = args.workers or default_env_workers(trainers["serial"].num_tasks)
    print(
        f"{config.env.benchmark}: networks {config.agent.hidden_dims}, batch "
        f"{config.agent.batch_per_task * trainers['serial'].num_tasks}, {args.threads} torch "
        f"thread(s), {workers} env worker(s); mean of {n} iterations per collector, "
        f"{rounds} alternating blocks"
    )
    print(f"parts (serial loop): env step {env:.2f} ms, act {act:.2f} ms, update {update:.2f} ms")
    header = f"{'collector':<9} {'loop ms':>8} {'update ms':>9} {'wait ms':>8} {'loop/(env+update)':>18} {'loop/max(env,update)':>21}"  # noqa: E501
    print(header)
    summary: dict[str, float] = {"env_ms": env, "act_ms": act, "update_ms": update}
    for name, timer in timers.items():
        loop = timer.ms_per_iteration("loop", n)
        waited = timer.ms_per_iteration("wait", n) if name == "overlap" else float("nan")
        own_update = timer.ms_per_iteration("update", n)
        ratios = (loop / (env + update), loop / max(env, update))
        print(
            f"{name:<9} {loop:8.2f} {own_update:9.2f} {waited:8.2f} {ratios[0]:18.3f} "
            f"{ratios[1]:21.3f}"
        )
        summary.update(
            {
                f"{name}_loop_ms": loop,
                f"{name}_update_ms": own_update,
                f"{name}_loop_over_sum": ratios[0],
                f"{name}_loop_over_max": ratios[1],
            }
        )
    summary["overlap_wait_ms"] = overlap.ms_per_iteration("wait", n)
    summary["overlap_over_serial"] = summary["overlap_loop_ms"] / summary["serial_loop_ms"]
    print(f"overlap loop / serial loop: {summary['overlap_over_serial']:.3f}")
    print(json.dumps({k: round(v, 3) for k, v in summary.items()}))


if __name__ == "__main__":
    main()
