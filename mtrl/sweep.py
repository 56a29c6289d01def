"""mtrl-sweep: benchmarks x surgery methods x seeds (x config variants) as submitit jobs.

One run = one job = one process (one GPU on a cluster). The sweep folder holds one run folder per
combination, ``manifest.json`` (what was planned and submitted, with job ids) and ``submitit/``
(the jobs' pickles and logs). Everything is validated before anything is submitted.

A job (:class:`RunJob`) calls :func:`mtrl.cli.train_main` in the job's process. When a job is
preempted or about to time out, submitit requeues it; the next attempt resumes the run with
``mtrl-train --resume RUN_DIR`` from its last checkpoint, or, when it has none yet, restarts the
run from scratch after moving the unfinished attempt to ``<sweep>/.incomplete/``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from itertools import product
from pathlib import Path
from typing import Any

import yaml

import mtrl
from mtrl.benchmarks import benchmark_choices, parse_benchmark
from mtrl.cli import (
    PREEMPTED,
    USAGE_ERROR,
    OneLineParser,
    resolve_train_config,
    surgery_choices,
    train_parser,
)
from mtrl.config import Config, ConfigError, changed_keys, check_task_multiples, load_config
from mtrl.logger import METRICS_FILE, read_metrics
from mtrl.rundir import CONFIG_FILE, file_slug

PROG = "mtrl-sweep"
MANIFEST = "manifest.json"
JOBS_DIR = "submitit"  # submitit's pickles and the jobs' stdout/stderr logs
INCOMPLETE_DIR = ".incomplete"  # unfinished attempts moved aside before a restart from scratch
# mtrl-train's exit status after it wrote a checkpoint on SIGTERM/SIGUSR1 (preemption support).
# Keys the sweep grid sets; a KEY=VALUE override of one of them would silently flatten the grid.
GRID_KEYS = ("env.benchmark", "surgery.name", "surgery.options", "train.seed")
# SLURM job states in which a run's job is still queued or running (sacct's State column).
ACTIVE_STATES = {
    "PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING",
    "REQUEUE_HOLD", "REQUEUE_FED", "READY",
}  # fmt: skip
CONTAINER_PYTHON = "/opt/venv/bin/python"  # the interpreter of the image built from docker/


class SweepError(ValueError):
    """Problems with the sweep's grid or options: reported before anything is submitted."""

    def __init__(self, *problems: str):
        super().__init__("; ".join(problems))
        self.problems = list(problems)


def _need_submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise SweepError(
            "submitting needs submitit: pip install 'mtrl[cluster]' (--dry-run works without it)"
        ) from None
    return submitit


# --------------------------------------------------------------------------- the grid
@dataclass(frozen=True)
class Method:
    """``cagrad:c=0.5,rescale=1`` -> name ``cagrad``, options as KEY=VALUE overrides."""

    spec: str
    name: str
    options: tuple[tuple[str, str], ...]  # (key, raw value as written)

    @property
    def label(self) -> str:
        parts = [self.name, *(f"{k}{v}" for k, v in self.options)]
        return _slug("-".join(parts))

    @property
    def overrides(self) -> list[str]:
        return [f"surgery.options.{k}={v}" for k, v in self.options]

    @property
    def parsed_options(self) -> dict[str, Any]:
        return {k: yaml.safe_load(v) for k, v in self.options}


def parse_method(spec: str) -> Method:
    name, _, rest = spec.strip().partition(":")
    if not name:
        raise SweepError(f"method '{spec}': no name (expected NAME or NAME:KEY=VALUE,...)")
    options = []
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) or not value:
            raise SweepError(
                f"method '{spec}': option '{item}' is not KEY=VALUE (e.g. cagrad:c=0.5)"
            )
        options.append((key, value))
    if len({k for k, _ in options}) < len(options):
        raise SweepError(f"method '{spec}': an option is given twice")
    return Method(spec.strip(), name, tuple(options))


def parse_seeds(items: Sequence[str]) -> list[int]:
    """``0-9``, ``0,1,2`` or ``3 4 5`` (any mix) -> sorted unique seeds."""
    seeds: set[int] = set()
    for item in items:
        for part in filter(None, item.split(",")):
            match = re.fullmatch(r"(\d+)(?:-(\d+))?", part.strip())
            if not match:
                raise SweepError(f"seed '{part}' is not N or N-M (e.g. 0-9)")
            low, high = int(match[1]), int(match[2] or match[1])
            if high < low:
                raise SweepError(f"seed range '{part}' is empty")
            seeds.update(range(low, high + 1))
    if not seeds:
        raise SweepError("no seeds given")
    return sorted(seeds)


