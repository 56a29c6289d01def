"""Success-rate evaluation with deterministic actions, through Meta-World's own evaluation loop.

``metaworld.evaluation.evaluation`` switches the envs to terminate on success, so an episode
ends at its first successful step and counts as a success; an episode that reaches the time
limit without one counts as a failure. That is the "success at any step" rule. Returns are
summed up to that end, so a solved episode's return is shorter than a full horizon's.

An evaluation can be abandoned between two of its vector steps (``stop``): the trainer does so
on a preemption signal, and runs the whole evaluation again on resume.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import gymnasium as gym
import numpy as np
from metaworld.evaluation import evaluation as metaworld_evaluation


class Policy(Protocol):
    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray: ...


@dataclass(frozen=True)
class EvalResult:
    success: dict[str, float]
    """Per task: the share of its episodes that succeeded."""
    mean_return: dict[str, float]
    episodes: int
    """Episodes per task."""

    @property
    def mean_success(self) -> float:
        return float(np.mean(list(self.success.values())))

    def metrics(self) -> dict[str, float]:
        """Flat ``eval/...`` keys as written to metrics.jsonl and tensorboard."""
        out = {"eval/success": self.mean_success}
        out.update({f"eval/success/{task}": rate for task, rate in self.success.items()})
        out["eval/return"] = float(np.mean(list(self.mean_return.values())))
        out.update({f"eval/return/{task}": ret for task, ret in self.mean_return.items()})
        out["eval/episodes"] = float(self.episodes)
        return out


class EvaluationStopped(Exception):
    """``stop()`` said yes during an evaluation: its episodes were abandoned, it has no result."""


class _DeterministicPolicy:
    """A policy seen through Meta-World's ``evaluation.Agent`` protocol; asked for the actions
    of every vector step, it raises :class:`EvaluationStopped` instead once ``stop()`` is true."""

    def __init__(self, policy: Policy, stop: Callable[[], bool] | None = None):
        self.policy = policy
        self.stop = stop

    def eval_action(self, observations: np.ndarray) -> np.ndarray:
        if self.stop is not None and self.stop():
            raise EvaluationStopped
        return self.policy.act(observations, deterministic=True)

    def reset(self, env_mask: np.ndarray) -> None:
        """The policy is memoryless: nothing to reset."""


def evaluate(
    policy: Policy,
    envs: gym.vector.VectorEnv,
    task_names: tuple[str, ...],
    episodes: int,
    stop: Callable[[], bool] | None = None,
) -> EvalResult:
    """Run ``episodes`` deterministic episodes per task and report success rates in task order.

    ``stop``: asked before every vector step; once it returns true the evaluation ends with
    :class:`EvaluationStopped` (the envs are then mid-episode: reset them before reuse).
    """
    if episodes <= 0:
        raise ValueError(f"episodes must be > 0, got {episodes}")
    agent = _DeterministicPolicy(policy, stop)
    _, _, success, returns = metaworld_evaluation(agent, envs, episodes)
    return EvalResult(
        success={task: float(success[task]) for task in task_names},
        mean_return={task: float(np.mean(returns[task])) for task in task_names},
        episodes=episodes,
    )
