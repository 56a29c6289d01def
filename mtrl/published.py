"""Published MT10/MT50 success rates, keyed by benchmark, protocol and method.

A number is only ever shown beside runs of the same benchmark, the same protocol (followed
without deviations, see :mod:`mtrl.protocols`) and the same method: the same network model,
surgery method with the same resolved options, and loss balancer. Each entry names its source
and the preset that is the paper's setting, taken from the command that produced that row (the
rows of one table can differ: CARE's Multi-task SAC learns one temperature per task, CAGrad's
runs one for all); a run whose result-relevant settings differ from that preset's (network
sizes, learning rates, temperatures, model options, the components surgery or a balancer acts
on, ...) gets no number either ([paper_number][mtrl.published.paper_number];
[reference_setting][mtrl.published.reference_setting] says which settings differ). What no
setting reproduces is listed in [CAVEATS][mtrl.published.CAVEATS], which mtrl-report prints
beside the numbers.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from mtrl.config import RUN_ONLY_KEYS, flatten, load_config

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
    preset: str
    """The config preset (``configs/``) that is the paper's setting for this number."""
    method: MethodKey = field(default_factory=MethodKey)


def _cagrad_table() -> list[Published]:
    rows = [
        # paper label, preset suffix, method, (MT10 mean, s.e.), (MT50 mean, s.e.)
        ("Multi-task SAC", "", {}, (0.49, 0.073), (0.36, 0.013)),
        ("Multi-headed SAC", "-mhsac", {"model": "multihead"}, (0.61, 0.036), (0.45, 0.064)),
        ("PCGrad", "-pcgrad", {"surgery": "pcgrad"}, (0.72, 0.022), (0.50, 0.017)),
        (
            "Soft Modularization",
            "-soft_modularization",
            {"model": "soft_modularization"},
            (0.73, 0.043),
            (0.50, 0.035),
        ),
        (
            "CARE",
            "-care",
            {"model": "care", "task_embeddings": True},
            (0.84, 0.051),
            (0.54, 0.031),
        ),
    ]
    out = [
        Published(bench, "mtrl", label, *numbers, CAGRAD_TABLE, bench + suffix, MethodKey(**method))
        for label, suffix, method, mt10, mt50 in rows
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
        for label, numbers, preset, method in (
            ("CAGrad", (mean, se), f"{bench}-cagrad", cagrad),
            ("CAGrad-Fast", (fast_mean, fast_se), f"{bench}-cagrad_fast", fast),
        ):
            out.append(Published(bench, "mtrl", label, *numbers, CAGRAD_TABLE, preset, method))
    return out


def _famo_table() -> list[Published]:
    """FAMO on the critic's losses, logit decay 0.01 and learning rate 0.025 (its MT10 command)."""
    famo = MethodKey(
        balancer="famo", balancer_options=(("gamma", 0.01), ("lr", 0.025), ("min_loss", 0.0))
    )
    return [Published("mt10", "mtrl", "FAMO", 0.83, 0.05, FAMO_TABLE, "mt10-famo", famo)]


CAVEATS: dict[str, tuple[str, ...]] = {
    "mtrl": (
        "the papers ran the V1 envs of Meta-World as of Feb 2021 (horizon 150, V1 reward "
        "normalised by mtenv); they run here as v3 envs with horizon 500 and the v2 reward",
        "the reference's temperature loss is alpha (-log pi - target entropy) on the actor's "
        "log-probabilities before its update (facebookresearch/mtrl agent/sac.py), mtrl's "
        "-log alpha (log pi + target entropy) after it",
        "the reference acts, updates, then steps the envs: train.collector=serial_lagged or "
        "overlap keep that order, serial updates on the newest transition first",
        "Soft Modularization: the CARE authors' re-implementation behind the number initialises "
        "all layers Xavier-uniform (facebookresearch/mtrl agent/utils.py), mtrl's model as the "
        "Soft-Module authors' code does",
    ),
    "mwplus": (
        "the Meta-World+ curves came from metaworld-algorithms before 2026-05-19 (commits "
        "bd013c0, 73aba0b), which treated the 500-step limit as terminal (no bootstrap) and "
        "clipped Q values and targets at +-5000; mtrl bootstraps and does not clip, as that code "
        "does since",
        "the reference's temperature loss uses the actor's log-probabilities before its update, "
        "mtrl's after it",
    ),
}
"""Per protocol: what differs from the papers' runs and no setting reproduces."""
BENCHMARK_CAVEATS: dict[tuple[str, str], tuple[str, ...]] = {
    ("mtrl", "mt50"): (
        "the CARE authors document MT10 commands only; MT50 is taken to be the same commands "
        "with 50 envs",
    ),
    ("mwplus", "mt50"): (
        "metaworld-algorithms has no MT50 MTMHSAC configuration (its batch of 1280 does not "
        "divide by 50 tasks): mt50-mwplus extrapolates the MT10 one with 128 per task",
    ),
}


def caveats(protocol: str, benchmark: str) -> tuple[str, ...]:
    """What a run of ``protocol`` on ``benchmark`` cannot reproduce of the papers' runs."""
    return (*CAVEATS.get(protocol, ()), *BENCHMARK_CAVEATS.get((protocol, benchmark), ()))


PUBLISHED: tuple[Published, ...] = (*_cagrad_table(), *_famo_table())
"""Every published number on record. Meta-World+ (protocol ``mwplus``) reports its numbers as
curves and approximate values; none is recorded here until an exact table value is."""


def lookup(benchmark: str, protocol: str, method: MethodKey) -> Published | None:
    """The published number for exactly this benchmark, protocol and method, if any."""
    for entry in PUBLISHED:
        if (entry.benchmark, entry.protocol, entry.method) == (benchmark, protocol, method):
            return entry
    return None


NOT_THE_SETTING = RUN_ONLY_KEYS | {
    "train.collector",  # overlap's one-update policy lag is accepted as the same experiment
    "surgery.diagnostics_every",
    "agent.multi_head",  # the older spelling of agent.model, part of the method key
    "agent.task_embeddings",  # the file's path; whether one is given is part of the method key
}
"""Keys that may differ from the paper's preset: they change where or how a run executes or
logs, or are compared through :class:`MethodKey` (which resolves surgery and balancer options)."""
NOT_THE_SETTING_PREFIXES = ("checkpoint.", "logger.", "surgery.options", "balancer.options")


def paper_number(flat_config: dict[str, Any], benchmark: str, protocol: str) -> Published | None:
    """The published number for a run, if it runs the paper's method in the paper's setting."""
    entry, differences = reference_setting(flat_config, benchmark, protocol)
    return None if differences else entry


def reference_setting(
    flat_config: dict[str, Any], benchmark: str, protocol: str
) -> tuple[Published | None, list[str]]:
    """The published number of the run's method and the settings in which the run differs
    from the paper's preset (none: the number applies; some: a reference in another setting)."""
    entry = lookup(benchmark, protocol, method_key(flat_config))
    return entry, [] if entry is None else setting_differences(flat_config, entry.preset)


def setting_differences(flat_config: dict[str, Any], preset: str) -> list[str]:
    """The result-relevant keys in which a run's flattened config differs from a preset's."""
    reference = _preset_settings(preset)
    return sorted(
        key
        for key in reference.keys() | flat_config.keys()
        if key not in NOT_THE_SETTING
        and not key.startswith(NOT_THE_SETTING_PREFIXES)
        and _canonical(flat_config.get(key)) != reference.get(key)
    )


@functools.cache
def _preset_settings(preset: str) -> dict[str, str]:
    return {k: _canonical(v) for k, v in flatten(asdict(load_config(preset))).items()}


def _canonical(value: Any) -> str:
    """One spelling per value (tuples and lists alike), so that YAML and dataclasses compare."""
    return json.dumps(value, sort_keys=True)


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
