"""Multi-task SAC: task-conditioned actor, twin critic, one learned temperature per task.

Every loss is computed per task: given a ``[K, n, ...]`` batch it returns a ``[K]`` vector, and
given one task's ``[n, ...]`` slice (inside a vmap) a scalar. :meth:`MTSAC._descend` is the one
place where the K losses of a component become a gradient step: either the gradient of their
mean (plain MT-SAC), or the K per-task gradients from one vectorised pass, combined by a
gradient-surgery method (:mod:`mtrl.surgery`).

The update never waits for the device: no ``.item()``, no host copy, no data-dependent Python
branching (the surgery methods whose ``syncs(device)`` is false included), and Adam keeps its
step count on CUDA devices (``capturable``). So a CUDA device queue runs ahead of Python, and
the whole update can be replayed as one CUDA graph (``cuda_graph=True``, :mod:`mtrl.capture`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from mtrl import surgery as surgery_lib
from mtrl.capture import GraphedUpdate
from mtrl.config import AgentConfig, SurgeryConfig
from mtrl.networks import Actor, Temperature, TwinCritic, task_specific_parameters
from mtrl.replay import Batch
from mtrl.staging import to_device, to_host

Params = dict[str, torch.Tensor]
LossFn = Callable[[Params, Any], torch.Tensor]


class CriticInputs(NamedTuple):
    obs: torch.Tensor
    action: torch.Tensor
    target: torch.Tensor


class ActorInputs(NamedTuple):
    obs: torch.Tensor
    noise: torch.Tensor
    alpha: torch.Tensor


class AlphaInputs(NamedTuple):
    task_onehot: torch.Tensor
    log_prob: torch.Tensor


class Component(NamedTuple):
    """A set of parameters trained on one loss, with its own optimizer.

    ``params`` lists the parameters all tasks share first and the task-specific ones (per-task
    heads and temperatures) after them, so that a ``[K, P]`` gradient splits into a shared block
    ``[:, :shared_numel]`` for surgery and a task-specific block that must not be mixed.
    """

    name: str
    params: dict[str, nn.Parameter]
    optimizer: torch.optim.Optimizer
    loss: LossFn
    shared_numel: int


def capture_problem(surgery: SurgeryConfig, device: torch.device) -> str | None:
    """Why the update on ``device`` with this surgery cannot be a CUDA graph (None: it can)."""
    if device.type != "cuda":
        return f"a CUDA graph needs a CUDA device, not {device.type}"
    if surgery.name == "none":
        return None
    method = surgery_lib.make(surgery.name, **surgery.options)
    if method.syncs(device):
        has_solver = "solver" in type(method).options_spec
        solver = " (with surgery.options.solver=exact)" if has_solver else ""
        return (
            f"surgery '{surgery.name}'{solver} solves on the host, which waits for the device; "
            f"capturable: {', '.join(capturable_methods())} (solver auto or device)"
        )
    return None


def capturable_methods() -> list[str]:
    """Surgery methods that can run inside a CUDA graph (with their default options)."""
    cuda = torch.device("cuda")
    return [name for name in surgery_lib.available() if not surgery_lib.make(name).syncs(cuda)]


class MTSAC:
    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        num_tasks: int,
        config: AgentConfig,
        device: torch.device | str = "cpu",
        seed: int = 0,
        surgery: SurgeryConfig | None = None,
        cuda_graph: bool = False,
    ):
        self.config = config
        self.num_tasks = num_tasks
        self.action_dim = action_dim
        self.device = torch.device(device)
        self.target_entropy = (
            -float(action_dim) if config.target_entropy is None else config.target_entropy
        )
        self.actor = Actor(
            obs_dim,
            action_dim,
            num_tasks,
            config.hidden_dims,
            config.multi_head,
            (config.log_std_min, config.log_std_max),
        ).to(self.device)
        self.critic = TwinCritic(
            obs_dim, action_dim, num_tasks, config.hidden_dims, config.multi_head
        ).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.temperature = Temperature(num_tasks, config.init_alpha).to(self.device)
        self.generator = torch.Generator(self.device)
        self.generator.manual_seed(seed)
        self.components = {
            "critic": self._component("critic", self.critic, config.critic_lr, self._critic_loss),
            "actor": self._component("actor", self.actor, config.actor_lr, self._actor_loss),
            "alpha": self._component("alpha", self.temperature, config.alpha_lr, self._alpha_loss),
        }
        self.surgery_config = surgery or SurgeryConfig()
        self.surgeries = self._make_surgeries(self.surgery_config, seed)
        self.updates = 0
        self._diagnostics: dict[str, torch.Tensor] = {}
        self.cuda_graph = cuda_graph
        self._graphed: GraphedUpdate | None = None
        if cuda_graph:
            problem = capture_problem(self.surgery_config, self.device)
            if problem is not None:
                raise ValueError(problem)
            self.release_graph()

    def _component(self, name: str, module: nn.Module, lr: float, loss: LossFn) -> Component:
        """Adam is ``capturable`` on CUDA: its step count stays on the device, so a step never
        reads it on the host and can be captured in a CUDA graph."""
        task_specific = task_specific_parameters(module)
        named = list(module.named_parameters())
        shared = [(n, p) for n, p in named if n not in task_specific]
        params = dict(shared + [(n, p) for n, p in named if n in task_specific])
        capturable = self.device.type == "cuda"
        optimizer = torch.optim.Adam(params.values(), lr=lr, capturable=capturable)
        return Component(name, params, optimizer, loss, sum(p.numel() for _, p in shared))

    def release_graph(self) -> None:
        """Drop a captured update (after its state tensors were replaced, e.g. by loading a
        checkpoint); with ``cuda_graph`` the next updates warm up and capture again."""
        if self.cuda_graph:
            self._graphed = GraphedUpdate(self._step, self._generators)

    def _generators(self) -> list[torch.Generator]:
        """Every generator an update draws from on the device (the surgery methods draw on the
        gradients' device, ``cuda:0`` where ``self.device`` may say ``cuda``)."""
        device = self.temperature.log_alpha.device
        methods = self.surgeries.values()
        return [self.generator, *(method.generator_for(device) for method in methods)]

    def _make_surgeries(self, config: SurgeryConfig, seed: int) -> dict[str, surgery_lib.Surgery]:
        """One surgery object per component (stateful methods keep per-component state).

        A component without shared parameters (the per-task temperatures) needs none: there is
        nothing to combine, each task's gradient already reaches only its own parameters.
        """
        if config.name == "none":
            return {}
        accepts_seed = "seed" in surgery_lib.options_of(config.name)
        methods = {}
        for offset, name in enumerate(config.components):
            if self.components[name].shared_numel == 0:
                continue
            options = dict(config.options)
            if accepts_seed:
                options.setdefault("seed", seed + offset)
            methods[name] = surgery_lib.make(config.name, **options)
        return methods

    # ----------------------------------------------------------------------------- acting
    def _noise(self, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator, device=self.device)

    @torch.inference_mode()
    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Actions for a ``[K, obs_dim]`` array of observations, one row per env.

        Acting sits in the env loop, so it skips the log-probability the update needs. The
        observations go up and the actions come down through pinned buffers on CUDA.
        """
        pre_tanh, log_std = self.actor.distribution(to_device(obs, self.device))
        if not deterministic:
            pre_tanh = pre_tanh + log_std.exp() * self._noise(pre_tanh.shape)
        return to_host(torch.tanh(pre_tanh))

    # ----------------------------------------------------------------------------- losses
    def _critic_loss(self, params: Params, batch: CriticInputs) -> torch.Tensor:
        q1, q2 = functional_call(self.critic, params, (batch.obs, batch.action))
        return (q1 - batch.target).pow(2).mean(-1) + (q2 - batch.target).pow(2).mean(-1)

    def _actor_loss(self, params: Params, batch: ActorInputs) -> torch.Tensor:
        action, log_prob = functional_call(self.actor, params, (batch.obs, batch.noise))
        critic = {k: v.detach() for k, v in self.components["critic"].params.items()}
        q1, q2 = functional_call(self.critic, critic, (batch.obs, action))
        return (batch.alpha * log_prob - torch.minimum(q1, q2)).mean(-1)

    def _alpha_loss(self, params: Params, batch: AlphaInputs) -> torch.Tensor:
        log_alpha = functional_call(self.temperature, params, (batch.task_onehot,))
        return -(log_alpha * (batch.log_prob + self.target_entropy)).mean(-1)

    @torch.no_grad()
    def critic_target_values(self, batch: Batch) -> torch.Tensor:
        """r + gamma * (1 - terminated) * (min Q_targ(s', a') - alpha * log pi(a'|s')).

        Truncated transitions bootstrap like any other: only ``terminated`` stops the target.
        """
        next_action, next_log_prob = self.actor(batch.next_obs, self._noise(batch.action.shape))
        q1, q2 = self.critic_target(batch.next_obs, next_action)
        alpha = self.temperature(self.task_onehot(batch.next_obs)).exp()
        next_value = torch.minimum(q1, q2) - alpha * next_log_prob
        return batch.reward + self.config.gamma * (1.0 - batch.terminated) * next_value

    def task_onehot(self, obs: torch.Tensor) -> torch.Tensor:
        return obs[..., -self.num_tasks :]

    # ----------------------------------------------------------------------------- update
    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One SAC step on a balanced ``[K, n, ...]`` batch: critic, actor, temperature, targets.

        Returns per-task metrics as device tensors (no host sync here). With ``cuda_graph`` the
        step is replayed from a CUDA graph, except the updates that compute surgery diagnostics
        (every ``surgery.diagnostics_every``), which run eagerly: the same computation plus the
        statistics.
        """
        if self._graphed is not None and not self._diagnostics_due():
            metrics = self._graphed(batch)
        else:
            metrics = self._step(batch)
            metrics.update(self._diagnostics)
            self._diagnostics = {}
        self.updates += 1
        return metrics

    def _step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The update's device work, without the Python-side counters (what a graph captures)."""
        onehot = self.task_onehot(batch.obs)
        target = self.critic_target_values(batch)
        critic_losses = self._descend(
            self.components["critic"], CriticInputs(batch.obs, batch.action, target)
        )

        with torch.no_grad():
            alpha = self.temperature(onehot).exp()
        noise = self._noise(batch.action.shape)
        actor_losses = self._descend(self.components["actor"], ActorInputs(batch.obs, noise, alpha))

        # The temperature loss uses the updated actor's log-probabilities on the same noise (as
        # CleanRL does); one forward pass, and the vmapped actor path returns only losses.
        with torch.no_grad():
            _, log_prob = self.actor(batch.obs, noise)
        alpha_losses = self._descend(self.components["alpha"], AlphaInputs(onehot, log_prob))

        self._update_targets()
        return {
            "critic_loss": critic_losses,
            "actor_loss": actor_losses,
            "alpha_loss": alpha_losses,
            "alpha": self.temperature.log_alpha.detach().exp(),
            "entropy": -log_prob.mean(-1),
            "q_target": target.mean(-1),
        }

    def _diagnostics_due(self) -> bool:
        every = self.surgery_config.diagnostics_every
        return bool(self.surgeries) and every > 0 and (self.updates + 1) % every == 0

    def _descend(self, component: Component, inputs: Any) -> torch.Tensor:
        """Turn a component's K per-task losses into one optimizer step; returns the losses.

        Without surgery: the gradient of the mean over tasks (one ordinary backward pass). With
        surgery: the ``[K, P]`` per-task gradients in one vmapped pass; the shared block goes
        through the surgery method, the task-specific block keeps each task's own gradient
        (scaled 1/K like the mean, which is what the plain path gives it too).
        """
        params = component.params
        method = self.surgeries.get(component.name)
        if method is None:
            losses = component.loss(params, inputs)
            grads = torch.autograd.grad(losses.mean(), list(params.values()))
            for param, grad in zip(params.values(), grads, strict=True):
                param.grad = grad
        else:
            grads, losses = surgery_lib.per_task_grads(
                component.loss, params, inputs, randomness="error"
            )
            shared = grads[:, : component.shared_numel]
            combined = method(shared)
            update = torch.cat([combined, grads[:, component.shared_numel :].mean(0)])
            surgery_lib.assign_grads(params, update)
            if self._diagnostics_due():
                stats = surgery_lib.gram_diagnostics(shared, combined)
                self._diagnostics.update(
                    {f"surgery/{component.name}/{key}": value for key, value in stats.items()}
                )
        component.optimizer.step()
        return losses.detach()

    @torch.no_grad()
    def _update_targets(self) -> None:
        for target, online in zip(
            self.critic_target.parameters(), self.critic.parameters(), strict=True
        ):
            target.lerp_(online, self.config.tau)
