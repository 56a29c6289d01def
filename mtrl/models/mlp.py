"""``mlp``: one network for all tasks, conditioned on the task one-hot in its input (MT-SAC).

Without the one-hot (``agent.task_input: false``) it is the network of the mtrl family's MT-SAC,
PCGrad, CAGrad and FAMO runs (identity encoder, no task encoder): the state alone.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mtrl.models._base import MLP, Dims, Model, with_action


class MLPModel(Model):
    """ReLU layers of ``hidden_dims`` over ``[state, action, one-hot]`` (``[state, action]``
    without the task input), then a linear output."""

    name = "mlp"

    def __init__(self, dims: Dims, hidden_dims: list[int], task_input: bool = True):
        super().__init__()
        self.task_input = task_input
        self.trunk = MLP(network_input_dim(dims, task_input), hidden_dims)
        self.head = nn.Linear(hidden_dims[-1], dims.out)

    def forward(self, state: Tensor, task: Tensor, action: Tensor | None = None) -> Tensor:
        return self.head(self.trunk(network_input(state, task, action, self.task_input)))

    def layers(self) -> tuple[list[WeightAndBias], list[WeightAndBias]]:
        """(weight, bias) of the hidden layers and of the output layer, for
        ``mtrl.networks.init_by_scheme``."""
        return [(x.weight, x.bias) for x in self.trunk.layers], [(self.head.weight, self.head.bias)]


WeightAndBias = tuple[Tensor, Tensor]
"""A layer's weight ``[..., out, in]`` (one block per head for per-task layers) and its bias."""


def network_input_dim(dims: Dims, task_input: bool) -> int:
    return dims.state + dims.action + (dims.tasks if task_input else 0)


def network_input(state: Tensor, task: Tensor, action: Tensor | None, task_input: bool) -> Tensor:
    """``[state, action, one-hot]``, or ``[state, action]`` without the task input."""
    x = with_action(state, action)
    return torch.cat([x, task], -1) if task_input else x
