"""Meta-World benchmarks as gymnasium vector envs: one env per task, one-hot task id in the obs.

Built with the ``metaworld`` package's own builders (``gym.make_vec("Meta-World/MT10", ...)``), so
goals, wrappers and seeding follow the package's standard multi-task setting.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING

import gymnasium as gym
import metaworld

from mtrl.benchmarks import Benchmark, parse_benchmark

if TYPE_CHECKING:
    from mtrl.config import EnvConfig

__all__ = ["Benchmark", "make_envs", "parse_benchmark", "rebuild_envs"]
"""``Benchmark`` and ``parse_benchmark`` live in :mod:`mtrl.benchmarks`; importable from here too,
beside the functions that take a parsed benchmark (the training loop imports them from here)."""


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
    if benchmark.is_suite:
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
