"""What every model shares: the interface, the per-task building blocks, the shared layers.

A model maps ``(state, task, action)`` to ``[..., out]``: ``state`` is the observation without
the task one-hot, ``task`` the one-hot (Meta-World appends it to every observation), ``action``
the action for a Q network and ``None`` for the actor. Models work on any leading shape
(``[K, n, ...]`` batches, one task's ``[n, ...]`` slice inside ``torch.func.vmap``, a single
observation) because a sample's task is selected by products with its one-hot, never by indexing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mtrl.surgery._base import Option


@dataclass(frozen=True)
class Dims:
    """The sizes a network is built for."""

    state: int
    """Observation without the task one-hot."""
    action: int
    """Action input: 0 for the actor, ``|A|`` for a Q network."""
    out: int
    """``2 |A|`` for the actor (mean and log-std), 1 for a Q network."""
    tasks: int
    """K, the length of the one-hot."""


class Model(nn.Module):
    """A task-conditioned network; subclasses set ``name`` and ``options_spec``
    (``agent.model_options``, checked and completed with defaults before construction) and
    register their layers in forward order (GradNorm finds its last shared layer that way)."""

    name: ClassVar[str]
    options_spec: ClassVar[dict[str, Option]] = {}

    def forward(self, state: Tensor, task: Tensor, action: Tensor | None = None) -> Tensor:
        raise NotImplementedError


def with_action(state: Tensor, action: Tensor | None) -> Tensor:
    """The network input of the actor (the state) or of a Q network (state and action)."""
    return state if action is None else torch.cat([state, action], -1)


class MLP(nn.Module):
    """Hidden layers only, each Linear then ReLU; the output layer is added by the caller.

    The layers are applied with ``F.linear`` in one loop rather than as a ``Sequential`` of
    modules: acting runs once per env step on a tiny batch, where module-call overhead measured
    as large as the arithmetic (about 120 of 260 microseconds for the 3 x 400 actor on a CPU).
    """

    def __init__(self, in_dim: int, hidden_dims: list[int]):
        super().__init__()
        widths = [in_dim, *hidden_dims]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(widths))

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = F.relu(F.linear(x, layer.weight, layer.bias))
        return x


def mlp_with_head(in_dim: int, hidden_dims: list[int], out_dim: int) -> nn.Sequential:
    """ReLU hidden layers, then a linear output layer (no activation on the output)."""
    hidden = MLP(in_dim, hidden_dims)
    return nn.Sequential(hidden, nn.Linear(hidden_dims[-1] if hidden_dims else in_dim, out_dim))


class ParallelLinear(nn.Module):
    """``n`` independent linear layers (experts, modules, parameter sets) applied in one call.

    ``weight`` is ``[n, out, in]`` and ``bias`` ``[n, out]``; each of the n layers is initialised
    like an ``nn.Linear`` of its own (models that follow other schemes re-initialise them).
    """

    def __init__(self, n: int, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, out_dim, in_dim))
        self.bias = nn.Parameter(torch.empty(n, out_dim))
        with torch.no_grad():
            for i in range(n):
                nn.init.kaiming_uniform_(self.weight[i], a=math.sqrt(5))
                bound = 1 / math.sqrt(in_dim)
                nn.init.uniform_(self.bias[i], -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        """One input for all: ``[..., in] -> [..., n, out]`` (a single matrix product)."""
        n, out_dim, in_dim = self.weight.shape
        y = F.linear(x, self.weight.reshape(n * out_dim, in_dim), self.bias.reshape(-1))
        return y.unflatten(-1, (n, out_dim))

    def each(self, x: Tensor) -> Tensor:
        """One input per layer: ``[..., n, in] -> [..., n, out]``."""
        return torch.einsum("...ni,noi->...no", x, self.weight) + self.bias


@torch.no_grad()
def initialise(weight: Tensor, scheme: Callable[[Tensor], object], identical: bool = False) -> None:
    """Apply a 2-D initialiser (an ``nn.init`` function) to an ``[out, in]`` weight, or to each
    ``[out, in]`` slice of a stacked ``[n, out, in]`` weight: independently, or once and copied
    to every slice (``identical``). The schemes of the authors' code live in each model."""
    if weight.dim() == 2:
        scheme(weight)
        return
    for i in range(1 if identical else len(weight)):
        scheme(weight[i])
    if identical:
        weight.copy_(weight[:1].expand_as(weight))


class PerTaskModule(nn.Module):
    """A module whose parameters are partitioned by task: each task's samples touch only its own
    part, the task's block of K equal blocks along the first dimension (``param.view(K, -1)[k]``).
    [task_specific_parameters][mtrl.models.task_specific_parameters] finds them, so that gradient
    surgery never mixes tasks there.
    """


class TaskTable(PerTaskModule):
    """One learned row per task (an embedding, a weight vector), selected by the one-hot.

    ``task @ table`` picks the row exactly and sends gradient to that row only, inside vmap too.
    """

    def __init__(self, num_tasks: int, dim: int, init: str = "linear"):
        super().__init__()
        self.table = nn.Parameter(torch.empty(num_tasks, dim))
        if init == "linear":  # as an nn.Linear(K, dim) on the one-hot would start
            nn.init.uniform_(self.table, -1 / math.sqrt(num_tasks), 1 / math.sqrt(num_tasks))
        elif init == "xavier":
            nn.init.xavier_uniform_(self.table)
        elif init == "normal":
            nn.init.normal_(self.table)
        else:
            raise ValueError(f"unknown init '{init}'")

    def forward(self, task: Tensor) -> Tensor:
        return task @ self.table


class TaskHeads(PerTaskModule):
    """One linear output head per task, chosen per sample by the task one-hot.

    All heads are one wide layer (``hidden -> K * out``) whose outputs are masked by the one-hot
    and summed, which keeps the module vmap-friendly and costs one matmul. A head's parameters
    receive gradient only from its own task's samples.
    """

    def __init__(self, in_dim: int, out_dim: int, num_tasks: int):
        super().__init__()
        self.num_tasks, self.out_dim = num_tasks, out_dim
        self.linear = nn.Linear(in_dim, num_tasks * out_dim)

    def forward(self, hidden: Tensor, task: Tensor) -> Tensor:
        out = self.linear(hidden).unflatten(-1, (self.num_tasks, self.out_dim))
        return (out * task.unsqueeze(-1)).sum(-2)


def task_specific_parameters(module: nn.Module) -> set[str]:
    """Names of the parameters that only one task's samples touch (heads, task tables,
    temperatures)."""
    return {
        f"{prefix}.{name}" if prefix else name
        for prefix, sub in module.named_modules()
        if isinstance(sub, PerTaskModule)
        for name, _ in sub.named_parameters()
    }
