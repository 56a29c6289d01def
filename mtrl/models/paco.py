"""``paco``: Sun et al. 2022, "PaCo: Parameter-Compositional Multi-Task Reinforcement Learning"
(NeurIPS), as in the authors' code (TToTMooN/paco-mtrl with its ALF fork: ``CompositionalFC``).

Every layer holds a shared set of ``num_param_sets`` parameter vectors ``Phi = [phi_1 .. phi_S]``;
task ``tau`` uses the layer ``theta_tau = Phi w_tau``, with ``w_tau`` its compositional vector (a
learned row per task: the authors' bias-free ``Linear(one-hot, S)`` drawn from N(0, 1)). A linear
layer is linear in its parameters, so ``(sum_s w_s W_s) x + sum_s w_s b_s = sum_s w_s (W_s x +
b_s)``: the S layer outputs are combined instead of the weights. The MLP has ReLU layers of
``hidden_dims`` and a compositional linear output layer. As in the authors' configuration the S
parameter sets start identical (``identical_init``) and the biases at zero.

Unlike the authors' code, the actor and each Q network have their own compositional vectors,
each trained by its own loss (there, one ``w_tau`` serves both, trained with the sum of the
losses), and the paper's stabilisation of training (masking the loss of a task whose critic
loss explodes and resetting its ``w_tau``) is not implemented.
"""

from __future__ import annotations

from itertools import pairwise
from typing import ClassVar

from torch import Tensor, nn
from torch.nn import functional as F

from mtrl.models._base import Dims, Model, ParallelLinear, TaskTable, with_action
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
            ParallelLinear(num_param_sets, a, b, identical=identical_init)
            for a, b in pairwise(widths)
        )
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
