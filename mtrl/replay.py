"""Per-task replay buffers on the training device, sampled in ``[K, n, ...]`` batches.

Two ways to draw a batch (``train.replay_sampling``): ``balanced``, n transitions of every task
(mtrl's default), or ``uniform``, B transitions drawn uniformly from all stored transitions as
from one pooled FIFO buffer (the mtrl family's ``replay_buffer.py``). The K rings are filled in
lockstep, one transition per task per vector step, so with a capacity that is a multiple of K
they hold exactly what one pooled buffer of that capacity holds; a uniform draw over the pool
picks each task with probability 1/K and then one of its transitions uniformly, so it is drawn
here from the rings, task counts first.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
import torch

from mtrl.staging import host_buffer


class Batch(NamedTuple):
    """Transitions shaped ``[K, n, ...]``: row k holds n samples of task k."""

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor
    """1.0 where the episode truly ended; the critic target does not bootstrap there."""
    truncated: torch.Tensor
    """1.0 where the time limit cut the episode; the target still bootstraps there."""
    drawn: torch.Tensor
    """1.0 for a drawn transition, 0.0 for a padding slot (all ones in a balanced batch). A
    task's loss is the mean over its drawn transitions, the batch loss the mean over all of them
    ([task_means][mtrl.replay.task_means], [batch_mean][mtrl.replay.batch_mean])."""


def task_means(values: torch.Tensor, drawn: torch.Tensor) -> torch.Tensor:
    """Each task's mean of ``values`` over its drawn transitions (``[..., n] -> [...]``); 0 for a
    task without any (uniform sampling can draw none of a task). On a balanced batch it is
    ``values.mean(-1)``, bit for bit."""
    return (values * drawn).sum(-1) / drawn.sum(-1).clamp_min(1.0)


def batch_mean(task_losses: torch.Tensor, drawn: torch.Tensor) -> torch.Tensor:
    """The mean over all drawn transitions of a batch from its K task means: each task weighted
    by its number of draws (the mean of the K for a balanced batch)."""
    counts = drawn.sum(-1)
    return (task_losses * counts).sum() / counts.sum()


class MultiTaskReplay:
    """K ring buffers of equal capacity, one per task, filled in lockstep.

    The vector env yields exactly one transition per task per step, so one write position serves
    all K buffers. A transition is one row of a ``[K, capacity, D]`` tensor on ``device`` (obs,
    action, reward, next obs, terminated, truncated side by side): adding is one host-to-device
    copy per step (from a pinned buffer on CUDA, which the host does not wait for) and sampling
    one gather, and neither waits for the device.
    """

    def __init__(
        self,
        num_tasks: int,
        capacity_per_task: int,
        obs_dim: int,
        action_dim: int,
        device: torch.device | str = "cpu",
        seed: int = 0,
    ):
        if capacity_per_task <= 0:
            raise ValueError(f"capacity_per_task must be > 0, got {capacity_per_task}")
        self.num_tasks = num_tasks
        self.capacity = capacity_per_task
        self.device = torch.device(device)
        self._widths = (obs_dim, action_dim, 1, obs_dim, 1, 1)
        self.data = torch.zeros(
            (num_tasks, capacity_per_task, sum(self._widths)), dtype=torch.float32, device=device
        )
        self.position = 0
        self.size = 0
        self.generator = torch.Generator(self.device)
        self.generator.manual_seed(seed)

    def add(
        self,
        obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
    ) -> None:
        """Store one transition per task (arrays with leading dim K).

        ``next_obs`` must be the observation the transition really ended in: at a time limit
        that is the final observation of the episode, not the first of the next one.
        """
        columns = (obs, action, reward, next_obs, terminated, truncated)
        row = host_buffer((self.num_tasks, self.data.shape[-1]), self.device)
        np.concatenate(
            [np.asarray(c, dtype=np.float32).reshape(self.num_tasks, -1) for c in columns],
            axis=1,
            out=row.numpy(),
        )
        self.data[:, self.position].copy_(row, non_blocking=True)
        self.position = (self.position + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, per_task: int, generator: torch.Generator | None = None) -> Batch:
        """``per_task`` transitions of every task, uniformly with replacement from its buffer
        (drawn from ``generator``, by default the replay's own)."""
        drawn = torch.ones(self.num_tasks, per_task, device=self.device)
        return self._gather(per_task, drawn, generator or self.generator)

    def sample_uniform(self, total: int) -> Batch:
        """``total`` transitions drawn uniformly with replacement from all stored transitions.

        The number of draws of each task is multinomial (``total`` draws, probability 1/K each);
        row k holds [uniform_slots][mtrl.replay.uniform_slots] independent uniform draws from
        task k, of which the first ``count_k`` are drawn (``Batch.drawn``). Shapes are fixed and
        nothing waits for the device. A task drawn more often than the slots (probability below
        1e-12 per batch) keeps only that many draws.
        """
        slots = uniform_slots(total, self.num_tasks)
        tasks = torch.randint(
            self.num_tasks, (total,), generator=self.generator, device=self.device
        )
        counts = torch.zeros(self.num_tasks, device=self.device).index_add_(
            0, tasks, torch.ones(total, device=self.device)
        )
        drawn = torch.arange(slots, device=self.device) < counts.unsqueeze(-1)
        return self._gather(slots, drawn.float(), self.generator)

    def _gather(self, per_task: int, drawn: torch.Tensor, generator: torch.Generator) -> Batch:
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        index = torch.randint(
            self.size, (self.num_tasks, per_task), generator=generator, device=self.device
        )
        rows = self.data.gather(1, index.unsqueeze(-1).expand(-1, -1, self.data.shape[-1]))
        obs, action, reward, next_obs, terminated, truncated = rows.split(self._widths, dim=-1)
        return Batch(
            obs,
            action,
            reward.squeeze(-1),
            next_obs,
            terminated.squeeze(-1),
            truncated.squeeze(-1),
            drawn,
        )


OVERFLOW_PROBABILITY = 1e-12
"""At most this probability per batch that some task is drawn more often than the slots of
[uniform_slots][mtrl.replay.uniform_slots] (over a 2M-update run: about 2e-6)."""


@functools.cache
def uniform_slots(total: int, num_tasks: int) -> int:
    """Slots per task for a uniform batch: the smallest n with P(some task drawn more than n
    times) <= [OVERFLOW_PROBABILITY][mtrl.replay.OVERFLOW_PROBABILITY], by the union bound over
    the tasks on the binomial tail Bin(total, 1/K); 213 for 1280 draws over 10 tasks, 71 over
    50."""
    if num_tasks == 1:
        return total
    p = 1.0 / num_tasks
    log_pmf = [
        math.lgamma(total + 1) - math.lgamma(x + 1) - math.lgamma(total - x + 1)
        + x * math.log(p) + (total - x) * math.log1p(-p)
        for x in range(total + 1)
    ]  # fmt: skip
    tail = 0.0  # P(X > n), accumulated from the top
    for n in range(total, -1, -1):
        if num_tasks * tail > OVERFLOW_PROBABILITY:
            return min(n + 1, total)
        tail += math.exp(log_pmf[n])
    return total
