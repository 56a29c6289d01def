"""``soft_modularization``: Yang et al. 2020, "Multi-Task Reinforcement Learning with Soft
Modularization" (NeurIPS), as in the authors' code (``ModularGatedCascadeCondNet``, RchalYang/
Soft-Module).

A base network of L layers of n modules; a routing network turns the task and the state into
soft connection weights between the modules of consecutive layers, per sample:

- observation embedding ``f(s)`` (``hidden_dims``: ReLU layers, the last one linear, width D) and
  task embedding ``h(z)`` (a learned row per task, width D);
- routing trunk (``routing_layers`` x ``routing_hidden``) over ``ReLU(f(s) * h(z))``, giving
  ``e``; then for every layer l the n x n probabilities
  ``p^l = softmax_j(W_d^l ReLU(W_u^l [p^1..p^{l-1}] * e))`` (the first without the ``W_u``
  term), normalised over the source modules j and conditioned on *all* earlier layers'
  probabilities, as in the authors' code; the last layer's n module outputs are averaged with
  one more softmax vector;
- module layers: ``out_i^{l+1} = module_i^{l+1}(ReLU(sum_j p^l_ij out_j^l))``, the first layer
  reading ``ReLU(f(s))``; the output layer reads ``ReLU(sum_j p_j out_j^L)``.

The task embedding is the authors' ``Linear(one-hot, D)`` without its bias: with a one-hot input
the bias only adds the same vector to every row, so the rows alone express the same functions and
the embedding is purely task-specific (gradient surgery never mixes it). The paper's loss
re-weighting by the temperatures is a loss balancer, not part of the network; batch norm (off in
the authors' Meta-World configs) is not offered.

Initialisation, as the authors' ``torchrl/networks/init.py`` (``basic_init`` and
``uniform_init``):

- every bias is 0.1, and every weight U(+-1/sqrt(out_features)): the observation MLP, the
  routing trunk, the conditioning layers W_u, every module of every layer (each drawn on its
  own). Their ``_fanin_init`` reads the first dimension of a ``[out, in]`` weight, i.e. the
  output width; that is what their runs used, so it is kept.
- the output layer and the routing network's output layers (W_d of every layer and the last
  layer's weights): weights and biases U(+-3e-3).
- the task embedding: U(+-1/sqrt(D)) plus 0.1 in every entry (the authors' weight, drawn as
  above, with their bias of 0.1 folded into the rows).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mtrl.models._base import (
    Dims,
    Model,
    ParallelLinear,
    TaskTable,
    initialise,
    mlp_with_head,
    with_action,
)
from mtrl.surgery._base import Option, check_int


class SoftModularizationModel(Model):
    name = "soft_modularization"
    options_spec: ClassVar[dict[str, Option]] = {
        "num_layers": Option(2, check_int(2), "layers of modules L (paper code: 2 MT10, 4 MT50)"),
        "num_modules": Option(2, check_int(1), "modules per layer n (2 MT10, 4 MT50)"),
        "module_hidden": Option(256, check_int(1), "output width of every module (256, 128)"),
        "routing_layers": Option(2, check_int(1), "layers of the routing trunk"),
        "routing_hidden": Option(256, check_int(1), "width of the routing network"),
    }

    def __init__(
        self,
        dims: Dims,
        hidden_dims: list[int],
        num_layers: int,
        num_modules: int,
        module_hidden: int,
        routing_layers: int,
        routing_hidden: int,
    ):
        super().__init__()
        embedding = hidden_dims[-1]
        squared = num_modules * num_modules
        self.num_modules = num_modules
        self.observation = mlp_with_head(dims.state + dims.action, hidden_dims[:-1], embedding)
        self.task_embedding = TaskTable(dims.tasks, embedding)
        self.routing_trunk = mlp_with_head(
            embedding, [routing_hidden] * (routing_layers - 1), routing_hidden
        )
        self.route_first = nn.Linear(routing_hidden, squared)
        self.route_conditions = nn.ModuleList(
            nn.Linear(layer * squared, routing_hidden) for layer in range(1, num_layers)
        )
        self.route_middle = nn.ModuleList(
            nn.Linear(routing_hidden, squared) for _ in range(num_layers - 2)
        )
        self.route_last = nn.Linear(routing_hidden, num_modules)
        self.first_layer = ParallelLinear(num_modules, embedding, module_hidden)
        self.module_layers = nn.ModuleList(
            ParallelLinear(num_modules, module_hidden, module_hidden) for _ in range(num_layers - 1)
        )
        self.head = nn.Linear(module_hidden, dims.out)
        self._initialise()

    def _initialise(self) -> None:
        """The authors' ``basic_init`` everywhere, ``uniform_init`` on the output layers, and
        the folded task embedding (see the module's docstring)."""
        for layer in self.modules():
            if isinstance(layer, (nn.Linear, ParallelLinear)):
                initialise(layer.weight, basic_weight)
                nn.init.constant_(layer.bias, 0.1)
        for layer in [self.route_first, *self.route_middle, self.route_last, self.head]:
            nn.init.uniform_(layer.weight, -3e-3, 3e-3)
            nn.init.uniform_(layer.bias, -3e-3, 3e-3)
        table = self.task_embedding.table  # [K, D]: the transpose of their [D, K] weight
        with torch.no_grad():
            basic_weight(table.T)
            table.add_(0.1)

    def forward(self, state: Tensor, task: Tensor, action: Tensor | None = None) -> Tensor:
        features = self.observation(with_action(state, action))
        routing = self.routing_trunk(F.relu(self.task_embedding(task) * features))
        transitions, last = self._routing(routing)
        outputs = self.first_layer(F.relu(features))
        for probs, layer in zip(transitions, self.module_layers, strict=True):
            outputs = layer.each(F.relu(probs @ outputs))
        return self.head(F.relu((last.unsqueeze(-1) * outputs).sum(-2)))

    def _routing(self, routing: Tensor) -> tuple[list[Tensor], Tensor]:
        """The ``[..., n, n]`` probabilities between consecutive layers (row i: target module,
        normalised over the source modules) and the ``[..., n]`` weights of the last layer."""
        shape = (self.num_modules, self.num_modules)
        transitions = [F.softmax(self.route_first(F.relu(routing)).unflatten(-1, shape), -1)]
        for condition, route in zip(self.route_conditions[:-1], self.route_middle, strict=True):
            gate = F.relu(condition(self._flat(transitions)) * routing)
            transitions.append(F.softmax(route(gate).unflatten(-1, shape), -1))
        gate = F.relu(self.route_conditions[-1](self._flat(transitions)) * routing)
        return transitions, F.softmax(self.route_last(gate), -1)

    @staticmethod
    def _flat(transitions: list[Tensor]) -> Tensor:
        return torch.cat([p.flatten(-2) for p in transitions], -1)


def basic_weight(weight: Tensor) -> Tensor:
    """U(+-1/sqrt(weight.shape[0])) for an ``[out, in]`` weight: the authors' ``_fanin_init``."""
    bound = weight.shape[0] ** -0.5
    return nn.init.uniform_(weight, -bound, bound)