def parse_vary(items: Sequence[str]) -> list[list[tuple[str, str]]]:
    """``--vary agent.actor_lr=[1e-3,3e-4]`` -> one list of KEY=VALUE choices per key."""
    axes = []
    for item in items:
        key, sep, values = item.partition("=")
        try:
            choices = yaml.safe_load(values) if sep else None
        except yaml.YAMLError:
            choices = None
        if not key or not isinstance(choices, list) or not choices:
            raise SweepError(
                f"--vary '{item}' is not KEY=[V1,V2,...] (a YAML list, e.g. "
                "agent.actor_lr=[1e-3,3e-4])"
            )
        axes.append([(key, json.dumps(v)) for v in choices])
    return axes


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def _override_key(item: str) -> str:
    return item.partition("=")[0].strip()


@dataclass
class PlannedRun:
    name: str
    run_dir: Path
    benchmark: str
    method: str  # the spec as given, e.g. cagrad:c=0.5
    surgery: str
    options: dict[str, Any]
    seed: int
    vary: dict[str, Any]
    argv: list[str]  # mtrl-train's arguments
    config: Config = field(repr=False)
    status: str = "new"  # new | finished | unfinished | active

    @property
    def command(self) -> str:
        return shlex.join(["mtrl-train", *self.argv])

    def manifest_entry(self) -> dict[str, Any]:
        return {
            "dir": str(self.run_dir),
            "benchmark": self.benchmark,
            "method": self.method,
            "surgery": self.surgery,
            "options": self.options,
            "seed": self.seed,
            "vary": self.vary,
            "argv": self.argv,
        }


