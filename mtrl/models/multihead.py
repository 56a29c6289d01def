"""``multihead``: the one-hot MLP trunk shared by all tasks, one output head per task (MH-SAC)."""

from __future__ import annotations

import torch
from torch import Tensor

from mtrl.models._base import MLP, Dims, Model, TaskHeads, with_action


class MultiHeadModel(Model):
    """The trunk of [MLPModel][mtrl.models.mlp.MLPModel]; the output layer is one linear head per
    task, chosen by the one-hot (the heads are task-specific parameters)."""

    name = "multihead"

    def __init__(self, dims: Dims, hidden_dims: list[int]):
        super().__init__()
        self.trunk = MLP(dims.state + dims.action + dims.tasks, hidden_dims)
        self.heads = TaskHeads(hidden_dims[-1], dims.out, dims.tasks)

    def forward(self, state: Tensor, task: Tensor, action: Tensor | None = None) -> Tensor:
        return self.heads(self.trunk(torch.cat([with_action(state, action), task], -1)), task)
