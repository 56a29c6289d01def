"""``paco``: Sun et al. 2022, "PaCo: Parameter-Compositional Multi-Task Reinforcement Learning"
(NeurIPS), as in the authors' code (TToTMooN/paco-mtrl with its ALF fork: ``CompositionalFC``).

Every layer holds a shared set of ``num_param_sets`` parameter vectors ``Phi = [phi_1 .. phi_S]``;
task ``tau`` uses the layer ``theta_tau = Phi w_tau``, with ``w_tau`` its compositional vector (a
learned row per task: the authors' bias-free ``Linear(one-hot, S)`` drawn from N(0, 1)). A linear
layer is linear in its parameters, so ``(sum_s w_s W_s) x + sum_s w_s b_s = sum_s w_s (W_s x +
b_s)``: the S layer outputs are combined instead of the weights. The MLP has ReLU layers of
``hidden_dims`` and a compositional linear output layer.

Initialisation, as the authors' ALF fork (``CompositionalFC`` with ``kernel_identical_init``, the
actor and critic networks of its MT10 configuration): the S parameter sets start identical
(``identical_init``: one draw copied to all S; otherwise S independent draws of the same
distribution) and every bias at 0.

- actor, hidden layers: Xavier uniform, U(+-sqrt(6 / (fan_in + fan_out)));
- actor, output layer (the mean's and the log-std's rows alike): a normal of std
  0.3 / sqrt(fan_in) truncated at two of its standard deviations (ALF's variance scaling with
  gain 0.3, whose truncation keeps that std);
- Q network, hidden layers: U(+-1/sqrt(fan_in)); output layer: U(+-3e-3);
- compositional vectors: N(0, 1).

Unlike the authors' code, the actor and each Q network have their own compositional vectors,
each trained by its own loss (there, one ``w_tau`` serves both, trained with the sum of the
losses), and the paper's stabilisation of training (masking the loss of a task whose critic
loss explodes and resetting its ``w_tau``) is not implemented.
"""

from __future__ import annotations

import math
from itertools import pairwise
from typing import ClassVar

from torch import Tensor, nn
from torch.nn import functional as F

from mtrl.models._base import Dims, Model, ParallelLinear, TaskTable, initialise, with_action
from mtrl.surgery._base import Option, check_bool, check_int


class PaCoModel(Model):
    name = "paco"
    options_spec: ClassVar[dict[str, Option]] = {
        "num_param_sets": Option(5, check_int(1), "parameter sets S (5 MT10, 20 MT50)"),
        "identical_init": Option(True, check_bool, "start all S parameter sets identical"),
    }

    def __init__(
        self, dims: Dims, hidden_dims: list[int], num_param_sets: int, identical_init: bool
    ):
        super().__init__()
        widths = [dims.state + dims.action, *hidden_dims, dims.out]
        self.layers = nn.ModuleList(
            ParallelLinear(num_param_sets, a, b) for a, b in pairwise(widths)
        )
        *hidden, out = self.layers
        actor = dims.action == 0
        for layer in hidden:
            initialise(
                layer.weight, nn.init.xavier_uniform_ if actor else fan_in_uniform, identical_init
            )
        initialise(out.weight, truncated_normal_03 if actor else uniform_3e3, identical_init)
        for layer in self.layers:
            nn.init.zeros_(layer.bias)
        self.compositions = TaskTable(dims.tasks, num_param_sets, init="normal")

    def forward(self, state: Tensor, task: Tensor, action: Tensor | None = None) -> Tensor:
        weights = self.compositions(task).unsqueeze(-1)
        first, *rest = self.layers
        x = (weights * first(with_action(state, action))).sum(-2)
        for layer in rest:
            x = (weights * layer(F.relu(x))).sum(-2)
        return x


def fan_in_uniform(weight: Tensor) -> Tensor:
    """U(+-1/sqrt(fan_in)) for an ``[out, in]`` weight (ALF's critic default)."""
    bound = 1.0 / math.sqrt(weight.shape[1])
    return nn.init.uniform_(weight, -bound, bound)


def uniform_3e3(weight: Tensor) -> Tensor:
    return nn.init.uniform_(weight, -3e-3, 3e-3)


def truncated_normal_03(weight: Tensor) -> Tensor:
    """Std 0.3 / sqrt(fan_in) after truncation at +-2 sigma (ALF's projection layers)."""
    sigma = 0.3 / math.sqrt(weight.shape[1]) / TRUNCATED_STD
    return nn.init.trunc_normal_(weight, std=sigma, a=-2 * sigma, b=2 * sigma)


TRUNCATED_STD = 0.87962566
"""Standard deviation of a unit normal truncated at +-2."""
