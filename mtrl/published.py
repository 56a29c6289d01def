"""Published MT10/MT50 success rates, keyed by benchmark, protocol and method.

A number is only ever shown beside runs of the same benchmark, the same protocol (followed
without deviations, see :mod:`mtrl.protocols`) and the same method: the same network model,
surgery method with the same resolved options, and loss balancer. Each entry names its source.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

NOT_THE_METHOD = ("seed", "solver")
"""Surgery options that change how a method is computed, not which method it is."""
CAGRAD_TABLE = "CAGrad (Liu et al., NeurIPS 2021), Table 3, mean ± s.e. over 10 seeds"
FAMO_TABLE = "FAMO (Liu et al., NeurIPS 2023), Table 4, mean ± s.e. over 10 runs"


@dataclass(frozen=True)
class MethodKey:
    """What identifies a method for comparison with a paper."""

    model: str = "mlp"
    task_embeddings: bool = False
    """Fixed task embeddings given (``agent.task_embeddings``): CARE's paper uses them."""
    surgery: str = "none"
    options: tuple[tuple[str, Any], ...] = ()
    """Resolved surgery options (defaults filled in), sorted, without those that do not define
    the method (:data:`NOT_THE_METHOD`)."""
    balancer: str = "none"
    balancer_options: tuple[tuple[str, Any], ...] = ()
    """Resolved balancer options (defaults filled in), sorted."""


@dataclass(frozen=True)
class Published:
    benchmark: str
    protocol: str
    label: str
    """The method's name in the paper."""
    success: float
    stderr: float | None
    source: str
    method: MethodKey = field(default_factory=MethodKey)


def _cagrad_table() -> list[Published]:
    rows = [
        # paper label, method, (MT10 mean, s.e.), (MT50 mean, s.e.)
        ("Multi-task SAC", {}, (0.49, 0.073), (0.36, 0.013)),
        ("Multi-headed SAC", {"model": "multihead"}, (0.61, 0.036), (0.45, 0.064)),
        ("PCGrad", {"surgery": "pcgrad"}, (0.72, 0.022), (0.50, 0.017)),
        ("Soft Modularization", {"model": "soft_modularization"}, (0.73, 0.043), (0.50, 0.035)),
        ("CARE", {"model": "care", "task_embeddings": True}, (0.84, 0.051), (0.54, 0.031)),
    ]
    out = [
        Published(bench, "mtrl", label, *numbers, CAGRAD_TABLE, MethodKey(**method))
        for label, method, mt10, mt50 in rows
        for bench, numbers in (("mt10", mt10), ("mt50", mt50))
    ]
    # CAGrad's run.sh: c = 0.9 on MT10 and 0.5 on MT50, the update divided by 1 + c^2.
    for bench, c, (mean, se), (fast_mean, fast_se), groups in (
        ("mt10", 0.9, (0.83, 0.045), (0.82, 0.039), 4),
        ("mt50", 0.5, (0.52, 0.023), (0.50, 0.016), 8),
    ):
        cagrad = MethodKey(surgery="cagrad", options=(("c", c), ("rescale", True)))
        fast = MethodKey(
            surgery="cagrad_fast", options=(("c", c), ("k", groups), ("rescale", True))
        )
        out.append(Published(bench, "mtrl", "CAGrad", mean, se, CAGRAD_TABLE, cagrad))
        out.append(Published(bench, "mtrl", "CAGrad-Fast", fast_mean, fast_se, CAGRAD_TABLE, fast))
    return out


def _famo_table() -> list[Published]:
    """FAMO on the critic's losses, logit decay 0.01 and learning rate 0.025 (its MT10 command)."""
    famo = MethodKey(
        balancer="famo", balancer_options=(("gamma", 0.01), ("lr", 0.025), ("min_loss", 0.0))
    )
    return [Published("mt10", "mtrl", "FAMO", 0.83, 0.05, FAMO_TABLE, famo)]


PUBLISHED: tuple[Published, ...] = (*_cagrad_table(), *_famo_table())
"""Every published number on record. Meta-World+ (protocol ``mwplus``) reports its numbers as
curves and approximate values; none is recorded here until an exact table value is."""


def lookup(benchmark: str, protocol: str, method: MethodKey) -> Published | None:
    """The published number for exactly this benchmark, protocol and method, if any."""
    for entry in PUBLISHED:
        if (entry.benchmark, entry.protocol, entry.method) == (benchmark, protocol, method):
            return entry
    return None


def method_key(flat_config: dict[str, Any]) -> MethodKey:
    """The method of a run, from its flattened config (``agent.model``, ``surgery.*``, ...)."""
    from mtrl import balancers, surgery

    surgery_name = str(flat_config.get("surgery.name", "none"))
    balancer_name = str(flat_config.get("balancer.name", "none"))
    model = flat_config.get("agent.model") or (
        "multihead" if flat_config.get("agent.multi_head") else "mlp"
    )
    return MethodKey(
        model=str(model),
        task_embeddings=flat_config.get("agent.task_embeddings") is not None,
        surgery=surgery_name,
        options=_resolved(flat_config, "surgery", surgery_name, surgery.options_of),
        balancer=balancer_name,
        balancer_options=_resolved(flat_config, "balancer", balancer_name, balancers.options_of),
    )


def _resolved(
    flat_config: dict[str, Any], section: str, name: str, defaults: Callable[[str], dict]
) -> tuple[tuple[str, Any], ...]:
    """A section's options with their defaults filled in, without those in NOT_THE_METHOD."""
    if name == "none":
        return ()
    prefix = f"{section}.options."
    given = {k.removeprefix(prefix): v for k, v in flat_config.items() if k.startswith(prefix)}
    try:
        options = {**defaults(name), **given}
    except ValueError:  # a method this version does not know: compare what the run gave
        options = given
    return tuple(sorted((k, v) for k, v in options.items() if k not in NOT_THE_METHOD))
