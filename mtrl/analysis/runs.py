"""Run folders read and grouped into table rows: what a report, a figure and the claims start from.

A run is a folder with ``metrics.jsonl``, ``config.yaml`` and ``meta.json`` (what mtrl-train
writes). Runs are grouped by protocol (``meta.json`` ``protocol``: the paper protocol's name,
benchmark, goal mode, horizon, reward version) and never pooled across protocols; within a
protocol, by method (network model, surgery method and its options, loss balancer). Runs of one
method whose configs differ in anything but the seed (and settings that do not change results:
device, threads, env workers, vector strategy, logging, checkpointing) become separate rows, so
that a table row always means "the same experiment, several seeds". Only finished runs (a final
evaluation line) enter; the others are noted with the reason.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from mtrl.config import RUN_ONLY_KEYS, flatten
from mtrl.logger import METRICS_FILE, read_metrics
from mtrl.published import Published, method_key, paper_number
from mtrl.rundir import CONFIG_FILE, META_FILE, file_slug

if TYPE_CHECKING:
    from mtrl.analysis.summary import RowStats

PROTOCOL_KEYS = ("name", "benchmark", "goal_mode", "max_episode_steps", "reward_version")
"""What makes success rates comparable (mtrl.rundir records it in meta.json): runs that differ in
one of these are never pooled."""


SUCCESS = "eval/success"


TASK_PREFIX = "eval/success/"


KINDS = ("final", "best")
"""Which evaluation of each run gives its scores: the last one, or its best one."""


@dataclass
class Run:
    path: Path
    protocol: dict[str, Any]
    method: str
    seed: int
    model: str
    balancer: str
    deviations: dict[str, Any]
    statistic: str | None
    config: dict[str, Any]  # flattened dotted keys
    evals: list[dict[str, Any]]  # the evaluation lines, in order
    started: str = ""
    variant: str = ""

    @property
    def final(self) -> dict[str, Any]:
        return self.evals[-1]

    @property
    def best(self) -> dict[str, Any]:
        """The evaluation with the highest success averaged over tasks (the earliest of equals)."""
        return max(self.evals, key=lambda e: float(e[SUCCESS]))

    @property
    def tasks(self) -> list[str]:
        """The tasks in one-hot order (as the evaluation lines list them)."""
        return [k.removeprefix(TASK_PREFIX) for k in self.final if k.startswith(TASK_PREFIX)]

    def scores(self, kind: str, tasks: Sequence[str]) -> list[float]:
        """Per-task success of the ``final`` or the ``best`` evaluation."""
        evaluation = self.final if kind == "final" else self.best
        return [float(evaluation[TASK_PREFIX + t]) for t in tasks]


def find_run_dirs(paths: Iterable[Path], notes: list[str]) -> list[Path]:
    """Run folders (those holding metrics.jsonl) at or below ``paths``; hidden folders skipped."""
    found: list[Path] = []
    for root in paths:
        root = Path(root)
        if not root.exists():
            notes.append(f"{root}: does not exist")
            continue
        if (root / METRICS_FILE).is_file():
            found.append(root)
            continue
        below = []
        for current, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            if METRICS_FILE in files:
                below.append(Path(current))
                dirs[:] = []  # a run folder holds no further runs
        if not below:
            notes.append(f"{root}: no runs found (no folder with {METRICS_FILE} below it)")
        found.extend(below)
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return unique


def method_label(name: str, options: dict[str, Any] | None) -> str:
    """``cagrad(c=0.5)``; just the name when the method has no options."""
    if not options:
        return str(name)
    inner = ",".join(f"{k}={options[k]}" for k in sorted(options))
    return f"{name}({inner})"


def load_run(path: Path, notes: list[str]) -> Run | None:
    """One run folder, or None (with the reason in ``notes``) when it cannot enter the report."""
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        notes.append(f"{path}: skipped, no {CONFIG_FILE} (not an mtrl run folder?)")
        return None
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        notes.append(f"{path}: skipped, cannot read {CONFIG_FILE}: {exc}")
        return None
    try:
        text = (path / METRICS_FILE).read_text(encoding="utf-8")
        records = read_metrics(path)
    except (OSError, ValueError) as exc:
        notes.append(f"{path}: skipped, {exc}")
        return None
    if len(records) < len(text.splitlines()):
        notes.append(
            f"{path}: the last line of {METRICS_FILE} is cut (the run was killed while "
            f"writing it); ignored it and read the {len(records)} complete lines"
        )
    meta = _read_meta(path, notes)
    env = config.get("env", {})
    recorded = {"name": "none", **(meta.get("protocol") or env)}
    surgery = config.get("surgery", {})
    balancer = config.get("balancer", {})
    flat = flatten(config)
    run = Run(
        path=path,
        protocol={k: recorded.get(k) for k in PROTOCOL_KEYS},
        method=method_label(surgery.get("name", "?"), surgery.get("options")),
        seed=int(flat.get("train.seed", -1)),
        model=method_key(flat).model,
        balancer=method_label(balancer.get("name", "none"), balancer.get("options")),
        deviations=dict(recorded.get("deviations") or {}),
        statistic=recorded.get("statistic"),
        config=flat,
        evals=[r for r in records if r.get(SUCCESS) is not None],
        started=str(meta.get("started", "")),
    )
    if not run.evals:
        notes.append(f"{path}: skipped, no evaluation yet")
        return None
    if not run.final.get("final"):
        total = flat.get("train.total_steps", "?")
        notes.append(
            f"{path}: skipped, unfinished (last evaluation at step {run.final['step']} of "
            f"{total}, no final evaluation)"
        )
        return None
    if not run.tasks:
        notes.append(f"{path}: skipped, its evaluations have no per-task success ({TASK_PREFIX}*)")
        return None
    for e in run.evals:
        if any(e.get(TASK_PREFIX + t) is None for t in run.tasks):
            notes.append(f"{path}: skipped, the evaluation at step {e['step']} lacks tasks")
            return None
    return run


def _read_meta(path: Path, notes: list[str]) -> dict[str, Any]:
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        notes.append(f"{path}: no readable {META_FILE}; took the protocol from {CONFIG_FILE}")
        return {}
    return meta if isinstance(meta, dict) else {}


def load_runs(
    paths: Sequence[Path], notes: list[str], exclude: Path | None = None
) -> tuple[list[Run], int]:
    """The finished runs at or below ``paths`` (none inside ``exclude``), and how many run folders
    were found."""
    run_dirs = find_run_dirs(paths, notes)
    skip = None if exclude is None else Path(exclude).resolve()
    runs = [r for d in run_dirs if skip not in d.parents and (r := load_run(d, notes))]
    return runs, len(run_dirs)


ProtocolKey = tuple[tuple[str, Any], ...]


def protocol_key(protocol: dict[str, Any]) -> ProtocolKey:
    return tuple((k, protocol.get(k)) for k in PROTOCOL_KEYS)


def protocol_label(key: ProtocolKey) -> str:
    p = dict(key)
    name = "no paper protocol" if p["name"] == "none" else f"{p['name']} protocol"
    return (
        f"{p['benchmark']}, {name}, {p['goal_mode']} goals, horizon {p['max_episode_steps']}, "
        f"reward {p['reward_version']}"
    )


def protocol_slug(key: ProtocolKey) -> str:
    """A file-name part for the protocol: letters, digits, ``._-`` only; a long one (a task-subset
    benchmark such as ``mt50:reach-v3,button-press-topdown-v3,...``) is cut and ends in a hash of
    the full text, so that two protocols never share a file."""
    p = dict(key)
    raw = (
        f"{p['benchmark']}-{p['name']}-{p['goal_mode']}-h{p['max_episode_steps']}-"
        f"{p['reward_version']}"
    )
    return file_slug(raw)


MethodId = tuple[str, str, str]
"""(model, surgery label, balancer label)."""


@dataclass
class Row:
    """One table row: runs of one protocol, method and config variant, one per seed."""

    protocol: ProtocolKey
    method: MethodId
    variant: str
    runs: list[Run] = field(default_factory=list)
    stats: RowStats | None = field(default=None, repr=False, compare=False)
    """Filled in by :func:`summarize`."""

    @property
    def label(self) -> str:
        model, surgery, balancer = self.method
        parts = [p for p in (model if model != "mlp" else "", surgery) if p]
        if balancer != "none":
            parts.append(balancer)
        text = " + ".join(parts)
        return f"{text} [{self.variant}]" if self.variant else text

    @property
    def deviations(self) -> dict[str, Any]:
        """The protocol values these runs changed (the same for every seed of a row)."""
        return self.runs[0].deviations

    def published(self) -> Published | None:
        """The paper's number for this method under this protocol, if the runs follow it."""
        p = dict(self.protocol)
        if p["name"] == "none" or self.deviations:
            return None
        return paper_number(self.runs[0].config, str(p["benchmark"]), str(p["name"]))

    @property
    def seeds(self) -> list[int]:
        return sorted(r.seed for r in self.runs)

    @property
    def tasks(self) -> list[str]:
        return self.runs[0].tasks

    def scores(self, kind: str, tasks: Sequence[str] | None = None) -> np.ndarray:
        """The ``[seeds, tasks]`` score matrix of the ``final`` or ``best`` evaluations."""
        return np.array([r.scores(kind, tasks or self.tasks) for r in self.runs])

    def setting(self) -> dict[str, str]:
        """The result-relevant config besides the method: what a row and its baseline share."""
        config = self.runs[0].config
        return {k: json.dumps(v, sort_keys=True) for k, v in config.items() if _result_key(k)}

    def is_plain(self) -> bool:
        """No surgery and no loss balancer."""
        return self.method[1:] == ("none", "none")


