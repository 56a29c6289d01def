"""A component's gradients from its K per-task losses: of the batch mean, or one row per task.

Two implementations with one contract. The eager one is the reference: ``torch.autograd`` for the
batch mean and one vmapped pass ([per_task_grads][mtrl.surgery.per_task_grads]) for the rows,
bit for bit what mtrl 0.3 computed. The compiled one (``train.compile=inductor``) writes both as
``torch.func`` transforms of the same loss and hands them to ``torch.compile``: forward,
backward and the flattening of the rows become one generated kernel sequence without Python in
between. On a CPU, where an update of small networks is mostly per-operation overhead, that
cuts the gradients' time by a third to two thirds on ``pcgrad-fig4``'s critic (the performance
page; ``scripts/bench_update.py --compile none inductor`` measures it); the rounding
differs from the eager one's (fused element-wise kernels), the arithmetic does not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from mtrl.replay import batch_mean
from mtrl.surgery import per_task_grads

Params = dict[str, Tensor]
LossFn = Callable[[Params, Any], Tensor]
"""``loss(params, inputs) -> [K]`` on a ``[K, n, ...]`` batch; a scalar on one task's slice."""


class ComponentGradients:
    """``mean``: the gradient of the batch mean, one tensor per parameter, and the K losses.
    ``per_task``: the ``[K, P]`` rows (parameters flattened in the dict's order) and the K
    losses. ``inputs`` is a NamedTuple of ``[K, n, ...]`` tensors with a ``drawn`` field."""

    def __init__(self, loss: LossFn, compiled: bool = False) -> None:
        self.loss = loss
        self.compiled = compiled
        if compiled:
            # Fixed shapes (every batch of a run has the same): no dynamic-shape guards.
            self._mean = torch.compile(self._functional_mean, dynamic=False)
            self._per_task = torch.compile(self._functional_per_task, dynamic=False)

    def mean(self, params: Params, inputs: Any) -> tuple[list[Tensor], Tensor]:
        if not self.compiled:
            losses = self.loss(params, inputs)
            objective = batch_mean(losses, inputs.drawn)
            return list(torch.autograd.grad(objective, list(params.values()))), losses.detach()
        grads, losses = self._mean(_detached(params), inputs)
        return [grads[name] for name in params], losses

    def per_task(self, params: Params, inputs: Any) -> tuple[Tensor, Tensor]:
        if not self.compiled:
            return per_task_grads(self.loss, params, inputs, randomness="error")
        return self._per_task(_detached(params), inputs)

    def _functional_mean(self, params: Params, inputs: Any) -> tuple[Params, Tensor]:
        def objective(p: Params) -> tuple[Tensor, Tensor]:
            losses = self.loss(p, inputs)
            return batch_mean(losses, inputs.drawn), losses.detach()

        return torch.func.grad(objective, has_aux=True)(params)

    def _functional_per_task(self, params: Params, inputs: Any) -> tuple[Tensor, Tensor]:
        def one(p: Params, task_inputs: Any) -> tuple[Tensor, Tensor]:
            loss = self.loss(p, task_inputs)
            return loss, loss.detach()

        grad = torch.func.grad(one, has_aux=True)
        grads, losses = torch.func.vmap(grad, in_dims=(None, 0), randomness="error")(params, inputs)
        rows = torch.cat([grads[name].reshape(losses.shape[0], -1) for name in params], dim=1)
        return rows, losses


def _detached(params: Params) -> Params:
    return {name: p.detach() for name, p in params.items()}
