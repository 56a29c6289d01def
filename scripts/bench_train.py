"""Transitions per second of the real training loop on one CPU thread, before and after, side by
side, with the update's time against its matrix-multiply floor.

Each measurement is a fresh process that builds the preset's ``Trainer`` and calls its ``run()``
for the preset's warm-up, ``--settle`` more transitions (the first updates, where
``torch.compile`` compiles; reported apart as ``first update s``) and ``--steps`` measured
transitions: env stepping, acting, updates, diagnostics, evaluations and checkpoints at the
preset's cadence, the final evaluation and checkpoint left out. The arms run in alternating
order, ``--rounds`` times, so that drift on a shared machine hits all alike; the tables give
medians.

Arms: ``--before DIR`` runs a checkout of an earlier version (its own ``mtrl`` and defaults,
e.g. ``git worktree add /tmp/mtrl-0.3.0 <commit>``) beside this checkout with its defaults;
without it, this checkout with ``train.compile=none`` (the eager path, the arithmetic of 0.3)
beside ``train.compile=inductor`` (what ``auto`` picks for the presets' full runs on a CPU).

The floor: the matrix products of one plain update of the preset (recorded with a dispatch mode
on an eager agent: shapes and operators), each timed alone in a loop; a surgery update computes
the same products (its per-task weight gradients as batched products of the same FLOPs), so the
same floor serves every variant of a preset.

    python scripts/bench_train.py                                 # compile none vs inductor
    python scripts/bench_train.py --before /tmp/mtrl-0.3.0 --rounds 3
    python scripts/bench_train.py --quick       # pcgrad-fig4 with PCGrad, tiny: the script runs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
CASES = {
    "pcgrad-fig4": ["none", "pcgrad"],
    "mt10-cpu": ["none", "pcgrad", "cagrad"],
}


# ----------------------------------------------------------------------------- worker side
def matmul_floor_ms(trainer, repeats: int) -> float:
    """Milliseconds of the matrix products of one plain update of ``trainer``'s agent, each
    product timed alone (median of ``repeats``) and summed."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from mtrl.agent import MTSAC
    from mtrl.config import SurgeryConfig

    products = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default}
    recorded: list[tuple] = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in products:
                recorded.append((func, tuple(a.shape for a in args if torch.is_tensor(a))))
            return func(*args, **(kwargs or {}))

    agent = trainer.agent
    obs_dim = trainer.envs.single_observation_space.shape[0]
    plain = MTSAC(
        obs_dim,
        agent.action_dim,
        agent.num_tasks,
        agent.config,
        "cpu",
        0,
        SurgeryConfig(diagnostics_every=0),
    )
    batch = trainer.sample()
    with Record():
        plain.update(batch)
    total = 0.0
    for func, shapes in recorded:
        tensors = [torch.randn(shape) for shape in shapes]
        func(*tensors)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            func(*tensors)
            times.append(time.perf_counter() - start)
        total += statistics.median(times)
    return total * 1000


def worker(job: dict) -> dict:
    """One measurement (runs in its own process, ``mtrl`` from ``PYTHONPATH``)."""
    import torch

    import mtrl
    from mtrl.config import load_config
    from mtrl.train import Trainer

    preset = load_config(job["preset"], job["overrides"])  # the warm-up of --quick's override
    start = preset.train.warmup_steps + job["settle"]
    total = start + job["steps"]
    overrides = [f"surgery.name={job['surgery']}", f"train.total_steps={total}", "train.threads=1"]
    config = load_config(job["preset"], overrides + job["overrides"])
    torch.set_num_threads(1)
    stamps: dict[str, float] = {}
    update_seconds = [0.0, 0]
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, Path(tmp) / "run", progress=False)
        train_step, update = trainer.train_step, trainer.agent.update

        def timed_update(*args):
            begin = time.perf_counter()
            try:
                return update(*args)
            finally:
                if "start" in stamps:
                    update_seconds[0] += time.perf_counter() - begin
                    update_seconds[1] += 1

        def stamped_step() -> None:
            updates = trainer.agent.updates
            begin = time.perf_counter()
            train_step()
            if updates == 0 and trainer.agent.updates > 0:
                stamps["first_update"] = time.perf_counter() - begin
            if trainer.step == start:
                stamps["start"] = time.perf_counter()
            if trainer.step == total:
                stamps["end"] = time.perf_counter()

        trainer.train_step = stamped_step
        trainer.agent.update = timed_update
        trainer.run()
        floor = matmul_floor_ms(trainer, job["repeats"])
    return {
        "version": mtrl.__version__,
        "transitions_per_s": job["steps"] / (stamps["end"] - stamps["start"]),
        "first_update_s": stamps["first_update"],
        "update_ms": update_seconds[0] / max(update_seconds[1], 1) * 1000,
        "floor_ms": floor,
    }