def group_runs(runs: list[Run], notes: list[str]) -> dict[ProtocolKey, list[Row]]:
    """Protocol -> rows. Never pools protocols; splits a method whose configs differ."""
    by_method: dict[tuple[ProtocolKey, MethodId], list[Run]] = defaultdict(list)
    for run in runs:
        by_method[(protocol_key(run.protocol), (run.model, run.method, run.balancer))].append(run)

    grouped: dict[ProtocolKey, list[Row]] = defaultdict(list)
    for (proto, method), members in sorted(by_method.items(), key=lambda kv: str(kv[0])):
        differing = _differing_keys(members)
        if differing:
            notes.append(
                f"{Row(proto, method, '').label} under [{protocol_label(proto)}]: runs differ "
                f"in {', '.join(differing)}; reported as separate rows"
            )
        rows: dict[str, Row] = {}
        for run in members:
            run.variant = ", ".join(f"{k}={run.config.get(k)}" for k in differing)
            rows.setdefault(run.variant, Row(proto, method, run.variant)).runs.append(run)
        for row in rows.values():
            row.runs = _one_run_per_seed(row, notes)
            grouped[proto].append(row)
    if len(grouped) > 1:
        notes.append(
            f"the runs use {len(grouped)} different protocols; each is reported on its own, "
            "never pooled: " + "; ".join(protocol_label(k) for k in grouped)
        )
    return dict(grouped)