def build_plan(
    sweep_dir: Path,
    benchmarks: Sequence[str],
    methods: Sequence[str],
    seeds: Sequence[str],
    overrides: Sequence[str] = (),
    vary: Sequence[str] = (),
    config: str | None = None,
) -> list[PlannedRun]:
    """Every combination, its mtrl-train arguments and resolved config; all errors at once."""
    errors: list[str] = []

    def attempt(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except (SweepError, ConfigError, ValueError) as exc:
            errors.append(str(exc))
            return None

    parsed_benchmarks = [
        b for b in (attempt(lambda b=b: parse_benchmark(b)) for b in benchmarks) if b
    ]
    parsed_methods = [m for m in (attempt(lambda m=m: parse_method(m)) for m in methods) if m]
    for method in parsed_methods:
        if method.name not in surgery_choices():
            errors.append(
                f"unknown surgery method '{method.name}' (in '{method.spec}'); "
                f"allowed: {', '.join(surgery_choices())}"
            )
    seed_list = attempt(lambda: parse_seeds(seeds)) or []
    axes = attempt(lambda: parse_vary(vary)) or []
    for key in [*map(_override_key, overrides), *(axis[0][0] for axis in axes)]:
        if any(key == g or key.startswith(g + ".") for g in GRID_KEYS):
            errors.append(
                f"{key} is set by the sweep grid for each run: use --benchmarks, --methods "
                "(NAME:KEY=VALUE for options) or --seeds, not an override"
            )
    labels = [m.label for m in parsed_methods]
    if len(set(labels)) < len(labels):
        errors.append(f"methods repeat: {', '.join(methods)}")
    if not benchmarks or not methods:
        errors.append("give at least one --benchmarks and one --methods")
    if errors:
        raise SweepError(*errors)

    sweep_dir = Path(sweep_dir).resolve()
    plan: list[PlannedRun] = []
    for bench, method, variant, seed in product(
        parsed_benchmarks, parsed_methods, list(product(*axes)), seed_list
    ):
        vary_label = "-".join(_slug(f"{k.rsplit('.', 1)[-1]}{v}") for k, v in variant)
        name = "-".join(
            filter(None, [file_slug(bench.name, limit=60), method.label, vary_label, f"s{seed}"])
        )
        run_dir = sweep_dir / name
        argv = [
            *(["--config", config] if config else []),
            "--benchmark", bench.name,
            "--surgery", method.name,
            "--seed", str(seed),
            "--no-progress",
            "--out", str(run_dir),
            *overrides,
            *(f"{k}={v}" for k, v in variant),
            *method.overrides,
        ]  # fmt: skip
        resolved = attempt(lambda argv=argv, bench=bench: _resolve(argv, bench.num_tasks))
        if resolved is None:
            continue
        plan.append(
            PlannedRun(
                name=name,
                run_dir=run_dir,
                benchmark=bench.name,
                method=method.spec,
                surgery=method.name,
                options=method.parsed_options,
                seed=seed,
                vary={k: json.loads(v) for k, v in variant},
                argv=argv,
                config=resolved,
            )
        )
    if errors:
        raise SweepError(*dict.fromkeys(errors))
    return plan


def _resolve(argv: list[str], num_tasks: int) -> Config:
    """The config mtrl-train will run with; the same checks as mtrl-train, before submitting."""
    try:
        args = train_parser().parse_intermixed_args(argv)
    except SystemExit:
        raise SweepError(f"mtrl-train rejects the arguments: {shlex.join(argv)}") from None
    config = resolve_train_config(args)
    check_task_multiples(config, num_tasks)
    return config


# --------------------------------------------------------------------------- run state
def is_finished(run_dir: Path) -> bool:
    """A run is finished when its metrics.jsonl holds the final evaluation line."""
    if not (Path(run_dir) / METRICS_FILE).is_file():
        return False
    try:
        records = read_metrics(run_dir)
    except (OSError, ValueError):
        return False
    return any(r.get("final") and r.get("eval/success") is not None for r in records)


def _has_content(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def move_aside(run_dir: Path) -> Path:
    """Move an unfinished attempt out of the way (mtrl-train never writes into a used folder)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    target = run_dir.parent / INCOMPLETE_DIR / f"{run_dir.name}-{stamp}"
    target.parent.mkdir(parents=True, exist_ok=True)
    run_dir.rename(target)
    return target


# --------------------------------------------------------------------------- the job
def _preempt_signal() -> signal.Signals:
    """The signal submitit reacts to (checkpoint and requeue): USR2 unless configured."""
    from submitit import JobEnvironment

    return signal.Signals[f"SIG{JobEnvironment.USR_SIG}"]


class RunJob:
    """The submitit job of one run: ``mtrl-train ARGV`` in this process, requeued on preemption.

    Picklable (two plain fields). submitit calls :meth:`checkpoint` when the job is preempted or
    about to time out, and requeues what it returns: the same job, which on its next start finds
    the unfinished run folder and resumes it (``--resume``) or restarts it from scratch.
    """

    def __init__(self, run_dir: str, argv: list[str]):
        self.run_dir = str(run_dir)
        self.argv = list(argv)

    def __call__(self) -> int:
        run_dir = Path(self.run_dir)
        if is_finished(run_dir):
            print(f"{run_dir} is already finished", flush=True)
            return 0
        if _has_content(run_dir):
            print(f"resuming {run_dir}", flush=True)
            status = self._train(["--resume", str(run_dir)])
            if status != USAGE_ERROR:
                return self._finish(status)
            # e.g. preempted before its first checkpoint: nothing to resume from
            aside = move_aside(run_dir)
            print(f"could not resume (see above); restarting {run_dir} from scratch, "
                  f"unfinished attempt moved to {aside}", flush=True)  # fmt: skip
        return self._finish(self._train(self.argv))

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit's hook on preemption/timeout: requeue this same job."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(RunJob(self.run_dir, self.argv))

    def _train(self, argv: list[str]) -> int:
        from mtrl.cli import train_main

        with _forward_to_trainer():
            return train_main(argv)

    def _finish(self, status: int) -> int:
        if status == PREEMPTED:
            # The trainer wrote a checkpoint and stopped: let submitit requeue us (it calls
            # checkpoint() and exits). Outside submitit there is nothing to requeue.
            sig = _preempt_signal()
            handler = signal.getsignal(sig)
            if callable(handler):
                handler(sig, None)
            return status
        if status != 0:
            raise RuntimeError(f"mtrl-train exited with status {status} ({self.run_dir})")
        return status

    def __repr__(self) -> str:
        return f"RunJob({self.run_dir!r})"


@contextmanager
def _forward_to_trainer() -> Iterator[None]:
    """Route submitit's preemption signal to the trainer's SIGTERM handler while training.

    The trainer then checkpoints at a safe point and returns PREEMPTED, and the job requeues
    itself; submitit's own handler would interrupt the training step and lose the progress since
    the last checkpoint. Without a trainer handler, the signal still reaches submitit.
    """
    try:
        sig = _preempt_signal()
    except ImportError:
        yield
        return
    original = signal.getsignal(sig)
    term_before = signal.getsignal(signal.SIGTERM)

    def forward(signum: int, frame: Any) -> None:
        term = signal.getsignal(signal.SIGTERM)
        if callable(term) and term != term_before:
            term(signal.SIGTERM, frame)
        elif callable(original):
            original(signum, frame)

    signal.signal(sig, forward)
    try:
        yield
    finally:
        signal.signal(sig, original)


# --------------------------------------------------------------------------- executors
EXECUTOR_KEYS = {
    "executor": "slurm or local",
    "partition": "SLURM partition",
    "gpus": "GPUs per job (per node)",
    "cpus": "CPUs per job",
    "time": "time limit per job: minutes, H:MM:SS or D-HH:MM:SS",
    "mem": "memory per job, e.g. 32G or 500M",
    "account": "SLURM account",
    "qos": "SLURM quality of service",
    "constraint": "SLURM node constraint, e.g. a100",
    "max_parallel": "jobs running at once (SLURM array limit; local: default 1)",
    "max_timeouts": "requeues after a time-out before a job gives up (default 3)",
    "setup": "shell lines run before the job in its batch script, e.g. module load apptainer",
    "sbatch": "extra sbatch options as a mapping, e.g. {mail-type: END}",
    "container": "run the jobs in an Apptainer/Singularity image: a mapping with image, "
    "runtime (apptainer), binds (list), args (list; --nv is added when gpus > 0), python",
}
CONTAINER_KEYS = {"image", "runtime", "binds", "args", "python"}
LOCAL_KEYS = {"gpus", "time", "max_parallel", "max_timeouts"}  # what the local executor uses


@dataclass
class ExecutorOptions:
    executor: str = "slurm"
    partition: str | None = None
    gpus: int | None = None
    cpus: int | None = None
    time: int | None = None  # minutes
    mem: str | None = None  # Slurm format, e.g. 32G
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    max_parallel: int | None = None
    max_timeouts: int = 3
    setup: list[str] = field(default_factory=list)
    sbatch: dict[str, Any] = field(default_factory=dict)
    container: dict[str, Any] = field(default_factory=dict)

    def python_command(self, sweep_dir: Path) -> str | None:
        """The interpreter command of the jobs: the container's when an image is given."""
        c = self.container
        if not c:
            return None
        binds = [str(sweep_dir), *c.get("binds", [])]
        args = list(c.get("args", []))
        if (self.gpus or 0) > 0 and "--nv" not in args:
            args.insert(0, "--nv")
        words = [c.get("runtime", "apptainer"), "exec", *args]
        for bind in dict.fromkeys(binds):
            words += ["--bind", bind]
        return shlex.join([*words, c["image"], c.get("python", CONTAINER_PYTHON)])

    def describe(self, sweep_dir: Path) -> str:
        given = {
            k: v
            for k, v in asdict(self).items()
            if k not in ("executor", "setup", "container") and v not in (None, [], {})
        }
        if self.time is not None:
            given["time"] = f"{self.time} min"
        used = [k for k in given if self.executor == "slurm" or k in LOCAL_KEYS]
        lines = [f"executor: {self.executor} ({', '.join(f'{k}={given[k]}' for k in used)})"]
        ignored = [k for k in given if k not in used]
        if ignored:
            lines.append(f"ignored by the local executor: {', '.join(ignored)}")
        if self.setup:
            lines.append(f"setup: {'; '.join(self.setup)}")
        python = self.python_command(sweep_dir)
        if python:
            lines.append(f"container: {python}")
        return "\n".join(lines)


def parse_time(value: Any) -> int:
    """Slurm time formats -> whole minutes (rounded up)."""
    text = str(value).strip()
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not match:
        raise SweepError(f"time '{value}' is not minutes, H:MM:SS or D-HH:MM:SS")
    days, first, second, third = (int(g) if g else None for g in match.groups())
    if days is not None:  # D-H, D-H:M, D-H:M:S
        seconds = days * 86400 + first * 3600 + (second or 0) * 60 + (third or 0)
    elif third is not None:  # H:M:S
        seconds = first * 3600 + second * 60 + third
    elif second is not None:  # M:S
        seconds = first * 60 + second
    else:  # M
        seconds = first * 60
    if seconds <= 0:
        raise SweepError(f"time '{value}' must be positive")
    return math.ceil(seconds / 60)


def parse_mem(value: Any) -> str:
    """``32G``, ``32GB``, ``500M``, ``1.5T`` or a plain number of GB -> Slurm's ``32G``."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)B?", str(value).strip(), re.IGNORECASE)
    if not match:
        raise SweepError(f"mem '{value}' is not a size like 32G or 500M")
    number, unit = float(match[1]), (match[2] or "G").upper()
    units = "KMGT"
    while number != int(number) and unit != "K":
        number, unit = number * 1024, units[units.index(unit) - 1]
    if number <= 0:
        raise SweepError(f"mem '{value}' must be positive")
    return f"{math.ceil(number)}{unit}"


def load_executor_options(path: Path | None, flags: dict[str, Any]) -> ExecutorOptions:
    """Options from a YAML file (``--executor-config``), then the flags that were given."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise SweepError(f"cannot read executor config '{path}': {exc}") from None
        if not isinstance(loaded, dict):
            raise SweepError(f"executor config '{path}' must be a YAML mapping")
        unknown = sorted(set(loaded) - set(EXECUTOR_KEYS))
        if unknown:
            raise SweepError(
                f"executor config '{path}': unknown keys {', '.join(unknown)}; allowed: "
                f"{', '.join(EXECUTOR_KEYS)}"
            )
        values.update(loaded)
    container = dict(values.get("container") or {})
    for key in ("image", "runtime", "binds", "args"):
        flag = flags.pop(f"container_{key}", None)
        if flag:
            container[key] = flag
    values.update({k: v for k, v in flags.items() if v is not None})
    values["container"] = container
    return _check_options(values)


def _check_options(values: dict[str, Any]) -> ExecutorOptions:
    opts = ExecutorOptions()
    if values.get("executor") not in (None, "slurm", "local"):
        raise SweepError(f"executor must be slurm or local, got '{values['executor']}'")
    opts.executor = values.get("executor") or "slurm"
    for key in ("partition", "account", "qos", "constraint"):
        if values.get(key) is not None:
            setattr(opts, key, str(values[key]))
    for key in ("gpus", "cpus", "max_parallel", "max_timeouts"):
        if values.get(key) is not None:
            value = values[key]
            minimum = 0 if key in ("gpus", "max_timeouts") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise SweepError(f"{key} must be an integer >= {minimum}, got {value!r}")
            setattr(opts, key, value)
    if values.get("time") is not None:
        opts.time = parse_time(values["time"])
    if values.get("mem") is not None:
        opts.mem = parse_mem(values["mem"])
    setup = values.get("setup") or []
    if isinstance(setup, str):
        setup = [setup]
    if not all(isinstance(line, str) for line in setup):
        raise SweepError("setup must be a list of shell lines")
    opts.setup = list(setup)
    sbatch = values.get("sbatch") or {}
    if not isinstance(sbatch, dict):
        raise SweepError("sbatch must be a mapping of sbatch options, e.g. {mail-type: END}")
    opts.sbatch = dict(sbatch)
    container = values.get("container") or {}
    unknown = sorted(set(container) - CONTAINER_KEYS)
    if unknown:
        raise SweepError(
            f"container: unknown keys {', '.join(unknown)}; allowed: "
            f"{', '.join(sorted(CONTAINER_KEYS))}"
        )
    if container and not container.get("image"):
        raise SweepError("container options need an image (--container-image or container.image)")
    for key in ("binds", "args"):
        if isinstance(container.get(key), str):
            container[key] = shlex.split(container[key]) if key == "args" else [container[key]]
    opts.container = container
    if opts.executor == "slurm" and opts.time is None:
        raise SweepError(
            "SLURM jobs need a time limit: --time (minutes, H:MM:SS or D-HH:MM:SS) or time: in "
            "--executor-config (submitit's default would be 5 minutes)"
        )
    return opts


def make_executor(opts: ExecutorOptions, sweep_dir: Path) -> Any:
    submitit = _need_submitit()
    folder = sweep_dir / JOBS_DIR / "%j"
    python = opts.python_command(sweep_dir)
    if opts.executor == "local":
        executor = submitit.LocalExecutor(
            folder=folder, max_num_timeout=opts.max_timeouts, python=python
        )
        gpus = opts.gpus if opts.gpus is not None else _visible_gpus()
        executor.update_parameters(
            timeout_min=opts.time or 60 * 24 * 365, gpus_per_node=gpus, setup=opts.setup
        )
        return executor
    try:
        executor = submitit.SlurmExecutor(
            folder=folder, max_num_timeout=opts.max_timeouts, python=python
        )
    except RuntimeError as exc:
        raise SweepError(f"{exc} (use --executor local to run on this machine)") from None
    params: dict[str, Any] = {
        "job_name": f"mtrl-{sweep_dir.name}",
        "time": opts.time,
        "partition": opts.partition,
        "gpus_per_node": opts.gpus,
        "cpus_per_task": opts.cpus,
        "mem": opts.mem,
        "account": opts.account,
        "qos": opts.qos,
        "constraint": opts.constraint,
        "setup": opts.setup or None,
        "additional_parameters": opts.sbatch or None,
    }
    if opts.max_parallel:
        params["array_parallelism"] = opts.max_parallel
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return executor


def _visible_gpus() -> int:
    """submitit's local executor hides all GPUs unless told how many a job may see."""
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:  # pragma: no cover
        return 0


# --------------------------------------------------------------------------- manifest
def read_manifest(sweep_dir: Path) -> dict[str, Any]:
    path = sweep_dir / MANIFEST
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SweepError(f"cannot read {path}: {exc}") from None
    return manifest if isinstance(manifest, dict) else {}


def write_manifest(sweep_dir: Path, manifest: dict[str, Any]) -> None:
    """Atomically (a crash never leaves half a manifest)."""
    path = sweep_dir / MANIFEST
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _job_active(submission: dict[str, Any]) -> bool:
    """Whether a recorded job is still queued or running (so a re-run must not submit again)."""
    executor, job_id = submission.get("executor"), str(submission.get("job_id", ""))
    if executor == "local":
        if submission.get("host") != socket.gethostname() or not job_id.isdigit():
            return False
        try:
            os.kill(int(job_id), 0)  # the local job's controller process
        except (OSError, ValueError):
            return False
        return True
    if executor == "slurm" and job_id:
        import submitit

        info = submitit.SlurmJob(submission.get("folder", "."), job_id).get_info(mode="force")
        state = str(info.get("State", "")).split(" ")[0].upper()
        return state in ACTIVE_STATES
    return False


def classify(plan: list[PlannedRun], manifest: dict[str, Any]) -> None:
    """Set each run's status: finished, active (queued or running), unfinished or new.

    A run folder (or a queued job) with a different config than planned is an error: re-running
    a sweep must not mix two experiments under one name.
    """
    errors = []
    recorded = manifest.get("runs", {})
    for run in plan:
        config_file = run.run_dir / CONFIG_FILE
        if config_file.is_file():
            try:
                diff = list(changed_keys(load_config(str(config_file)), run.config))
            except ConfigError as exc:
                errors.append(f"{run.run_dir}: cannot read its config.yaml: {exc}")
                continue
            if diff:
                errors.append(
                    f"{run.run_dir} already holds a run with a different config (differs in "
                    f"{', '.join(diff)}); use a new sweep folder"
                )
                continue
        if is_finished(run.run_dir):
            run.status = "finished"
            continue
        entry = recorded.get(run.name, {})
        submissions = entry.get("submissions", [])
        if submissions and _job_active(submissions[-1]):
            run.status = "active"
            if entry.get("argv") != run.argv:
                errors.append(
                    f"{run.name}: job {submissions[-1]['job_id']} is still queued or running "
                    "with other arguments; cancel it or use a new sweep folder"
                )
            continue
        run.status = "unfinished" if _has_content(run.run_dir) else "new"
    if errors:
        raise SweepError(*errors)


# --------------------------------------------------------------------------- submit and wait
def submit(
    plan: list[PlannedRun], opts: ExecutorOptions, sweep_dir: Path, manifest: dict[str, Any]
) -> list[tuple[PlannedRun, Any]]:
    """Submit the runs to do; SLURM as one job array. Returns (run, job) pairs."""
    todo = [r for r in plan if r.status in ("new", "unfinished")]
    if not todo:
        return []
    executor = make_executor(opts, sweep_dir)
    for run in todo:
        run.run_dir.mkdir(parents=True, exist_ok=True)
    if opts.executor == "local":
        return _run_local(todo, executor, opts.max_parallel or 1, sweep_dir, manifest)
    with executor.batch():
        jobs = [executor.submit(RunJob(str(r.run_dir), r.argv)) for r in todo]
    pairs = list(zip(todo, jobs, strict=True))
    for run, job in pairs:
        _record(manifest, run, job, "slurm", sweep_dir)
    write_manifest(sweep_dir, manifest)
    return pairs


def _record(
    manifest: dict[str, Any], run: PlannedRun, job: Any, executor: str, sweep_dir: Path
) -> None:
    entry = manifest["runs"].setdefault(run.name, run.manifest_entry())
    entry.setdefault("submissions", []).append(
        {
            "executor": executor,
            "job_id": str(job.job_id),
            "folder": str(sweep_dir / JOBS_DIR / "%j"),
            "host": socket.gethostname(),
            "submitted": _now(),
        }
    )


def _run_local(
    todo: list[PlannedRun],
    executor: Any,
    max_parallel: int,
    sweep_dir: Path,
    manifest: dict[str, Any],
) -> list[tuple[PlannedRun, Any]]:
    """submitit's local executor starts every job at once: keep at most max_parallel going."""
    pending, running, done = list(todo), [], []
    while pending or running:
        while pending and len(running) < max_parallel:
            run = pending.pop(0)
            job = executor.submit(RunJob(str(run.run_dir), run.argv))
            _record(manifest, run, job, "local", sweep_dir)
            write_manifest(sweep_dir, manifest)
            print(f"started {run.name} (local job {job.job_id})", flush=True)
            running.append((run, job))
        finished = [(r, j) for r, j in running if j.done()]
        for pair in finished:
            running.remove(pair)
            done.append(pair)
            print(_outcome(*pair), flush=True)
        if not finished:
            time.sleep(0.5)
    return done


def _outcome(run: PlannedRun, job: Any) -> str:
    try:
        job.result()
    except Exception as exc:  # the job's own error, raised again by submitit
        last = str(exc).strip().splitlines()[-1:] or ["?"]
        return f"FAILED {run.name}: {last[0]} (log: {job.paths.stderr})"
    return f"finished {run.name}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- command line
def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Run benchmarks x surgery methods x seeds (x --vary values) as submitit jobs "
        "(SLURM or this machine), one run folder each under --out, with a manifest. Everything "
        "is validated before anything is submitted; finished runs are skipped when the same "
        "sweep is run again; preempted jobs requeue and resume.",
        epilog="example: mtrl-sweep --out runs/mt10 --benchmarks mt10 --methods none "
        "cagrad:c=0.5 --seeds 0-9 --partition gpu --gpus 1 --cpus 8 --time 24:00:00 --mem 32G",
    )
    grid = parser.add_argument_group("the grid")
    grid.add_argument("--out", type=Path, required=True, help="the sweep folder")
    grid.add_argument("--benchmarks", nargs="+", default=[], metavar="B", help=benchmark_choices())
    grid.add_argument(
        "--methods",
        nargs="+",
        default=[],
        metavar="M",
        help=f"surgery methods, with options as NAME:KEY=VALUE,... (e.g. cagrad:c=0.5); "
        f"available: {', '.join(surgery_choices())}",
    )
    grid.add_argument(
        "--seeds", nargs="+", default=["0"], metavar="S", help="e.g. 0-9 or 0 1 2 (default 0)"
    )
    grid.add_argument(
        "--vary",
        action="append",
        default=[],
        metavar="KEY=[V1,V2]",
        help="one more grid axis over a config value (repeatable)",
    )
    grid.add_argument("--config", metavar="PRESET_OR_FILE", help="mtrl-train --config")
    grid.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for every run"
    )

    ex = parser.add_argument_group("where the jobs run")
    ex.add_argument("--executor", choices=["slurm", "local"], help="default slurm")
    ex.add_argument(
        "--executor-config",
        type=Path,
        metavar="FILE.yaml",
        help="executor options as YAML (the keys below); flags win",
    )
    ex.add_argument("--partition")
    ex.add_argument("--gpus", type=int, help="GPUs per job")
    ex.add_argument("--cpus", type=int, help="CPUs per job")
    ex.add_argument("--time", help="time limit per job: minutes, H:MM:SS or D-HH:MM:SS")
    ex.add_argument("--mem", help="memory per job, e.g. 32G")
    ex.add_argument("--account")
    ex.add_argument("--qos")
    ex.add_argument("--constraint")
    ex.add_argument("--max-parallel", type=int, help="jobs at once (local default 1)")
    ex.add_argument(
        "--container-image",
        metavar="IMAGE",
        help="Apptainer/Singularity image (.sif or docker://...) for the jobs",
    )
    ex.add_argument("--container-runtime", choices=["apptainer", "singularity"])
    ex.add_argument(
        "--container-bind",
        dest="container_binds",
        action="append",
        metavar="SRC[:DST]",
        help="extra bind (the sweep folder is always bound)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan and submit nothing")
    parser.add_argument(
        "--wait", action="store_true", help="SLURM: wait for the jobs and report their outcome"
    )
    return parser


