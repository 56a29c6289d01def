"""Benchmark and task names: parsed and given one spelling here, and only here.

At the bottom of the package (it imports no other ``mtrl`` module), so that the config, the
protocols and the envs can all name benchmarks without importing one another. Meta-World's task
lists are read on first use: importing Meta-World takes a fraction of a second, which a command
that only reads configs (``mtrl-report``) should not pay.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

TASK_SET_PREFIX = "mt50:"
"""A task set names MT50 tasks (every v3 task of MT10 and MT25 is one of them)."""
SINGLE_TASK_PREFIX = "mt1:"
SUITE_NAMES = ("mt10", "mt25", "mt50")


@dataclass(frozen=True)
class Benchmark:
    """A parsed ``--benchmark`` value: its canonical name and its tasks in one-hot order."""

    name: str
    task_names: tuple[str, ...]

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    @property
    def is_suite(self) -> bool:
        return self.name in SUITE_NAMES


@cache
def suites() -> dict[str, tuple[str, ...]]:
    """Suite name -> its tasks in Meta-World's order."""
    from metaworld.env_dict import MT10_V3, MT25_V3, MT50_V3

    return {"mt10": tuple(MT10_V3), "mt25": tuple(MT25_V3), "mt50": tuple(MT50_V3)}


@cache
def _all_envs() -> frozenset[str]:
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    return frozenset(ALL_V3_ENVIRONMENTS)


def canonical_benchmark(name: str) -> str:
    """Benchmark names are case-insensitive and a task set's names may be spaced out
    (``MT50: reach-v3, push-v3``): one spelling is chosen before anything is stored."""
    prefix, colon, rest = name.strip().lower().partition(":")
    return prefix.strip() + colon + ",".join(part.strip() for part in rest.split(",") if colon)


def benchmark_choices() -> str:
    return (
        "mt10, mt25, mt50, a task set mt50:<task>,<task>,... (e.g. "
        "mt50:reach-v3,button-press-topdown-v3; one task, mt50:reach-v3, is a single-task run) "
        "or mt1:<env-name> (e.g. mt1:reach-v3)"
    )


def parse_benchmark(name: str) -> Benchmark:
    """Validate a benchmark name; raises ValueError (one line) that says what is allowed.

    ``mt50:<task>,<task>,...`` is a task set: those MT50 tasks, in that order (the one-hot has
    one entry per listed task). Each task is built as ``mt1:<task>`` is, hence with the same 50
    goals for the same seed (as Meta-World's own ``Meta-World/custom-mt-envs`` does: the goals
    of a task in a whole suite depend on every task before it, and drawing them costs about a
    minute for MT50).
    """
    key = canonical_benchmark(name)
    if key in SUITE_NAMES:
        return Benchmark(key, suites()[key])
    prefix, colon, rest = key.partition(":")
    if colon and prefix + colon == SINGLE_TASK_PREFIX:
        if rest not in _all_envs():
            names = ", ".join(sorted(_all_envs()))
            raise ValueError(f"unknown Meta-World env '{rest}'; v3 envs: {names}")
        return Benchmark(key, (rest,))
    if colon and prefix + colon == TASK_SET_PREFIX:
        return Benchmark(key, _task_set(rest.split(",")))
    raise ValueError(f"unknown benchmark '{name}'; allowed: {benchmark_choices()}")


def _task_set(names: list[str]) -> tuple[str, ...]:
    if "" in names:
        raise ValueError(
            f"a task set lists its tasks after '{TASK_SET_PREFIX}', comma-separated, none empty "
            f"(e.g. {TASK_SET_PREFIX}reach-v3,push-v3); got '{TASK_SET_PREFIX}{','.join(names)}'"
        )
    mt50 = suites()["mt50"]
    unknown = [n for n in names if n not in mt50]
    if unknown:
        raise ValueError(
            f"unknown MT50 task(s) {', '.join(repr(n) for n in unknown)}; "
            f"MT50 tasks: {', '.join(mt50)}"
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"task(s) listed more than once: {', '.join(repeated)}")
    return tuple(names)
