"""Gradient surgery and a loss balancer in a plain PyTorch multi-task loop.

Three regression tasks share one network. Every step computes the three per-task gradients in one
vectorised pass, weights them with FAMO, combines them with PCGrad and takes an Adam step; the
gradient diagnostics say how much the tasks conflict. A few seconds on a CPU:

    python docs/tutorial_surgery.py

The documentation's tutorial page shows this file piece by piece; tests/test_docs.py runs it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from mtrl import balancers, surgery

# --8<-- [start:data]
K, DIM, PER_TASK = 3, 8, 64  # tasks, input size, samples per task in a batch


def make_tasks(generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Linear targets: task 1 nearly opposes task 0, task 2 is ten times larger than the others."""
    w = torch.randn(K, DIM, generator=generator)
    w[1] = -w[0] + 0.3 * w[1]
    scale = torch.tensor([1.0, 1.0, 10.0])
    return w, scale


def sample(w: Tensor, scale: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
    """A balanced batch shaped [K, PER_TASK, ...]: the same number of samples of every task."""
    x = torch.randn(K, PER_TASK, DIM, generator=generator)
    noise = 0.1 * torch.randn(K, PER_TASK, generator=generator)
    y = torch.einsum("knd,kd->kn", x, w) * scale[:, None] + noise
    task = torch.eye(K)[:, None, :].expand(K, PER_TASK, K)  # each sample's task as a one-hot
    return {"x": x, "y": y, "task": task}


# --8<-- [end:data]


def main(steps: int = 300, seed: int = 0, verbose: bool = False) -> dict[str, Tensor]:
    """Train; return the per-task losses of every step [steps, K] and the last diagnostics."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    w, scale = make_tasks(generator)

    # --8<-- [start:model]
    model = nn.Sequential(nn.Linear(DIM, 64), nn.ReLU(), nn.Linear(64, K))  # one output per task
    params = dict(model.named_parameters())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

    def task_loss(params: dict[str, Tensor], task_batch: dict[str, Tensor]) -> Tensor:
        """The loss of one task; its batch has no task axis (per_task_grads maps over it)."""
        out = functional_call(model, params, (task_batch["x"],))  # [PER_TASK, K]
        prediction = (out * task_batch["task"]).sum(-1)  # the sample's own task's output
        return (prediction - task_batch["y"]).pow(2).mean()

    # --8<-- [end:model]

    # --8<-- [start:one-pass]
    batch = sample(w, scale, generator)
    grads, losses = surgery.per_task_grads(task_loss, params, batch)  # [K, P], [K]

    # The same rows as K separate backward passes, at about the cost of one:
    for k in range(K):
        loss = task_loss(params, {key: value[k] for key, value in batch.items()})
        row = torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(params.values()))])
        assert torch.allclose(grads[k], row, atol=1e-5)
    # --8<-- [end:one-pass]

    # --8<-- [start:loop]
    pcgrad = surgery.make("pcgrad", seed=seed)
    famo = balancers.make("famo", num_tasks=K)

    def losses_of(batch: dict[str, Tensor]) -> Tensor:
        """The K losses on a batch, without gradients (what FAMO observes after a step)."""
        with torch.no_grad():
            return vmap(task_loss, in_dims=(None, 0))(params, batch)

    history = []
    for step in range(steps):
        batch = sample(w, scale, generator)
        grads, losses = surgery.per_task_grads(task_loss, params, batch)
        weights = famo.weights(losses)  # [K], "times the equal share"
        update = pcgrad(grads * weights[:, None])  # weighted rows -> one update [P]
        surgery.assign_grads(params, update)  # into .grad, then an ordinary optimizer step
        optimizer.step()
        famo.update(losses, losses_after=losses_of(batch))
        history.append(losses)
        if verbose and step % 50 == 0:
            print(f"step {step:3d}  losses {losses.tolist()}  weights {weights.tolist()}")
    # --8<-- [end:loop]

    # --8<-- [start:diagnostics]
    diagnostics = surgery.gram_diagnostics(grads, update)
    if verbose:
        for name, value in diagnostics.items():
            print(f"{name:18s} {value.tolist()}")
    # --8<-- [end:diagnostics]
    return {"losses": torch.stack(history), "diagnostics": diagnostics}


if __name__ == "__main__":
    main(verbose=True)
