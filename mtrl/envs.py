"""Meta-World benchmarks as gymnasium vector envs: one env per task, one-hot task id in the obs.

Built with the ``metaworld`` package's own builders (``gym.make_vec("Meta-World/MT10", ...)``), so
goals, wrappers and seeding follow the package's standard multi-task setting.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import gymnasium as gym
import metaworld
from metaworld.env_dict import ALL_V3_ENVIRONMENTS, MT10_V3, MT25_V3, MT50_V3

from mtrl.config import canonical_benchmark

if TYPE_CHECKING:
    from mtrl.config import EnvConfig

_SUITES = {"mt10": tuple(MT10_V3), "mt25": tuple(MT25_V3), "mt50": tuple(MT50_V3)}
TASK_SET_PREFIX = "mt50:"
"""A task set names MT50 tasks (every v3 task of MT10 and MT25 is one of them)."""


@dataclass(frozen=True)
class Benchmark:
    """A parsed ``--benchmark`` value: its canonical name and its tasks in one-hot order."""

    name: str
    task_names: tuple[str, ...]

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)


def benchmark_choices() -> str:
    return (
        "mt10, mt25, mt50, a task set mt50:<task>,<task>,... (e.g. "
        "mt50:reach-v3,button-press-topdown-v3) or mt1:<env-name> (e.g. mt1:reach-v3)"
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
    if key in _SUITES:
        return Benchmark(key, _SUITES[key])
    prefix, colon, rest = key.partition(":")
    if colon and prefix == "mt1":
        if rest not in ALL_V3_ENVIRONMENTS:
            names = ", ".join(sorted(ALL_V3_ENVIRONMENTS))
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
    unknown = [n for n in names if n not in _SUITES["mt50"]]
    if unknown:
        raise ValueError(
            f"unknown MT50 task(s) {', '.join(repr(n) for n in unknown)}; "
            f"MT50 tasks: {', '.join(_SUITES['mt50'])}"
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"task(s) listed more than once: {', '.join(repeated)}")
    return tuple(names)


def make_envs(
    benchmark: Benchmark, config: EnvConfig, seed: int, **env_kwargs
) -> gym.vector.VectorEnv:
    """K envs, one per task, seeded the way Meta-World documents (``make_vec(seed=...)``).

    The seed fixes the 50 training goals of every task and the goal drawn at each reset; two
    envs built with the same seed produce the same episodes for the same actions. With
    ``goal_mode == "fixed"`` one goal per task is drawn now and kept for every episode.
    """
    kwargs = dict(
        seed=seed,
        use_one_hot=True,
        max_episode_steps=config.max_episode_steps,
        reward_function_version=config.reward_version,
        **env_kwargs,
    )
    with _quiet():
        envs = _build(benchmark, config, kwargs)
    _apply_goal_mode(envs, config.goal_mode)
    return envs


def rebuild_envs(
    env_fns: Sequence[Callable[[], gym.Env]], goal_mode: str
) -> gym.vector.SyncVectorEnv:
    """A sync vector env over some of the per-task constructors of a :func:`make_envs` vector
    env (its ``env_fns``, picklable): the same envs, built and seeded the same way, so they
    produce the same episodes for the same actions, e.g. in another process.
    """
    with _quiet():
        envs = gym.vector.SyncVectorEnv(
            list(env_fns), autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
        )
    _apply_goal_mode(envs, goal_mode)
    return envs


@contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        # Meta-World declares float64 bounds on float32 spaces; gymnasium warns once per env.
        warnings.filterwarnings("ignore", message=".*precision lowered by casting to float32.*")
        yield


def _apply_goal_mode(envs: gym.vector.VectorEnv, goal_mode: str) -> None:
    """``fixed``: every env draws one goal now (from its own seeded RNG) and keeps it."""
    if goal_mode == "fixed":
        envs.call("sample_tasks")
        envs.call("toggle_sample_tasks_on_reset", False)


def _build(benchmark: Benchmark, config: EnvConfig, kwargs: dict) -> gym.vector.VectorEnv:
    if benchmark.name in _SUITES:
        return gym.make_vec(
            f"Meta-World/{benchmark.name.upper()}",
            vector_strategy=config.vector_strategy,
            **kwargs,
        )
    # Task sets and mt1: Meta-World's single-task builder per task, the one-hot sized by the
    # number of tasks, so that observations keep the layout (state, then one-hot) of MT10/MT50.
    env_fns = [
        partial(
            metaworld.make_mt_envs, name, env_id=env_id, num_tasks=benchmark.num_tasks, **kwargs
        )
        for env_id, name in enumerate(benchmark.task_names)
    ]
    vector_cls = (
        gym.vector.AsyncVectorEnv if config.vector_strategy == "async" else gym.vector.SyncVectorEnv
    )
    return vector_cls(env_fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
