"""Worst-case time from a preemption signal to the trainer's exit, per preset, from its parts.

After SIGTERM/SIGUSR1 the trainer finishes the unit of work it is in (one update, one vector
step of an evaluation, one vector step of the training envs, or the periodic checkpoint being
written), writes a checkpoint and closes its envs and logs. So the worst case is

    max(one update, one evaluation vector step, one training vector step)
    + one checkpoint write with a full replay buffer + closing the run

(a signal during a periodic checkpoint's write costs that write plus the close: less). This
script builds the real trainer of each preset on the CPU, fills its replay to capacity (as
scripts/checkpoint_size.py does), and times each part: the maximum over a few repetitions, the
first included (it allocates). Nothing here is a full training run; each preset takes about a
minute on a 2-core machine.

    python scripts/preemption_latency.py --presets mt10-pcgrad mt50-mwplus
    python scripts/preemption_latency.py --quick --presets pcgrad-fig4   # seconds: it runs
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checkpoint_size import QUICK, fill_replay

from mtrl.checkpoint import env_state
from mtrl.config import load_config
from mtrl.train import Trainer


def slowest(action: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return max(times)


def measure(
    preset: str, folder: Path, repeats: int, overrides: Sequence[str] = ()
) -> dict[str, float]:
    config = load_config(preset, ["train.device=cpu", *overrides])
    trainer = Trainer(config, folder / preset, progress=False)
    fill_replay(trainer)
    agent = trainer.agent
    parts = {"update": slowest(lambda: agent.update(trainer.sample()), repeats)}

    trainer.eval_envs.call("toggle_terminate_on_success", True)  # as in an evaluation
    obs, _ = trainer.eval_envs.reset()

    def eval_step() -> None:
        nonlocal obs
        obs = trainer.eval_envs.step(agent.act(obs, deterministic=True))[0]

    parts["eval_step"] = slowest(eval_step, 5 * repeats)
    parts["eval_start"] = slowest(lambda: env_state(trainer.eval_envs), 2)
    trainer.step = config.train.warmup_steps  # acts with the policy, as after the warm-up
    parts["train_step"] = slowest(trainer.collect, 5 * repeats)
    trainer.step = config.checkpoint.every
    parts["write"] = slowest(lambda: trainer.checkpointer.save(trainer), 1)
    start = time.perf_counter()
    trainer.close()
    parts["close"] = time.perf_counter() - start
    unit = max(parts["update"], parts["eval_step"], parts["train_step"])
    parts["worst"] = unit + parts["write"] + parts["close"]
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["mt10-pcgrad", "mt50-mwplus"])
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help=f"1 repeat, with {' '.join(QUICK)}")
    args = parser.parse_args()
    if args.quick:
        args.repeats = 1
    names = ["update", "eval_step", "eval_start", "train_step", "write", "close", "worst"]
    print("| preset | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    with tempfile.TemporaryDirectory() as folder:
        for preset in args.presets:
            parts = measure(preset, Path(folder), args.repeats, QUICK if args.quick else [])
            cells = " | ".join(f"{parts[n]:.2f} s" for n in names)
            print(f"| `{preset}` | {cells} |", flush=True)


if __name__ == "__main__":
    main()
