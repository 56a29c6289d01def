"""``moore``: Hendawy et al. 2024, "Multi-Task Reinforcement Learning with Mixture of Orthogonal
Experts" (ICLR), as in the authors' code (AhmedMagdyHendawy/MOORE, ``MetaworldSACMixtureMH*``).

- ``num_experts`` experts, each an MLP of ``hidden_dims`` over the state (and the action, for a
  Q network) whose last layer is linear: k representations of width ``hidden_dims[-1]``;
- Gram-Schmidt over the k representations of every sample: an orthonormal basis of their span;
- the task's weights over the experts (a learned row per task: the authors' bias-free
  ``Linear(one-hot, k)``) combine the basis vectors, then ``tanh``;
- one linear output head per task (the paper's multi-head output).

The task weights and the heads are task-specific parameters; the experts are shared.

Initialisation, as in the authors' code:

- experts: ``torch.nn.Linear``'s default, each expert and layer drawn on its own: weights
  U(+-1/sqrt(fan_in)), biases U(+-1/sqrt(fan_in)). The authors' networks set Xavier weights
  first, but their ``ParallelLayer`` calls ``reset_parameters()`` on the layers before copying
  them into each expert, which restores the default; the runs behind their numbers had it.
- task weights: Xavier uniform, U(+-sqrt(6 / (K + k))).
- output heads: Xavier-uniform weights, U(+-sqrt(6 / (hidden_dims[-1] + out))) per head, and
  ``torch.nn.Linear``'s default biases, U(+-1/sqrt(hidden_dims[-1])).
"""

from __future__ import annotations

from itertools import pairwise
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mtrl.models._base import (
    Dims,
    Model,
    ParallelLinear,
    TaskHeads,
    TaskTable,
    initialise,
    with_action,
)
from mtrl.surgery._base import Option, check_int

EPS = 1e-12
"""Added under the square root of a norm: a vector of a zero-norm residual stays zero (instead of
0/0) and its gradient stays finite."""


class MOOREModel(Model):
    name = "moore"
    options_spec: ClassVar[dict[str, Option]] = {
        "num_experts": Option(4, check_int(1), "experts k (paper: 4 MT10, 6 MT50)"),
    }

    def __init__(self, dims: Dims, hidden_dims: list[int], num_experts: int):
        super().__init__()
        widths = [dims.state + dims.action, *hidden_dims]
        self.experts = nn.ModuleList(ParallelLinear(num_experts, a, b) for a, b in pairwise(widths))
        self.task_weights = TaskTable(dims.tasks, num_experts, init="xavier")
        self.heads = TaskHeads(hidden_dims[-1], dims.out, dims.tasks)
        # The K heads are the [out, hidden] blocks of one wide layer: Xavier on each block.
        initialise(self.heads.linear.weight.view(dims.tasks, dims.out, -1), nn.init.xavier_uniform_)

    def forward(self, state: Tensor, task: Tensor, action: Tensor | None = None) -> Tensor:
        first, *rest = self.experts
        x = first(with_action(state, action))
        for layer in rest:
            x = layer.each(F.relu(x))
        basis = gram_schmidt(x)
        features = torch.tanh((self.task_weights(task).unsqueeze(-1) * basis).sum(-2))
        return self.heads(features, task)


def gram_schmidt(vectors: Tensor) -> Tensor:
    """Orthonormalise the k vectors ``[..., k, d]`` of every sample, in order: vector i minus its
    projections on the first i-1 basis vectors, normalised (modified Gram-Schmidt, the same basis
    as the classical one in exact arithmetic, more accurate in floating point)."""
    basis: list[Tensor] = []
    for vector in vectors.unbind(-2):
        for unit in basis:
            vector = vector - (vector * unit).sum(-1, keepdim=True) * unit
        basis.append(vector * torch.rsqrt((vector * vector).sum(-1, keepdim=True) + EPS))
    return torch.stack(basis, -2)
