"""Command-line entry points. User errors end as one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import OmegaConf

from mtrl import protocols
from mtrl.benchmarks import benchmark_choices, canonical_benchmark
from mtrl.clitools import USAGE_ERROR, OneLineParser
from mtrl.config import (
    Config,
    ConfigError,
    available_presets,
    describe_options,
    load_config,
    parse_overrides,
    to_yaml,
)
from mtrl.validation import validate_run

if TYPE_CHECKING:
    import torch

    from mtrl.checkpoint import PreemptionSignals
    from mtrl.train import Trainer

PREEMPTED = 3
"""Exit status after SIGTERM/SIGUSR1: a checkpoint was written; requeue with ``--resume``."""
ENV_WORKER_FAILED = 4
"""Exit status when an env worker process died or hung: resume from the last checkpoint."""
WRITE_FAILED = 5
"""Exit status when writing a checkpoint or the logs failed (a full disk, a quota, an I/O
error): no partial file is left; resume from the last checkpoint once it can be written."""


def surgery_choices() -> list[str]:
    from mtrl import surgery

    return ["none", *surgery.available()]


def balancer_choices() -> list[str]:
    from mtrl import balancers

    return ["none", *balancers.available()]


def _options_epilog() -> str:
    rows = [f"  {key} (default {default}): {text}" for key, default, text in describe_options()]
    wrapped = [textwrap.fill(r, 100, subsequent_indent="      ") for r in rows]
    return "\n".join(
        [
            "config values (override any with KEY=VALUE, e.g. agent.hidden_dims=[256,256]):",
            *wrapped,
            "",
            f"presets (--config): {', '.join(available_presets())}",
            "surgery methods (options with defaults; set one as surgery.options.NAME=VALUE):",
            *_surgery_lines(),
            "loss balancers (options with defaults; set one as balancer.options.NAME=VALUE):",
            *_balancer_lines(),
            "models (agent.model; options with defaults, set one as agent.model_options.NAME=V):",
            *_model_lines(),
            "",
            textwrap.fill(
                f"exit status: 0 done; {USAGE_ERROR} bad command line, config or checkpoint (one "
                f"line on stderr, nothing written); {PREEMPTED} stopped by SIGTERM or SIGUSR1 "
                f"after writing a checkpoint (requeue with --resume DIR); {ENV_WORKER_FAILED} an "
                "env worker process died or hung (resume from the last checkpoint); "
                f"{WRITE_FAILED} writing a checkpoint or the logs failed, e.g. a full disk (one "
                "line on stderr; resume from the last checkpoint once there is space); anything "
                "else: a crash",
                100,
            ),
        ]
    )


def _surgery_lines() -> list[str]:
    from mtrl import surgery

    lines = ["  none (the gradient of the mean loss, no per-task gradients)"]
    for name in surgery.available():
        options = ", ".join(
            f"{k}={v!r}" for k, v in surgery.options_of(name).items() if k != "seed"
        )
        lines.append(f"  {name} ({options})" if options else f"  {name}")
    lines.append("  torchjd:<AggregatorName> (any TorchJD aggregator, when torchjd is installed)")
    lines.append("  randomised methods draw from their own generator, seeded from train.seed")
    return lines


def _balancer_lines() -> list[str]:
    from mtrl import balancers

    lines = ["  none (equal weights: the mean of the per-task losses)"]
    for name in balancers.available():
        options = ", ".join(f"{k}={v!r}" for k, v in balancers.options_of(name).items())
        lines.append(f"  {name} ({options})")
    return lines


def train_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="mtrl-train",
        description="Train multi-task SAC on Meta-World. Flags override --config; KEY=VALUE "
        "overrides win over both.",
        epilog=_options_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        metavar="PRESET_OR_FILE",
        help="preset from configs/ or a YAML file (default: the benchmark's preset if there is "
        "one, mt10/mt50, else the built-in defaults)",
    )
    parser.add_argument("--benchmark", help=f"env.benchmark: {benchmark_choices()}")
    parser.add_argument("--surgery", help=f"surgery.name: {', '.join(surgery_choices())}")
    parser.add_argument(
        "--protocol",
        help=f"train.protocol: a paper's protocol, {', '.join(protocols.names())} (the values each "
        "sets: the documentation's page Protocols and published numbers, docs/protocols.md)",
    )
    parser.add_argument("--balancer", help=f"balancer.name: {', '.join(balancer_choices())}")
    parser.add_argument("--seed", type=int, help="train.seed")
    parser.add_argument(
        "--total-steps", type=int, help="train.total_steps: env steps summed over tasks"
    )
    parser.add_argument("--device", help="train.device: auto, cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, help="train.threads: torch CPU threads")
    parser.add_argument(
        "--out",
        type=Path,
        help="run folder to create (default runs/<benchmark>-[<model>+][<balancer>+]<surgery>-"
        "s<seed>-<time>, the model when not mlp, the balancer when one is set)",
    )
    parser.add_argument(
        "--resume",
        metavar="DIR",
        type=Path,
        help="continue the run in DIR from its latest checkpoint, with its stored config; "
        "overrides may only change train.device, train.threads, train.compile, "
        "train.env_workers and checkpoint.*",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config (preset, protocol, flags and overrides, validated) as "
        "YAML and exit: no run folder, no training",
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    return parser


_FLAG_KEYS = {
    "benchmark": "env.benchmark",
    "surgery": "surgery.name",
    "protocol": "train.protocol",
    "balancer": "balancer.name",
    "seed": "train.seed",
    "total_steps": "train.total_steps",
    "device": "train.device",
    "threads": "train.threads",
}


def _flag_overrides(args: argparse.Namespace) -> list[str]:
    """The dedicated flags as overrides; a text flag is taken literally (JSON-quoted, hence
    a YAML string), so that e.g. ``--benchmark "mt50: reach-v3, push-v3"`` is not a mapping."""
    return [
        f"{key}={json.dumps(value) if isinstance(value, str) else value}"
        for name, key in _FLAG_KEYS.items()
        if (value := getattr(args, name)) is not None
    ]


BENCHMARK_PRESETS = ("mt10", "mt50")
"""Benchmarks whose preset of the same name is the default when no --config is given."""


def _model_lines() -> list[str]:
    from mtrl import models

    lines = []
    for name in models.available():
        options = ", ".join(f"{k}={v!r}" for k, v in models.options_of(name).items())
        lines.append(f"  {name} ({options})" if options else f"  {name}")
    return lines


def resolve_train_config(args: argparse.Namespace) -> Config:
    """Preset, then the dedicated flags, then KEY=VALUE overrides; validated."""
    overrides = [*_flag_overrides(args), *args.overrides]
    preset = args.config
    if preset is None:
        named = OmegaConf.select(parse_overrides(overrides), "env.benchmark")
        if named is not None and canonical_benchmark(str(named)) in BENCHMARK_PRESETS:
            preset = canonical_benchmark(str(named))
    config = load_config(preset, overrides)
    validate_run(config)
    return config


def check_capture(config: Config, device: torch.device) -> None:
    """``train.compile=cudagraph`` on a CUDA device needs a surgery method that can be captured
    (on another device the update runs eagerly: see ``mtrl.train.compile_mode``)."""
    from mtrl.agent import capture_problem

    if config.train.compile == "cudagraph" and device.type == "cuda":
        problem = capture_problem(config.surgery, device, config.balancer)
        if problem is not None:
            raise ConfigError(f"train.compile=cudagraph: {problem}")


def train_main(argv: Sequence[str] | None = None) -> int:
    from mtrl.checkpoint import PreemptionSignals

    argv = list(sys.argv[1:] if argv is None else argv)
    args = train_parser().parse_intermixed_args(argv)
    # From here on SIGTERM/SIGUSR1 are recorded, not deaths: one that comes while the trainer is
    # built (the envs take seconds) stops the run at its start, with a checkpoint.
    signals = PreemptionSignals().install()
    try:
        if args.resume is not None:
            return _resume_main(args, argv, signals)
        return _fresh_main(args, argv, signals)
    finally:
        signals.uninstall()


def _fresh_main(args: argparse.Namespace, argv: list[str], signals: PreemptionSignals) -> int:
    try:
        config = resolve_train_config(args)
        if args.print_config:
            print(to_yaml(config), end="")
            return 0
        from mtrl.device import resolve_device
        from mtrl.rundir import create_run_dir, default_run_dir, write_provenance
        from mtrl.train import Trainer

        device = resolve_device(config.train.device)
        check_capture(config, device)
        run_dir = create_run_dir(args.out or default_run_dir(config))
    except (ConfigError, ValueError) as exc:
        return fail("mtrl-train", exc)

    write_provenance(run_dir, config, device, argv)
    trainer = Trainer(config, run_dir, progress=not args.no_progress, signals=signals)
    return _train(trainer, run_dir)


def _resume_main(args: argparse.Namespace, argv: list[str], signals: PreemptionSignals) -> int:
    """``--resume DIR``: every check first; the run folder is touched only once all pass."""
    from mtrl.checkpoint import CheckpointError, prepare_resume

    try:
        if args.config is not None or args.out is not None:
            given = "--config" if args.config is not None else "--out"
            raise ConfigError(
                f"--resume continues a run with its stored config; {given} cannot be given"
            )
        config, checkpoint = prepare_resume(args.resume, [*_flag_overrides(args), *args.overrides])
        if args.print_config:
            print(to_yaml(config), end="")
            return 0
        from mtrl.device import resolve_device
        from mtrl.rundir import record_resume
        from mtrl.train import Trainer

        device = resolve_device(config.train.device)
        check_capture(config, device)
        trainer = Trainer(
            config, args.resume, progress=not args.no_progress, resume=checkpoint, signals=signals
        )
    except (ConfigError, CheckpointError, ValueError) as exc:
        return fail("mtrl-train", exc)
    record_resume(args.resume, checkpoint.step, device, argv)
    return _train(trainer, args.resume)


def _train(trainer: Trainer, run_dir: Path) -> int:
    from mtrl.checkpoint import Preempted, WriteFailed, latest_checkpoint
    from mtrl.collector import EnvWorkerError

    try:
        result = trainer.run()
    except Preempted as stop:
        print(f"\nmtrl-train: {stop}", file=sys.stderr)
        return PREEMPTED
    except EnvWorkerError as exc:
        latest = latest_checkpoint(run_dir)
        then = (
            f"'mtrl-train --resume {run_dir}' continues from {latest.name}"
            if latest is not None
            else "no checkpoint was written yet: start the run again"
        )
        print(f"\nmtrl-train: error: {exc} at step {trainer.step}; {then}", file=sys.stderr)
        return ENV_WORKER_FAILED
    except WriteFailed as exc:
        latest = latest_checkpoint(run_dir)  # written atomically: a listed one is complete
        then = (
            f"the last intact checkpoint is {latest}; once there is space, continue with: "
            f"mtrl-train --resume {run_dir}"
            if latest is not None
            else "no checkpoint was written yet: start the run again once there is space"
        )
        print(f"\nmtrl-train: error: {exc} at step {trainer.step}; {then}", file=sys.stderr)
        return WRITE_FAILED
    except KeyboardInterrupt:
        print(f"\nmtrl-train: interrupted at step {trainer.step}; 'mtrl-train --resume {run_dir}'"
              " continues from its last checkpoint", file=sys.stderr)  # fmt: skip
        return 130
    print(f"\nrun folder: {run_dir}")
    print(format_success_table(result.success, result.mean_return, result.episodes))
    return 0


def format_success_table(
    success: dict[str, float], returns: dict[str, float], episodes: int
) -> str:
    width = max(len("mean"), *(len(t) for t in success))
    lines = [f"{'task':<{width}}  success  return  episodes"]
    for task, rate in success.items():
        lines.append(f"{task:<{width}}  {rate:7.2f}  {returns[task]:6.0f}  {episodes:8d}")
    mean = sum(success.values()) / len(success)
    mean_return = sum(returns.values()) / len(returns)
    lines.append(f"{'mean':<{width}}  {mean:7.2f}  {mean_return:6.0f}  {episodes:8d}")
    return "\n".join(lines)


def fail(prog: str, exc: Exception) -> int:
    print(f"{prog}: error: {exc}", file=sys.stderr)
    return USAGE_ERROR


if __name__ == "__main__":
    raise SystemExit(train_main())