def _executor_flags(args: argparse.Namespace) -> dict[str, Any]:
    names = ("executor partition gpus cpus time mem account qos constraint max_parallel "
             "container_image container_runtime container_binds")  # fmt: skip
    return {name: getattr(args, name) for name in names.split()}


def _collect_overrides(args: argparse.Namespace) -> None:
    """KEY=VALUE words swallowed by --benchmarks/--methods/--seeds belong to the overrides.

    A method's options always follow a colon (cagrad:c=0.5); an override has none before "=".
    """
    for name in ("benchmarks", "methods", "seeds"):
        kept = []
        for word in getattr(args, name):
            key, sep, _ = word.partition("=")
            (args.overrides if sep and ":" not in key else kept).append(word)
        setattr(args, name, kept)


def print_plan(plan: list[PlannedRun], opts: ExecutorOptions, sweep_dir: Path) -> None:
    meaning = {
        "new": "submit",
        "unfinished": "submit: resume",
        "finished": "skip: finished",
        "active": "skip: queued or running",
    }
    print(f"sweep {sweep_dir}: {len(plan)} runs")
    print(opts.describe(sweep_dir))
    width = max(len(r.name) for r in plan)
    status_width = max(len(meaning[r.status]) for r in plan)
    for run in plan:
        print(f"  {run.name:<{width}}  {meaning[run.status]:<{status_width}}  {run.command}")


