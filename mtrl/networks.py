"""Task-conditioned actor, twin critic and the temperatures (one per task or one for all).

Observations end with the task one-hot (Meta-World's ``use_one_hot``). The actor and each Q
network split it off and hand state, one-hot (and action) to their network, built from the
:class:`~mtrl.models.ModelSpec` (``agent.model``): the networks work unchanged on any leading
shape (``[K, n, obs]`` batches and the per-task slices of a vmap alike).
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn
from torch.nn import functional as F

from mtrl.models import Dims, Model, ModelSpec, PerTaskModule
from mtrl.models._base import initialise
from mtrl.models.mlp import MLPModel
from mtrl.models.multihead import MultiHeadModel

ACTOR_OUTPUT_BOUND = 1e-3
"""``agent.init=mwplus``: the actor's output layer, weights and biases uniform in +-this
(metaworld-algorithms ``rl/networks.py``)."""
CRITIC_OUTPUT_BOUND = 3e-3
"""``agent.init=mwplus``: each Q network's output layer, uniform in +-this."""


def split_task(obs: torch.Tensor, num_tasks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The state and the task one-hot at the end of an observation."""
    return obs[..., :-num_tasks], obs[..., -num_tasks:]


class Actor(nn.Module):
    """Tanh-squashed Gaussian policy ``a = tanh(mu + sigma * eps)``."""

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        num_tasks: int,
        model: ModelSpec,
        log_std_bounds: tuple[float, float] = (-20.0, 2.0),
        log_std_squash: bool = False,
        init: str = "torch",
    ):
        """``log_std_squash``: bound the log-std by a rescaled tanh instead of clamping it;
        ``init``: ``agent.init``."""
        super().__init__()
        self.num_tasks = num_tasks
        self.model = model.build(Dims(obs_dim - num_tasks, 0, 2 * action_dim, num_tasks))
        self.log_std_min, self.log_std_max = log_std_bounds
        self.log_std_squash = log_std_squash
        init_by_scheme(self.model, init, ACTOR_OUTPUT_BOUND)

    def distribution(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-std of the pre-tanh Gaussian."""
        mean, log_std = self.model(*split_task(obs, self.num_tasks)).chunk(2, dim=-1)
        if self.log_std_squash:  # facebookresearch/mtrl actor.py: min + (max - min)(tanh + 1)/2
            span = self.log_std_max - self.log_std_min
            return mean, self.log_std_min + 0.5 * span * (torch.tanh(log_std) + 1)
        return mean, log_std.clamp(self.log_std_min, self.log_std_max)

    def forward(self, obs: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised action and its log-probability for standard-normal ``noise``.

        The caller draws the noise, so that the plain and the per-task (vmapped) update paths
        see the same samples. Zero noise gives the deterministic (mean) action.
        """
        mean, log_std = self.distribution(obs)
        pre_tanh = mean + log_std.exp() * noise
        return torch.tanh(pre_tanh), squashed_gaussian_log_prob(pre_tanh, noise, log_std)


def squashed_gaussian_log_prob(
    pre_tanh: torch.Tensor, noise: torch.Tensor, log_std: torch.Tensor
) -> torch.Tensor:
    """log pi(tanh(u)) = log N(u; mu, sigma) - sum log(1 - tanh(u)^2), summed over action dims.

    ``log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))`` is the overflow-free form.
    """
    gaussian = -0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)
    tanh_correction = 2 * (math.log(2) - pre_tanh - F.softplus(-2 * pre_tanh))
    return (gaussian - tanh_correction).sum(-1)


class QNetwork(nn.Module):
    def __init__(
        self, obs_dim: int, action_dim: int, num_tasks: int, model: ModelSpec, init: str = "torch"
    ):
        super().__init__()
        self.num_tasks = num_tasks
        self.model = model.build(Dims(obs_dim - num_tasks, action_dim, 1, num_tasks))
        init_by_scheme(self.model, init, CRITIC_OUTPUT_BOUND)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        state, task = split_task(obs, self.num_tasks)
        return self.model(state, task, action).squeeze(-1)


class TwinCritic(nn.Module):
    """Two independent Q networks; targets use their minimum (clipped double Q)."""

    def __init__(
        self, obs_dim: int, action_dim: int, num_tasks: int, model: ModelSpec, init: str = "torch"
    ):
        super().__init__()
        self.q1 = QNetwork(obs_dim, action_dim, num_tasks, model, init)
        self.q2 = QNetwork(obs_dim, action_dim, num_tasks, model, init)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.q1(obs, action), self.q2(obs, action)


class Temperature(PerTaskModule):
    """Per-task log-temperatures; a sample's log-alpha is selected by its task one-hot."""

    def __init__(self, num_tasks: int, init_alpha: float):
        super().__init__()
        self.log_alpha = nn.Parameter(torch.full((num_tasks,), math.log(init_alpha)))

    def forward(self, task_onehot: torch.Tensor) -> torch.Tensor:
        return task_onehot @ self.log_alpha


class SharedTemperature(nn.Module):
    """One log-temperature for all tasks (``agent.temperature=shared``): a shared parameter, so
    every task's temperature loss moves it and gradient surgery combines their gradients."""

    def __init__(self, num_tasks: int, init_alpha: float):
        super().__init__()
        self.num_tasks = num_tasks
        self.shared_log_alpha = nn.Parameter(torch.full((1,), math.log(init_alpha)))

    @property
    def log_alpha(self) -> torch.Tensor:
        """The log-alpha of every task (all the same), ``[K]``."""
        return self.shared_log_alpha.expand(self.num_tasks)

    def forward(self, task_onehot: torch.Tensor) -> torch.Tensor:
        return task_onehot @ self.log_alpha


def make_temperature(num_tasks: int, init_alpha: float, kind: str) -> nn.Module:
    """``agent.temperature``: ``per_task`` or ``shared``."""
    if kind not in ("per_task", "shared"):
        raise ValueError(f"temperature must be per_task or shared, got '{kind}'")
    return (Temperature if kind == "per_task" else SharedTemperature)(num_tasks, init_alpha)


def init_by_scheme(model: Model, scheme: str, output_bound: float) -> None:
    """Re-draw the weights of an ``mlp`` or ``multihead`` network by ``agent.init``.

    ``torch`` keeps PyTorch's default; ``xavier`` draws every weight Xavier-uniform and zeroes
    every bias (facebookresearch/mtrl ``agent/utils.py`` ``weight_init``, per head for the
    multi-head layers); ``mwplus`` draws the hidden weights He-uniform (``sqrt(6 / fan_in)``)
    with zero biases and the output weights and biases uniform in ``+-output_bound``
    (metaworld-algorithms ``config/nn.py``, ``rl/networks.py``). The other models are
    initialised as their authors' code does (mtrl.models). A per-head layer's fans are
    one head's.
    """
    if scheme == "torch" or not isinstance(model, MLPModel | MultiHeadModel):
        return
    he_uniform = functools.partial(nn.init.kaiming_uniform_, nonlinearity="relu")
    small = functools.partial(nn.init.uniform_, a=-output_bound, b=output_bound)
    hidden, output = model.layers()
    with torch.no_grad():
        for weight, bias in hidden:
            initialise(weight, nn.init.xavier_uniform_ if scheme == "xavier" else he_uniform)
            bias.zero_()
        for weight, bias in output:
            initialise(weight, nn.init.xavier_uniform_ if scheme == "xavier" else small)
            if scheme == "xavier":
                bias.zero_()
            else:
                small(bias)
