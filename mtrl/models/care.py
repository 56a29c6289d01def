"""``care``: Sodhani et al. 2021, "Multi-Task Reinforcement Learning with Context-based
Representations" (ICML), as in the authors' code (facebookresearch/mtrl: the ``moe`` encoder in
``attention`` mode with the task encoder, the published CARE command of its baseline tutorial).

- Context ``z`` (``context_dim``): the task's embedding, then an MLP (two ReLU layers and a
  linear output). The paper embeds the task *descriptions* with a pretrained language model
  (RoBERTa) and keeps them fixed, projecting them with two ReLU layers first; give such vectors
  with ``agent.task_embeddings`` ([load_task_embeddings][mtrl.models.load_task_embeddings]).
  Without a file every task gets a learned embedding row instead (task-specific parameters).
- Attention over the encoders: ``softmax(MLP(z) / temperature)``. Its gradient reaches ``z``:
  the critic loss trains the context through the attention weights too. (The authors' config
  asks for ``should_detach_task-encoding``, but their code reads ``should_detach_task_encoding``;
  the misspelt key is never read, so nothing is detached in the runs their numbers come from.)
- Mixture of ``num_experts`` encoders of the state (each ``Linear, ReLU, Linear``, width
  ``encoder_dim``), averaged with the attention weights.
- The trunk (``hidden_dims``, ReLU, linear output) reads ``[encoding, z]`` (and the action, for
  a Q network: the action joins after the encoders, as in the authors' critic).

Initialisation, as the authors' ``weight_init`` (applied to the whole actor, the whole critic
and the task encoder): every linear layer (trunk, output, each expert's two layers, the
attention MLP, the context MLP, the projection of fixed task vectors) has Xavier-uniform
weights, U(+-sqrt(6 / (fan_in + fan_out))), each expert drawn on its own, and zero biases; a
learned task embedding row is N(0, 1) (``torch.nn.Embedding``'s default, which their
``weight_init`` leaves alone).

Unlike the authors' code, the actor and each Q network have their own encoders and context
network, each trained by its own loss (there, the actor's encoders are tied to the critic's and
the context is computed once, trained through the critic loss; the actor reads both detached).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mtrl.models._base import Dims, Model, ParallelLinear, TaskTable, initialise, mlp_with_head
from mtrl.surgery._base import Option, check_float, check_int


class CAREModel(Model):
    name = "care"
    options_spec: ClassVar[dict[str, Option]] = {
        "num_experts": Option(4, check_int(1), "encoders in the mixture (authors' MT10 run: 4)"),
        "encoder_dim": Option(50, check_int(1), "hidden and output width of every encoder"),
        "context_dim": Option(50, check_int(1), "width of the context z and of its networks"),
        "temperature": Option(1.0, check_float(0.0, lo_open=True), "softmax temperature"),
    }

    def __init__(
        self,
        dims: Dims,
        hidden_dims: list[int],
        num_experts: int,
        encoder_dim: int,
        context_dim: int,
        temperature: float,
        task_embeddings: Tensor | None = None,
    ):
        super().__init__()
        self.temperature = temperature
        self.embedding: nn.Module = (
            TaskTable(dims.tasks, context_dim, init="normal")
            if task_embeddings is None
            else FixedEmbedding(task_embeddings, context_dim)
        )
        self.context = mlp_with_head(context_dim, [context_dim] * 2, context_dim)
        self.attention = mlp_with_head(context_dim, [context_dim] * 2, num_experts)
        self.encoder_in = ParallelLinear(num_experts, dims.state, encoder_dim)
        self.encoder_out = ParallelLinear(num_experts, encoder_dim, encoder_dim)
        self.trunk = mlp_with_head(encoder_dim + context_dim + dims.action, hidden_dims, dims.out)
        xavier_and_zero_biases(self)

    def forward(self, state: Tensor, task: Tensor, action: Tensor | None = None) -> Tensor:
        z = self.context(F.relu(self.embedding(task)))
        weights = F.softmax(self.attention(z) / self.temperature, -1)
        encodings = self.encoder_out.each(F.relu(self.encoder_in(state)))
        encoding = (weights.unsqueeze(-1) * encodings).sum(-2)
        inputs = [encoding, z] if action is None else [encoding, z, action]
        return self.trunk(torch.cat(inputs, -1))


def xavier_and_zero_biases(module: nn.Module) -> None:
    """The authors' ``weight_init`` on every linear layer below ``module``: Xavier-uniform
    weights (each expert of a ``ParallelLinear`` on its own), zero biases."""
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, ParallelLinear)):
            initialise(layer.weight, nn.init.xavier_uniform_)
            nn.init.zeros_(layer.bias)


class FixedEmbedding(nn.Module):
    """Fixed task vectors (a buffer, saved with the network), projected to ``dim`` by two ReLU
    layers of widths ``2 dim`` and ``dim`` as in the authors' code."""

    def __init__(self, vectors: Tensor, dim: int):
        super().__init__()
        self.register_buffer("vectors", vectors.detach().to(torch.float32).clone())
        self.projection = nn.Sequential(
            nn.Linear(vectors.shape[1], 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim)
        )

    def forward(self, task: Tensor) -> Tensor:
        return F.relu(self.projection(F.relu(task @ self.vectors)))


def load_task_embeddings(path: str | Path, task_names: list[str] | tuple[str, ...]) -> Tensor:
    """The ``[K, D]`` rows of a JSON file ``{"task-name": [D numbers], ...}`` in the run's task
    order. Extra tasks in the file are ignored; a missing task, vectors of different lengths or
    non-numbers are a ``ValueError`` naming the problem."""
    where = f"agent.task_embeddings '{path}'"
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise ValueError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a JSON object mapping task names to lists of numbers")
    missing = [name for name in task_names if name not in data]
    if missing:
        raise ValueError(
            f"{where} has no vector for {', '.join(missing)}; it has: "
            f"{', '.join(sorted(data)) or 'no task'}"
        )
    rows = []
    for name in task_names:
        row = data[name]
        if (
            not isinstance(row, list)
            or not row
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row)
            or not all(math.isfinite(v) for v in row)
        ):
            raise ValueError(f"{where}: the vector of {name} must be a non-empty list of numbers")
        rows.append(row)
    lengths = {name: len(row) for name, row in zip(task_names, rows, strict=True)}
    if len(set(lengths.values())) > 1:
        sizes = ", ".join(f"{name}: {n}" for name, n in lengths.items())
        raise ValueError(f"{where}: the vectors have different lengths ({sizes})")
    return torch.tensor(rows, dtype=torch.float32)