def sweep_main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_intermixed_args(list(sys.argv[1:] if argv is None else argv))
    _collect_overrides(args)
    sweep_dir = args.out.resolve()
    problems: list[str] = []

    def check(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except (SweepError, ConfigError) as exc:
            problems.extend(getattr(exc, "problems", [str(exc)]))
            return None

    opts = check(lambda: load_executor_options(args.executor_config, _executor_flags(args)))
    plan = check(
        lambda: build_plan(
            sweep_dir,
            args.benchmarks,
            args.methods,
            args.seeds,
            args.overrides,
            args.vary,
            args.config,
        )
    )
    manifest = check(lambda: read_manifest(sweep_dir))
    if plan is not None and manifest is not None:
        check(lambda: classify(plan, manifest))
    if not problems and not args.dry_run:
        check(_need_submitit)
        if opts.executor == "slurm" and not problems:
            check(lambda: make_executor(opts, sweep_dir))  # without SLURM: fails here
    if problems:
        for problem in problems:
            print(f"{PROG}: error: {problem}", file=sys.stderr)
        print(f"{PROG}: nothing submitted", file=sys.stderr)
        return USAGE_ERROR

    print_plan(plan, opts, sweep_dir)
    counts = {
        s: sum(r.status == s for r in plan) for s in ("new", "unfinished", "finished", "active")
    }
    todo = counts["new"] + counts["unfinished"]
    summary = (
        f"{todo} to submit ({counts['new']} new, {counts['unfinished']} unfinished), "
        f"{counts['finished']} finished and {counts['active']} queued or running skipped"
    )
    if args.dry_run:
        print(f"{summary}; --dry-run: nothing submitted")
        return 0

    sweep_dir.mkdir(parents=True, exist_ok=True)
    manifest.setdefault("created", _now())
    manifest.update(
        {
            "sweep": str(sweep_dir),
            "updated": _now(),
            "mtrl_version": mtrl.__version__,
            "command": [PROG, *(sys.argv[1:] if argv is None else argv)],
            "executor": {**asdict(opts), "python": opts.python_command(sweep_dir)},
        }
    )
    runs = manifest.setdefault("runs", {})
    for run in plan:
        runs.setdefault(run.name, {}).update(run.manifest_entry())
    write_manifest(sweep_dir, manifest)
    print(summary)
    pairs = submit(plan, opts, sweep_dir, manifest)
    if opts.executor == "slurm" and pairs:
        job_ids = sorted({str(j.job_id).split("_")[0] for _, j in pairs})
        print(f"submitted SLURM job {', '.join(job_ids)}; logs in {sweep_dir / JOBS_DIR}")
        if not args.wait:
            return 0
        for pair in pairs:
            print(_outcome(*pair), flush=True)
    failed = [r.name for r, _ in pairs if not is_finished(r.run_dir)]
    if failed:
        print(
            f"{PROG}: {len(failed)} of {len(pairs)} runs did not finish: {', '.join(failed)}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(sweep_main())
