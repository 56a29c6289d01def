"""Loss balancers: per-task loss weights that adapt during training (FAMO, uncertainty
weighting, GradNorm).

Where [mtrl.surgery][] combines the per-task gradients ``[K, P]`` of one step, a balancer
weights the K per-task losses from what it observes over the steps: the losses themselves
(uncertainty weighting), their decrease after each step (FAMO), or gradient norms at a layer
(GradNorm). Usable outside RL; a two-task regression whose targets differ in scale by 100 (both
with unit noise) through a shared layer:

Examples:
    >>> import torch
    >>> from mtrl import balancers
    >>> _ = torch.manual_seed(0)
    >>> x = torch.randn(256, 4)
    >>> signal = torch.stack([x @ torch.ones(4), 100 * (x[:, 0] - x[:, 1])], dim=1)
    >>> y = signal + torch.randn(256, 2)
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    >>> optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    >>> famo = balancers.make("famo", num_tasks=2)
    >>> def task_losses():
    ...     return (model(x) - y).pow(2).mean(0)  # [2]: one loss per task
    >>> for _ in range(300):
    ...     losses = task_losses()
    ...     weights = famo.weights(losses.detach())  # [2], detached
    ...     optimizer.zero_grad()
    ...     (weights * losses).mean().backward()
    ...     optimizer.step()
    ...     with torch.no_grad():
    ...         famo.update(losses.detach(), losses_after=task_losses())
    >>> [round(loss, 1) for loss in task_losses().tolist()]  # both at the noise floor
    [1.0, 1.0]

Each balancer names what ``update`` needs besides the losses in ``needs`` (FAMO:
``losses_after``; GradNorm: ``grad_norms``). State: ``state_dict()`` / ``load_state_dict()``,
tensors and plain data only. The documentation's "Loss balancers" page (``docs/balancers.md``)
gives the papers' settings and the deviations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from mtrl.surgery._extras import TORCHJD_PREFIX
from mtrl.surgery.methods import METHODS as SURGERY_METHODS

from ._base import Balancer
from .methods import METHODS

if TYPE_CHECKING:
    from mtrl.config import BalancerConfig, SurgeryConfig

__all__ = [
    "UNBALANCEABLE",
    "Balancer",
    "available",
    "make",
    "options_of",
    "surgery_refusal",
    "validate",
]

UNBALANCEABLE = {
    "actor": "the actor loss (alpha log pi - Q) is unbounded below and mostly negative, and "
    "every balancer needs positive losses (FAMO their logarithm, uncertainty weighting their "
    "optimal variance, GradNorm their ratios to the first losses)",
    "alpha": "the temperature loss -log_alpha (log pi + target entropy) changes sign, and every "
    "balancer needs positive losses (with per-task temperatures there is also nothing to "
    "balance: each task's loss moves only its own log-alpha)",
}
"""MT-SAC losses a balancer is refused on, and why; only the critic's qualify."""


def available() -> list[str]:
    """Sorted names accepted by [make][mtrl.balancers.make]."""
    return sorted(METHODS)


def _method(name: Any) -> type[Balancer]:
    if name not in METHODS:
        raise ValueError(f"unknown balancer {name!r}; allowed: {', '.join(available())}")
    return METHODS[name]


def options_of(name: str) -> dict[str, Any]:
    """Allowed option names of ``name`` with their defaults."""
    return {k: v.default for k, v in _method(name).options_spec.items()}


def make(name: str, num_tasks: int, device: torch.device | str = "cpu", **options: Any) -> Balancer:
    """A balancer for ``num_tasks`` losses with its state on ``device``; ``ValueError`` on an
    unknown name, option or option value."""
    return _method(name)(num_tasks, device, **options)


def surgery_refusal(surgery: str) -> str | None:
    """Why per-task loss weights cannot act through the gradient-surgery method ``surgery``
    (the weights scale the rows of its input), or None when they can."""
    if surgery.startswith(TORCHJD_PREFIX):
        return (
            "TorchJD aggregators are not classified by how they treat the scale of each task's "
            "gradient, so loss weights are not combined with them"
        )
    if surgery in SURGERY_METHODS and SURGERY_METHODS[surgery].ignores_row_scales:
        return (
            "the surgery method ignores the scale of each task's gradient, so per-task loss "
            "weights would have no effect through it"
        )
    return None


def validate(balancer: BalancerConfig, surgery: SurgeryConfig) -> None:
    """The ``balancer`` section: the balancer exists, takes its options, and is meaningful where
    it is applied: on a loss that qualifies and through the surgery method on the same component,
    if any. ``ValueError`` (one line) otherwise."""
    if balancer.name == "none":
        if balancer.options:
            raise ValueError("balancer.options are set but balancer.name is none")
        return
    if balancer.name not in METHODS:
        raise ValueError(
            f"unknown balancer '{balancer.name}'; allowed: none, {', '.join(available())}"
        )
    try:
        make(balancer.name, num_tasks=2, **balancer.options)
    except ValueError as exc:
        raise ValueError(f"balancer.options: {exc}") from None
    for name in balancer.components:
        if name in UNBALANCEABLE:
            raise ValueError(f"balancer.components: {name} is refused, {UNBALANCEABLE[name]}")
    both = [name for name in balancer.components if name in surgery.components]
    reason = None if surgery.name == "none" else surgery_refusal(surgery.name)
    if both and reason:
        raise ValueError(
            f"balancer '{balancer.name}' and surgery '{surgery.name}' cannot both act on the "
            f"{' and '.join(both)}: {reason}"
        )
