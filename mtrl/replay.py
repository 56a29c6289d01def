"""Per-task replay buffers on the training device, sampled in balanced ``[K, B/K, ...]`` batches."""

from __future__ import annotations

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

    def sample(self, per_task: int) -> Batch:
        """``per_task`` transitions of every task, uniformly with replacement from its buffer."""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        index = torch.randint(
            self.size, (self.num_tasks, per_task), generator=self.generator, device=self.device
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
        )
