"""``multihead``: an MLP trunk shared by all tasks, one output head per task (MH-SAC).

Two heads: a linear layer per task (``head_hidden: 0``; Meta-World+'s MTMHSAC) or one hidden
ReLU layer per task and then a linear one (``head_hidden: 400``; facebookresearch/mtrl's
multi-headed SAC, ``actor.py``/``critic.py``: a trunk of 4 layers of 400 with a ReLU after the
last, then per-task ``FeedForward`` heads of 2 layers of width 400). Every sample goes through
every task's hidden head layer and its own is kept, as in the reference: the heads cost K times
one head's work.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor
from torch.nn import functional as F

from mtrl.models._base import MLP, Dims, Model, ParallelLinear, PerTaskModule, TaskHeads
from mtrl.models.mlp import WeightAndBias, network_input, network_input_dim
from mtrl.surgery._base import Option, check_int


class MultiHeadModel(Model):
    """The trunk of [MLPModel][mtrl.models.mlp.MLPModel]; the output is a head per task, chosen
    by the one-hot (the heads are task-specific parameters)."""

    name = "multihead"
    options_spec: ClassVar[dict[str, Option]] = {
        "head_hidden": Option(
            0, check_int(0), "width of one hidden ReLU layer in each task's head; 0: linear heads"
        ),
    }

    def __init__(
        self, dims: Dims, hidden_dims: list[int], head_hidden: int = 0, task_input: bool = True
    ):
        super().__init__()
        self.task_input = task_input
        self.trunk = MLP(network_input_dim(dims, task_input), hidden_dims)
        self.heads: TaskHeads | HiddenTaskHeads = (
            HiddenTaskHeads(hidden_dims[-1], head_hidden, dims.out, dims.tasks)
            if head_hidden
            else TaskHeads(hidden_dims[-1], dims.out, dims.tasks)
        )

    def forward(self, state: Tensor, task: Tensor, action: Tensor | None = None) -> Tensor:
        return self.heads(self.trunk(network_input(state, task, action, self.task_input)), task)

    def layers(self) -> tuple[list[WeightAndBias], list[WeightAndBias]]:
        """(weight, bias) of the hidden layers (the trunk's, then the heads' hidden layer) and of
        the output layer, one ``[out, in]`` block per head, for
        ``mtrl.networks.init_by_scheme``."""
        hidden = [(x.weight, x.bias) for x in self.trunk.layers]
        if isinstance(self.heads, HiddenTaskHeads):
            heads = self.heads
            return [*hidden, (heads.hidden.weight, heads.hidden.bias)], [
                (heads.out.weight, heads.out.bias)
            ]
        linear, tasks = self.heads.linear, self.heads.num_tasks
        weight = linear.weight.view(tasks, -1, linear.weight.shape[-1])
        return hidden, [(weight, linear.bias.view(tasks, -1))]


class HiddenTaskHeads(PerTaskModule):
    """Per task: ``Linear(in, hidden)``, ReLU, ``Linear(hidden, out)``; the sample's task picks
    the output by its one-hot, so a head's parameters get gradient from its task's samples only.
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_tasks: int):
        super().__init__()
        self.hidden = ParallelLinear(num_tasks, in_dim, hidden)
        self.out = ParallelLinear(num_tasks, hidden, out_dim)

    def forward(self, x: Tensor, task: Tensor) -> Tensor:
        out = self.out.each(F.relu(self.hidden(x)))
        return (out * task.unsqueeze(-1)).sum(-2)