def _result_key(key: str) -> bool:
    """A config key that can change a result and is neither the seed, the protocol (grouped on
    already) nor the method (model, surgery, balancer: a row's identity)."""
    return (
        key not in RUN_ONLY_KEYS
        and key not in {f"env.{k}" for k in PROTOCOL_KEYS}
        and not key.startswith(("surgery.", "balancer.", "checkpoint.", "logger."))
        and key not in ("agent.model", "agent.multi_head")
    )


def _differing_keys(runs: list[Run]) -> list[str]:
    keys = sorted(set().union(*(r.config for r in runs)))
    return [
        k
        for k in keys
        if _result_key(k) and len({json.dumps(r.config.get(k), sort_keys=True) for r in runs}) > 1
    ]


def _one_run_per_seed(row: Row, notes: list[str]) -> list[Run]:
    by_seed: dict[int, list[Run]] = defaultdict(list)
    for run in row.runs:
        by_seed[run.seed].append(run)
    kept = []
    for seed, same in sorted(by_seed.items()):
        same.sort(key=lambda r: (r.started, str(r.path)))
        kept.append(same[-1])
        if len(same) > 1:
            dropped = ", ".join(str(r.path) for r in same[:-1])
            notes.append(
                f"{row.label}: {len(same)} runs with seed {seed}; kept the latest "
                f"{same[-1].path}, left out {dropped}"
            )
    return kept