# ----------------------------------------------------------------------------- driver side
def run_job(source: Path, job: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": str(source), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=source)
    if out.returncode != 0:
        raise SystemExit(f"measurement failed ({job}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--before", type=Path, help="checkout of the earlier version")
    parser.add_argument("--presets", nargs="+", choices=list(CASES), help="default: all")
    parser.add_argument("--steps", type=int, default=None, help="measured transitions")
    parser.add_argument("--settle", type=int, default=None, help="transitions before measuring")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a few hundred transitions, 1 round, 1 x 32 networks; pcgrad-fig4 unless --presets, "
        "PCGrad only",
    )
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    # A measured run is shorter than the preset's, for which train.compile=auto compiles on a
    # CPU (mtrl.train.COMPILE_PAYS_AFTER): this checkout's arm names that choice.
    compiled = ["train.compile=inductor"]
    if args.before:
        arms = {"before": (args.before.resolve(), []), "after": (HERE, compiled)}
    else:
        arms = {"compile=none": (HERE, ["train.compile=none"]), "inductor": (HERE, compiled)}
    rounds = 1 if args.quick else args.rounds
    results: dict[tuple[str, str, str], list[dict]] = {}
    presets = args.presets or (["pcgrad-fig4"] if args.quick else list(CASES))
    for preset in presets:
        steps = args.steps or (200 if args.quick else 4_000 if preset == "pcgrad-fig4" else 20_000)
        settle = args.settle if args.settle is not None else (20 if args.quick else 200)
        # quick: every code path once (an evaluation, the diagnostics), not a measurement
        extra = [f"train.eval_every={steps}", "train.buffer_size=20000"] if args.quick else []
        for _ in range(rounds):
            for surgery in ["pcgrad"] if args.quick else CASES[preset]:
                for arm, (source, overrides) in arms.items():
                    job = {
                        "preset": preset,
                        "surgery": surgery,
                        "steps": steps,
                        "settle": settle,
                        "overrides": overrides + extra,
                        "repeats": 3 if args.quick else 25,
                    }
                    if args.quick:
                        job["overrides"] += ["train.warmup_steps=100", "agent.hidden_dims=[32]"]
                    result = run_job(source, job)
                    results.setdefault((preset, surgery, arm), []).append(result)
    report(results, list(arms))


def report(results: dict[tuple[str, str, str], list[dict]], arms: list[str]) -> None:
    def median(key: tuple[str, str, str], field: str) -> float:
        return statistics.median(r[field] for r in results[key])

    first, last = arms
    print(f"transitions/s on 1 thread (median of {len(next(iter(results.values())))} runs)")
    header = f"{'preset':<13}{'surgery':<9}"
    header += "".join(f"{a + ' /s':>17}" for a in arms) + f"{'ratio':>8}"
    header += f"{'update ms':>11}{'floor ms':>10}{'upd/floor':>10}{'first upd s':>13}"
    print(header)
    summary = {}
    for preset, surgery in dict.fromkeys((p, s) for p, s, _ in results):
        rates = [median((preset, surgery, a), "transitions_per_s") for a in arms]
        after = (preset, surgery, last)
        update, floor = median(after, "update_ms"), median(after, "floor_ms")
        compile_s = median(after, "first_update_s")
        row = f"{preset:<13}{surgery:<9}" + "".join(f"{r:17.1f}" for r in rates)
        row += f"{rates[1] / rates[0]:8.2f}{update:11.2f}{floor:10.2f}{update / floor:10.2f}"
        print(row + f"{compile_s:13.1f}")
        summary[f"{preset}/{surgery}"] = {
            first: round(rates[0], 1),
            last: round(rates[1], 1),
            "ratio": round(rates[1] / rates[0], 3),
            "update_ms": round(update, 3),
            "before_update_ms": round(median((preset, surgery, first), "update_ms"), 3),
            "floor_ms": round(floor, 3),
            "first_update_s": round(compile_s, 2),
        }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
