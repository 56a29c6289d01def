"""``mlp``: one network for all tasks, conditioned on the task one-hot in its input (MT-SAC)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mtrl.models._base import MLP, Dims, Model, with_action


class MLPModel(Model):
    """ReLU layers of ``hidden_dims`` over ``[state, action, one-hot]``, then a linear output."""

    name = "mlp"

    def __init__(self, dims: Dims, hidden_dims: list[int]):
        super().__init__()
        self.trunk = MLP(dims.state + dims.action + dims.tasks, hidden_dims)
        self.head = nn.Linear(hidden_dims[-1], dims.out)

    def forward(self, state: Tensor, task: Tensor, action: Tensor | None = None) -> Tensor:
        return self.head(self.trunk(torch.cat([with_action(state, action), task], -1)))
