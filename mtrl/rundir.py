"""The run folder: resolved config and provenance; an existing run is never overwritten."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import metaworld
import torch

import mtrl
from mtrl import protocols
from mtrl.config import Config, ConfigError, flatten, to_yaml

CONFIG_FILE = "config.yaml"
META_FILE = "meta.json"
SLUG_MAX = 80


def file_slug(text: str, limit: int = SLUG_MAX) -> str:
    """A file-name part: ASCII letters, digits and ``._-`` only (any other character becomes
    ``-``); a longer one (a task set of many tasks) is cut and ends in a hash of the full text,
    so that two texts never share a name."""
    slug = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "-" for c in text)
    if len(slug) > limit:
        digest = hashlib.sha256(text.encode()).hexdigest()[:10]
        slug = f"{slug[: limit - 11]}-{digest}"
    return slug


def default_run_dir(config: Config) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    benchmark = file_slug(config.env.benchmark, limit=60)
    method = config.surgery.name
    if config.balancer.name != "none":
        method = f"{config.balancer.name}+{method}"
    if config.agent.model != "mlp":
        method = f"{config.agent.model}+{method}"
    return Path("runs") / f"{benchmark}-{method}-s{config.train.seed}-{stamp}"


def create_run_dir(path: Path) -> Path:
    """Create a fresh run folder; an existing non-empty folder is an error, never overwritten."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(
            f"--out '{path}' already exists and is not empty; choose a new folder "
            "(runs are never overwritten)"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"cannot write to --out '{path}': {exc.strerror or exc}") from None
    return path


def write_provenance(run_dir: Path, config: Config, device: torch.device, argv: list[str]) -> None:
    """config.yaml (the resolved config) and meta.json (versions, commit, protocol, command)."""
    (run_dir / CONFIG_FILE).write_text(to_yaml(config), encoding="utf-8")
    meta = {
        "mtrl_version": mtrl.__version__,
        "git_commit": git_commit(),
        "command": [Path(sys.argv[0]).name, *argv],
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "protocol": protocol(config),
        "device": str(device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "metaworld": getattr(metaworld, "__version__", _dist_version("metaworld")),
        "host": platform.node(),
        "cpu": processor(),
    }
    (run_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def record_resume(run_dir: Path, step: int, device: torch.device, argv: list[str]) -> None:
    """Append a ``resumed`` entry to meta.json (replaced atomically)."""
    path = Path(run_dir) / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = {}
    meta.setdefault("resumed", []).append(
        {
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "from_step": step,
            "command": [Path(sys.argv[0]).name, *argv],
            "git_commit": git_commit(),
            "device": str(device),
            "host": platform.node(),
            "cpu": processor(),
        }
    )
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def processor_kind() -> str:
    """The processor's vendor and torch's CPU kernel set, e.g. ``AuthenticAMD-AVX512``. Float
    results are reproducible bit for bit only on one kind: MKL's matrix products and torch's
    vectorised reductions round differently on another (runs from two kinds differ as two seeds
    do, by rounding)."""
    vendor = _cpuinfo_field("vendor_id") or platform.processor() or "unknown"
    return f"{vendor}-{torch.backends.cpu.get_cpu_capability()}"


def processor() -> str:
    """The processor's model name and kind, for meta.json."""
    return f"{_cpuinfo_field('model name') or platform.machine()} ({processor_kind()})"


def _cpuinfo_field(name: str) -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return ""


def protocol(config: Config) -> dict[str, object]:
    """What makes two runs' success rates comparable; reports never pool different protocols.

    ``name`` is the paper protocol the run follows (``none``: its own settings), ``statistic``
    what that protocol's papers report (the best or the final evaluation), ``deviations`` the
    protocol's values this run changed (key -> the run's value).
    """
    env, name = config.env, config.train.protocol
    return {
        "name": name,
        "benchmark": env.benchmark,
        "goal_mode": env.goal_mode,
        "max_episode_steps": env.max_episode_steps,
        "reward_version": env.reward_version,
        "statistic": protocols.statistic(name),
        "deviations": protocols.deviations(name, env.benchmark, flatten(asdict(config))),
    }


def git_commit() -> str:
    """The commit of the mtrl source checkout (``+dirty`` with local changes), or ``unknown``.

    Only a checkout whose top level holds the ``mtrl`` package counts: an installed copy inside
    some other repository (a venv in a project folder) must not report that project's commit.
    """
    source = Path(mtrl.__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=source, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != source:
            return "unknown"
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return git("rev-parse", "HEAD") + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"
