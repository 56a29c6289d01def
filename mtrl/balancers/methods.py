"""The loss balancers. Weights are on the mean scale: ``(w * losses).mean()`` with ``w = 1`` is the
plain mean; each docstring gives the conversion from the paper's own normalisation."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from mtrl.surgery._base import Option, check_float

from ._base import Balancer


def learning_rate(default: float) -> Option:
    return Option(default, check_float(0.0, lo_open=True), "Adam learning rate of the weights")


FAMO_EPS = 1e-8
"""Added to every shifted loss before its logarithm, as in FAMO's Algorithm 2."""


class FAMO(Balancer):
    """FAMO (Liu, Feng, Stone, Liu, NeurIPS 2023): weights under which every task's loss falls
    at the same rate, learned from the decrease each step actually produced.

    Logits ``xi`` (start 0), ``z = softmax(xi)``, shifted losses ``d = losses - min_loss + 1e-8``.
    The step follows ``sum_i c z_i grad log d_i`` with ``c = 1 / sum_j z_j / d_j`` (Eq. 11), a
    convex combination of the task gradients with weights ``c z_i / d_i``; here ``w_i = K c z_i /
    d_i`` (sum K). After the step, with ``d'`` the shifted losses on the same batch, the logits
    descend on ``delta = J_softmax(xi)^T (log d - log d')`` (Eq. 10) with decay ``gamma``
    (Algorithm 1, line 6), by Adam with L2 weight decay as in the official code.
    Losses must stay above ``min_loss`` (a lower bound of every task's loss).
    """

    name = "famo"
    needs = frozenset({"losses_after"})
    options_spec: ClassVar[dict[str, Option]] = {
        "lr": learning_rate(0.025),  # Algorithm 2 and the official MT10 command
        "gamma": Option(0.001, check_float(0.0), "decay of the logits (paper default 0.001)"),
        "min_loss": Option(0.0, check_float(), "lower bound of every task's loss (paper: l*)"),
    }

    def _adam_options(self) -> dict[str, float]:
        return {"lr": self._options["lr"], "weight_decay": self._options["gamma"]}

    def _log_shifted(self, losses: Tensor) -> Tensor:
        return (losses - self._options["min_loss"] + FAMO_EPS).log()

    def weights(self, losses: Tensor) -> Tensor:
        with torch.no_grad():
            z_over_d = self.param.softmax(0) / (losses - self._options["min_loss"] + FAMO_EPS)
            return self.num_tasks * z_over_d / z_over_d.sum()

    def _step(self, losses: Tensor, losses_after: Tensor) -> None:
        decrease = self._log_shifted(losses) - self._log_shifted(losses_after)
        z = self.param.softmax(0)
        self._descend(z * (decrease - (z * decrease).sum()))  # softmax Jacobian (symmetric)


class UncertaintyWeighting(Balancer):
    """Uncertainty weighting (Kendall, Gal, Cipolla, CVPR 2018): one learned homoscedastic
    variance per task.

    Learns ``s_i = log sigma_i^2`` (start 0, the paper's log-variance parameterisation) by Adam
    on the paper's regression objective ``sum_i (exp(-s_i) loss_i + s_i) / 2``, whose minimum in
    ``s_i`` is ``log loss_i``. Weights ``w_i = exp(-s_i)`` (1 at the start): the model's gradient
    ``sum_i exp(-s_i) / 2 grad loss_i`` of that objective is ``K / 2`` times the one of
    ``(w * losses).mean()``; same direction, here on the mean scale. Losses must be positive:
    for a negative loss ``s_i`` decreases without bound and its weight explodes.
    """

    name = "uw"
    # 0.01: the uncertainty-weighting baseline of FAMO's MT10 runs (mtrl_files/uw_state_sac.yaml)
    options_spec: ClassVar[dict[str, Option]] = {"lr": learning_rate(0.01)}

    def weights(self, losses: Tensor) -> Tensor:
        return (-self.param).exp()

    def _step(self, losses: Tensor) -> None:
        self._descend(0.5 * (1.0 - (-self.param).exp() * losses))


class GradNorm(Balancer):
    """GradNorm (Chen, Badrinarayanan, Lee, Rabinovich, ICML 2018), Algorithm 1.

    Weights ``w`` (start 1, sum K, the paper's normalisation; the objective ``(w *
    losses).mean()`` is the paper's ``sum_i w_i L_i`` divided by K). Each update observes
    ``n_i``, the norm of task i's unweighted loss gradient at a layer W (the paper: the last
    shared layer), and computes ``G_i = w_i n_i``, the loss ratios ``L_i / L_i(0)`` (``L_i(0)``:
    the losses of the first update), the relative inverse training rates ``r_i = ratio_i /
    mean(ratio)`` and the targets ``T_i = mean(G) r_i^alpha``, held constant. ``w`` descends on
    ``sum_i |G_i - T_i|`` (gradient ``sign(G_i - T_i) n_i``) by Adam and is renormalised to sum
    K. Deviation: weights are clipped at 0 before the renormalisation (a weight pushed below 0
    would flip its task's gradient, and ``G_i = |w_i| n_i`` would keep pushing it down).
    """

    name = "gradnorm"
    needs = frozenset({"grad_norms"})
    initial_value = 1.0
    options_spec: ClassVar[dict[str, Option]] = {
        "alpha": Option(1.5, check_float(0.0), "asymmetry: pull towards equal training rates"),
        "lr": learning_rate(0.025),  # FAMO's task-weight rate, not from the GradNorm paper
    }

    def __init__(self, num_tasks: int, device: torch.device | str = "cpu", **options: Any) -> None:
        super().__init__(num_tasks, device, **options)
        self.initial_losses: Tensor | None = None

    def weights(self, losses: Tensor) -> Tensor:
        return self.param.clone()

    def _step(self, losses: Tensor, grad_norms: Tensor) -> None:
        if self.initial_losses is None:
            self.initial_losses = losses.clamp(min=torch.finfo(losses.dtype).tiny).clone()
        G = self.param * grad_norms
        ratios = losses / self.initial_losses
        target = G.mean() * (ratios / ratios.mean()).pow(self._options["alpha"])
        self._descend(torch.sign(G - target) * grad_norms)
        w = self.param.clamp_(min=0.0)
        total = w.sum()
        w.copy_(torch.where(total > 0, self.num_tasks * w / total, torch.ones_like(w)))

    def _method_state(self) -> dict[str, Any]:
        if self.initial_losses is None:
            return {}
        return {"initial_losses": self.initial_losses.detach().cpu().clone()}

    def _load_method_state(self, state: dict[str, Any]) -> None:
        saved = state.get("initial_losses")
        self.initial_losses = None if saved is None else saved.to(self.param.device).clone()


METHODS: dict[str, type[Balancer]] = {
    cls.name: cls for cls in (FAMO, UncertaintyWeighting, GradNorm)
}
