"""Synthetic run folders as mtrl-train writes them: the resolved config.yaml, meta.json with the
protocol, and metrics.jsonl with training lines and evaluation lines (the last one final)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from mtrl.config import load_config, to_yaml
from mtrl.envs import parse_benchmark
from mtrl.rundir import protocol

TWO_TASKS = ("reach-v3", "button-press-topdown-v3")
PAIR = "mt50:" + ",".join(TWO_TASKS)
"""A task-subset benchmark (the PCGrad paper's Figure 4 pair)."""


def write_run(
    path: Path,
    evals: Sequence[float | Sequence[float]],
    preset: str = "mt10",
    seed: int = 0,
    overrides: Sequence[str] = (),
    benchmark: str | None = None,
    tasks: Sequence[str] | None = None,
    surgery: dict[str, Any] | None = None,
    train_lines: Sequence[dict[str, Any]] = (),
    returns: Sequence[Sequence[float]] | None = None,
) -> Path:
    """A finished run whose evaluations report ``evals``: per evaluation one success rate per task
    (or one number for every task), at steps ``eval_every * (i + 1)``. ``benchmark``/``tasks``
    set a benchmark the config loader may not know (with its tasks); ``surgery`` replaces the
    surgery section as written; ``train_lines`` (each with its ``step``) go before the evaluation
    of the same step, as mtrl-train logs them."""
    config = load_config(preset, [f"train.seed={seed}", *overrides])
    recorded = protocol(config)
    tasks = list(tasks or parse_benchmark(config.env.benchmark).task_names)
    tree = yaml.safe_load(to_yaml(config))
    if benchmark is not None:
        tree["env"]["benchmark"] = recorded["benchmark"] = benchmark
    if surgery is not None:
        tree["surgery"] = surgery
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump(tree))
    (path / "meta.json").write_text(json.dumps({"protocol": recorded}))
    every = config.train.eval_every
    lines = [*train_lines]
    for i, value in enumerate(evals):
        success = [float(value)] * len(tasks) if isinstance(value, int | float) else list(value)
        returns_i = returns[i] if returns is not None else [1000.0 * s for s in success]
        lines.append(
            {
                "step": every * (i + 1),
                "protocol": config.train.protocol,
                **({"final": True} if i == len(evals) - 1 else {}),
                "eval/success": sum(success) / len(success),
                **{f"eval/success/{t}": s for t, s in zip(tasks, success, strict=True)},
                "eval/return": sum(returns_i) / len(returns_i),
                **{f"eval/return/{t}": r for t, r in zip(tasks, returns_i, strict=True)},
            }
        )
    lines.sort(key=lambda r: (r["step"], "eval/success" in r))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path
