"""Multi-task SAC: task-conditioned actor, twin critic, learned temperatures (per task or one).

Every loss is computed per task: given a ``[K, n, ...]`` batch it returns a ``[K]`` vector (each
task's mean over its drawn transitions, [task_means][mtrl.replay.task_means]), and given one
task's ``[n, ...]`` slice (inside a vmap) a scalar. [MTSAC._descend][mtrl.agent.MTSAC._descend]
is the one place where the K losses of a component become a gradient step: either the gradient
of the mean over the batch (plain MT-SAC; the mean of the K losses for a balanced batch, each
weighted by its task's share of a uniform one), or the K per-task gradients from one vectorised
pass, combined by a
gradient-surgery method (:mod:`mtrl.surgery`). A loss balancer (:mod:`mtrl.balancers`) weights
the K losses first (on the surgery path: the K gradient rows).

The update never waits for the device: no ``.item()``, no host copy, no data-dependent Python
branching (the surgery methods whose ``syncs(device)`` is false included), and Adam keeps its
step count on CUDA devices (``capturable``). So a CUDA device queue runs ahead of Python, and
the whole update can be replayed as one CUDA graph (``cuda_graph=True``, :mod:`mtrl.capture`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from mtrl import balancers as balancer_lib
from mtrl import surgery as surgery_lib
from mtrl.capture import GraphedUpdate
from mtrl.config import AgentConfig, BalancerConfig, SurgeryConfig
from mtrl.gradients import ComponentGradients
from mtrl.models import ModelSpec, task_specific_parameters
from mtrl.networks import Actor, TwinCritic, make_temperature
from mtrl.replay import Batch, task_means
from mtrl.seeding import stream_seed
from mtrl.staging import to_device, to_host

Params = dict[str, torch.Tensor]
LossFn = Callable[[Params, Any], torch.Tensor]


class CriticInputs(NamedTuple):
    obs: torch.Tensor
    action: torch.Tensor
    target: torch.Tensor
    drawn: torch.Tensor


class ActorInputs(NamedTuple):
    obs: torch.Tensor
    noise: torch.Tensor
    alpha: torch.Tensor
    drawn: torch.Tensor


class AlphaInputs(NamedTuple):
    task_onehot: torch.Tensor
    log_prob: torch.Tensor
    drawn: torch.Tensor


TargetFn = Callable[[Batch, torch.Tensor], torch.Tensor]
LogProbFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Forwards(NamedTuple):
    """The update's forward passes without a gradient, compiled with the gradients (or not)."""

    targets: TargetFn
    log_prob: LogProbFn

    @classmethod
    def make(cls, targets: TargetFn, log_prob: LogProbFn, compiled: bool) -> Forwards:
        if not compiled:
            return cls(targets, log_prob)
        return cls(*(torch.compile(fn, dynamic=False) for fn in (targets, log_prob)))


class Component(NamedTuple):
    """A set of parameters trained on one loss, with its own optimizer.

    ``params`` lists the parameters all tasks share first and the task-specific ones (the
    models' per-task heads, task embeddings and task weights, the temperatures) after them, so
    that a ``[K, P]`` gradient splits into a shared block ``[:, :shared_numel]`` for surgery and
    a task-specific block that must not be mixed.
    """

    name: str
    params: dict[str, nn.Parameter]
    optimizer: torch.optim.Optimizer
    loss: LossFn
    shared_numel: int
    gradients: ComponentGradients


def capture_problem(
    surgery: SurgeryConfig, device: torch.device, balancer: BalancerConfig | None = None
) -> str | None:
    """Why the update on ``device`` with this surgery cannot be a CUDA graph (None: it can).

    Loss balancers keep state that their ``update`` replaces; capturing them is not supported.
    """
    if device.type != "cuda":
        return f"a CUDA graph needs a CUDA device, not {device.type}"
    if balancer is not None and balancer.name != "none":
        return f"balancer '{balancer.name}' cannot be captured; use train.compile=none with it"
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
        balancer: BalancerConfig | None = None,
        task_embeddings: torch.Tensor | None = None,
        cuda_graph: bool = False,
        compiled: bool = False,
    ):
        """``task_embeddings``: the ``[K, D]`` fixed task vectors of ``agent.task_embeddings``
        (read by the caller, who knows the task names), for the models that use them.
        ``compiled``: the gradients through ``torch.compile`` and Adam's fused kernel
        (``train.compile=inductor``; see :mod:`mtrl.gradients`), and on a CPU the update run
        with denormals flushed to zero (:func:`flushing_denormals`)."""
        self.config = config
        self.compiled = compiled
        self.num_tasks = num_tasks
        self.action_dim = action_dim
        self.device = torch.device(device)
        self._flush_denormals = compiled and self.device.type == "cpu"
        self.target_entropy = (
            -float(action_dim) if config.target_entropy is None else config.target_entropy
        )
        model = ModelSpec(
            config.model,
            config.model_options,
            tuple(config.hidden_dims),
            task_embeddings,
            config.task_input,
        )
        bounds = (config.log_std_min, config.log_std_max)
        self.actor = Actor(
            obs_dim, action_dim, num_tasks, model, bounds, config.log_std_squash, config.init
        ).to(self.device)
        self.critic = TwinCritic(obs_dim, action_dim, num_tasks, model, config.init).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        # Listed once, like the components' parameters (a checkpoint loads into them in place).
        self._polyak = list(self.critic_target.parameters()), list(self.critic.parameters())
        self.temperature = make_temperature(num_tasks, config.init_alpha, config.temperature).to(
            self.device
        )
        self._forwards = Forwards.make(self._target_values, self._log_prob, compiled)
        self.generator = torch.Generator(self.device)
        self.generator.manual_seed(stream_seed(seed, "agent.noise"))
        self.probe_generator = torch.Generator(self.device)
        """Draws the diagnostics' probe batches and their noise, apart from training's streams."""
        self.probe_generator.manual_seed(stream_seed(seed, "diagnostics.probe"))
        self.components = {
            "critic": self._component("critic", self.critic, config.critic_lr, self._critic_loss),
            "actor": self._component("actor", self.actor, config.actor_lr, self._actor_loss),
            "alpha": self._component("alpha", self.temperature, config.alpha_lr, self._alpha_loss),
        }
        self.surgery_config = surgery or SurgeryConfig()
        self.surgeries = self._make_surgeries(self.surgery_config, seed)
        self.balancer_config = balancer or BalancerConfig()
        balancer_lib.validate(self.balancer_config, self.surgery_config)
        self.balancers = {
            name: balancer_lib.make(
                self.balancer_config.name, num_tasks, self.device, **self.balancer_config.options
            )
            for name in self.balancer_config.components
            if self.balancer_config.name != "none"
        }
        self.gradnorm_layer = last_shared_layers(self.critic)
        """GradNorm's layer W: the last shared layer of each Q network (parameter names)."""
        self.updates = 0
        self._diagnostics: dict[str, torch.Tensor] = {}
        self.cuda_graph = cuda_graph
        self._graphed: GraphedUpdate | None = None
        if cuda_graph:
            problem = capture_problem(self.surgery_config, self.device, self.balancer_config)
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
        fused = True if self.compiled else None  # one kernel for all parameters' moments
        optimizer = torch.optim.Adam(
            params.values(), lr=lr, eps=self.config.adam_eps, capturable=capturable, fused=fused
        )
        shared_numel = sum(p.numel() for _, p in shared)
        gradients = ComponentGradients(loss, self.compiled)
        return Component(name, params, optimizer, loss, shared_numel, gradients)

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
        """One surgery object per component (stateful methods keep per-component state), each
        with its own random stream derived from the run seed.

        A component without shared parameters (the per-task temperatures) needs none: there is
        nothing to combine, each task's gradient already reaches only its own parameters.
        """
        if config.name == "none":
            return {}
        accepts_seed = "seed" in surgery_lib.options_of(config.name)
        methods = {}
        for name in config.components:
            if self.components[name].shared_numel == 0:
                continue
            options = dict(config.options)
            if accepts_seed:
                options.setdefault("seed", stream_seed(seed, f"surgery.{name}"))
            methods[name] = surgery_lib.make(config.name, **options)
        return methods

    # ----------------------------------------------------------------------------- acting
    def _noise(self, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator, device=self.device)

    def _probe_noise(self, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=self.probe_generator, device=self.device)

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
        losses = task_means((q1 - batch.target).pow(2), batch.drawn) + task_means(
            (q2 - batch.target).pow(2), batch.drawn
        )
        return losses / 2 if self.config.critic_reduction == "mean" else losses

    def _actor_loss(self, params: Params, batch: ActorInputs) -> torch.Tensor:
        action, log_prob = functional_call(self.actor, params, (batch.obs, batch.noise))
        critic = {k: v.detach() for k, v in self.components["critic"].params.items()}
        q1, q2 = functional_call(self.critic, critic, (batch.obs, action))
        return task_means(batch.alpha * log_prob - torch.minimum(q1, q2), batch.drawn)

    def _alpha_loss(self, params: Params, batch: AlphaInputs) -> torch.Tensor:
        log_alpha = functional_call(self.temperature, params, (batch.task_onehot,))
        return task_means(-log_alpha * (batch.log_prob + self.target_entropy), batch.drawn)

    def critic_target_values(self, batch: Batch) -> torch.Tensor:
        """r + gamma * (1 - terminated) * (min Q_targ(s', a') - alpha * log pi(a'|s')).

        Truncated transitions bootstrap like any other: only ``terminated`` stops the target.
        """
        return self._forwards.targets(batch, self._noise(batch.action.shape))

    @torch.no_grad()
    def _target_values(self, batch: Batch, noise: torch.Tensor) -> torch.Tensor:
        next_action, next_log_prob = self.actor(batch.next_obs, noise)
        q1, q2 = self.critic_target(batch.next_obs, next_action)
        alpha = self.temperature(self.task_onehot(batch.next_obs)).exp()
        next_value = torch.minimum(q1, q2) - alpha * next_log_prob
        return batch.reward + self.config.gamma * (1.0 - batch.terminated) * next_value

    @torch.no_grad()
    def _log_prob(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.actor(obs, noise)[1]

    def task_onehot(self, obs: torch.Tensor) -> torch.Tensor:
        return obs[..., -self.num_tasks :]

    # ----------------------------------------------------------------------------- update
    def update(self, batch: Batch, probe: Batch | None = None) -> dict[str, torch.Tensor]:
        """One SAC step on a ``[K, n, ...]`` batch: critic, actor, temperature, targets.

        Returns per-task metrics as device tensors (no host sync here). With ``cuda_graph`` the
        step is replayed from a CUDA graph, except the updates that compute the gradient
        diagnostics (every ``surgery.diagnostics_every``), which run eagerly: the same
        computation plus the statistics. ``probe``: a second batch on which those updates also
        compute the diagnostics (``diag/<component>/probe/...``), with noise from
        ``probe_generator``: the update itself does not see it.
        """
        if self._graphed is not None and not self.diagnostics_due():
            metrics = self._graphed(batch)
        else:
            with flushing_denormals(self._flush_denormals):
                metrics = self._step(batch, probe if self.diagnostics_due() else None)
        self.updates += 1
        return metrics

    def _step(self, batch: Batch, probe: Batch | None = None) -> dict[str, torch.Tensor]:
        """The update's device work, without the Python-side counters (what a graph captures)."""
        onehot = self.task_onehot(batch.obs)
        target = self.critic_target_values(batch)
        critic_probe = None
        if probe is not None:
            probe_target = self._forwards.targets(probe, self._probe_noise(probe.action.shape))
            critic_probe = CriticInputs(probe.obs, probe.action, probe_target, probe.drawn)
        critic_losses = self._descend(
            self.components["critic"],
            CriticInputs(batch.obs, batch.action, target, batch.drawn),
            critic_probe,
        )

        with torch.no_grad():
            alpha = self.temperature(onehot).exp()
        noise = self._noise(batch.action.shape)
        actor_probe = None
        if probe is not None:
            with torch.no_grad():
                probe_alpha = self.temperature(self.task_onehot(probe.obs)).exp()
            probe_noise = self._probe_noise(probe.action.shape)
            actor_probe = ActorInputs(probe.obs, probe_noise, probe_alpha, probe.drawn)
        actor_losses = self._descend(
            self.components["actor"], ActorInputs(batch.obs, noise, alpha, batch.drawn), actor_probe
        )

        # The temperature loss uses the updated actor's log-probabilities on the same noise (as
        # CleanRL does); one forward pass, and the vmapped actor path returns only losses.
        log_prob = self._forwards.log_prob(batch.obs, noise)
        alpha_losses = self._descend(
            self.components["alpha"], AlphaInputs(onehot, log_prob, batch.drawn)
        )

        self._update_targets()
        metrics = {
            "critic_loss": critic_losses,
            "actor_loss": actor_losses,
            "alpha_loss": alpha_losses,
            "alpha": self.temperature.log_alpha.detach().exp(),
            "entropy": -task_means(log_prob, batch.drawn),
            "q_target": task_means(target, batch.drawn),
            **self._diagnostics,  # clipping norms, balancer weights, due gradient diagnostics
        }
        self._diagnostics = {}
        return metrics

    def diagnostics_due(self) -> bool:
        """Whether the next update computes the gradient diagnostics."""
        every = self.surgery_config.diagnostics_every
        return every > 0 and (self.updates + 1) % every == 0

    def _descend(self, component: Component, inputs: Any, probe_inputs: Any = None) -> torch.Tensor:
        """Turn a component's K per-task losses into one optimizer step; returns the losses.

        Without surgery: the gradient of the batch mean (one ordinary backward pass). With surgery:
        the ``[K, P]`` per-task gradients in one vmapped pass; the shared block goes through the
        surgery method, the task-specific block keeps each task's own gradient (scaled 1/K like
        the mean, which is what the plain path gives it too). A balancer weights the losses
        (plain path) or the gradient rows (surgery path) first, and adapts after the step.
        On the updates that compute diagnostics (:meth:`_probe`), the plain path computes the
        per-task gradients as well, beside (not instead of) its own backward pass; with
        ``probe_inputs`` the diagnostics are computed on those inputs too, at the same θ and
        for the same step.
        """
        params = component.params
        method = self.surgeries.get(component.name)
        balancer = self.balancers.get(component.name)
        diagnose = self.diagnostics_due() and component.shared_numel > 0
        observed: dict[str, torch.Tensor] = {}
        rows = None
        if method is None and balancer is None:
            grads, losses = component.gradients.mean(params, inputs)
            for param, grad in zip(params.values(), grads, strict=True):
                param.grad = grad
        elif method is None:
            losses = component.loss(params, inputs)
            weights = self._balancer_weights(component, balancer, losses.detach())
            if "grad_norms" in balancer.needs:
                observed["grad_norms"] = self._layer_norms_by_autograd(component, losses)
            grads = torch.autograd.grad((weights * losses).mean(), list(params.values()))
            for param, grad in zip(params.values(), grads, strict=True):
                param.grad = grad
        else:
            rows, losses = component.gradients.per_task(params, inputs)
            weighted = rows
            if balancer is not None:
                weights = self._balancer_weights(component, balancer, losses)
                if "grad_norms" in balancer.needs:
                    observed["grad_norms"] = self._layer_norms_of_rows(component, rows)
                weighted = rows * weights[:, None]
            combined = method(weighted[:, : component.shared_numel])
            own = weighted[:, component.shared_numel :]
            update = torch.cat([combined, own.mean(0)]) if own.numel() else combined
            surgery_lib.assign_grads(params, update)
        probes = []
        if diagnose:
            if rows is None:  # the plain path's rows, beside its own gradient
                rows, _ = component.gradients.per_task(params, inputs)
            probes.append(self._probe(component, "", inputs, rows, losses.detach()))
            if probe_inputs is not None:
                probe_rows, probe_losses = component.gradients.per_task(params, probe_inputs)
                probes.append(
                    self._probe(component, "probe/", probe_inputs, probe_rows, probe_losses)
                )
        self._clip(component)
        adam_step(component.optimizer)
        for probe in probes:
            self._record_curvature(component, *probe)
        if balancer is not None:
            if "losses_after" in balancer.needs:  # the same batch, after the step (FAMO)
                with torch.no_grad():
                    observed["losses_after"] = component.loss(params, inputs)
            balancer.update(losses.detach(), **observed)
        return losses.detach()

    def _probe(
        self, component: Component, prefix: str, inputs: Any, rows: torch.Tensor, losses: Any
    ) -> tuple[str, Any, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Record the tragic-triad statistics of this update (``diag/<component>/<prefix>...``):
        those of :func:`mtrl.surgery.gram_diagnostics` on the tasks' own gradients of the shared
        parameters (before any balancer weight), and the norm of the update written into
        ``.grad`` relative to their mean. Returns what the curvature needs after the step:
        the prefix, the inputs, θ_t, L(θ_t) (the mean of the K losses) and ∇L(θ_t) (the mean
        of the rows)."""
        shared = component.shared_numel
        update = torch.cat([p.grad.reshape(-1) for p in component.params.values()])[:shared]
        stats = surgery_lib.gram_diagnostics(rows[:, :shared], update)
        self._record(component, prefix, stats)
        return prefix, inputs, _flat(component.params), losses.mean(), rows.mean(0)

    def _record_curvature(
        self,
        component: Component,
        prefix: str,
        inputs: Any,
        theta: torch.Tensor,
        loss: torch.Tensor,
        grad: torch.Tensor,
    ) -> None:
        """H of the step just taken, from one more evaluation of the same losses on the same
        batch (targets, noise and temperatures fixed in ``inputs``): nothing random is drawn."""
        with torch.no_grad():
            loss_after = component.loss(component.params, inputs).mean()
        stats = surgery_lib.step_curvature(loss, loss_after, grad, _flat(component.params) - theta)
        self._record(component, prefix, stats)

    def _record(self, component: Component, prefix: str, stats: dict[str, torch.Tensor]) -> None:
        self._diagnostics.update(
            {f"diag/{component.name}/{prefix}{k}": v for k, v in stats.items()}
        )

    def _clip(self, component: Component) -> None:
        """Clip the global norm of the update that reaches the optimizer (after surgery), for
        the actor and the critic; the pre-clip norm is logged. No host sync: the scale factor
        stays on the device."""
        if self.config.grad_clip is None or component.name == "alpha":
            return
        norm = torch.nn.utils.clip_grad_norm_(component.params.values(), self.config.grad_clip)
        self._diagnostics[f"grad_norm/{component.name}"] = norm.detach()

    def _balancer_weights(
        self, component: Component, balancer: balancer_lib.Balancer, losses: torch.Tensor
    ) -> torch.Tensor:
        weights = balancer.weights(losses)
        self._diagnostics[f"balancer/{component.name}/weight"] = weights
        return weights

    def _layer_norms_by_autograd(self, component: Component, losses: torch.Tensor) -> torch.Tensor:
        """Norm of each task's loss gradient at GradNorm's layer, from the losses' graph: one
        backward batched over the K unit vectors, through the layers above W only."""
        layer = [component.params[name] for name in self.gradnorm_layer]
        unit = torch.eye(len(losses), dtype=losses.dtype, device=losses.device)
        grads = torch.autograd.grad(
            losses, layer, grad_outputs=unit, is_grads_batched=True, retain_graph=True
        )
        return torch.cat([g.flatten(1) for g in grads], dim=1).norm(dim=1)

    def _layer_norms_of_rows(self, component: Component, grads: torch.Tensor) -> torch.Tensor:
        """Norm of each task's loss gradient at GradNorm's layer, from the ``[K, P]`` rows."""
        offsets, offset = {}, 0
        for name, param in component.params.items():
            offsets[name] = (offset, param.numel())
            offset += param.numel()
        blocks = [grads.narrow(1, *offsets[name]) for name in self.gradnorm_layer]
        return torch.stack([block.norm(dim=1) for block in blocks]).norm(dim=0)

    @torch.no_grad()
    def _update_targets(self) -> None:
        torch._foreach_lerp_(*self._polyak, self.config.tau)


def adam_step(optimizer: torch.optim.Adam) -> None:
    """``optimizer.step()``; for a fused Adam (the compiled path on a CPU), straight to its kernel.

    On these small networks ``step()``'s bookkeeping (its hook and profiling wrappers, gathering
    the state and regrouping the tensors by device and dtype on every call) costs about as much
    as the fused kernel: 0.3 ms of a 6 ms ``pcgrad-fig4`` update. For a fused Adam with one
    parameter group and none of the options that change the kernel's call (``capturable`` on
    CUDA, amsgrad, maximize, AdamW's decay), this makes the two calls that ``step()`` ends in,
    with the same arguments: bit for bit the same step (tested). Anything else, and the first
    step, which creates the state, go through ``step()``.
    """
    groups = optimizer.param_groups
    group = groups[0]
    options = ("capturable", "amsgrad", "maximize", "differentiable", "decoupled_weight_decay")
    plain = len(groups) == 1 and group["fused"] and not any(group.get(o) for o in options)
    params = group["params"]
    if not plain or len(optimizer.state) < len(params):
        optimizer.step()
        return
    states = [optimizer.state[p] for p in params]
    steps = [state["step"] for state in states]
    beta1, beta2 = group["betas"]
    torch._foreach_add_(steps, 1)
    torch._fused_adam_(
        params,
        [p.grad for p in params],
        [state["exp_avg"] for state in states],
        [state["exp_avg_sq"] for state in states],
        [],
        steps,
        amsgrad=False,
        lr=group["lr"],
        beta1=beta1,
        beta2=beta2,
        weight_decay=group["weight_decay"],
        eps=group["eps"],
        maximize=False,
        grad_scale=None,
        found_inf=None,
    )


@contextmanager
def flushing_denormals(enabled: bool) -> Iterator[None]:
    """Run the block with float denormals flushed to zero (this thread's FTZ/DAZ flags).

    Adam's first moment of a parameter whose gradient is exactly zero (a dead ReLU unit's
    weights, common in these networks) decays by beta1 per step through the denormal range; on
    an x86 CPU each denormal operand costs a microcode assist, and in a long run about half of
    the hidden layers' moments sit there: measured on pcgrad-fig4's critic state at 120k
    transitions, one fused Adam step takes 1.46 ms with denormals and 0.25 ms flushed. Flushing
    changes only values below 1.2e-38, which are zero for every purpose of the update. Scoped to
    the update so that the environments' simulation keeps its own arithmetic; the flags are
    cleared after the block (their default)."""
    if not enabled:
        yield
        return
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def _flat(params: Params) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params.values()])


def last_shared_layers(critic: nn.Module) -> list[str]:
    """GradNorm's layer W in the twin critic: in each Q network, the parameters of the last
    submodule (in registration order, which is forward order in mtrl's networks: the trunk's
    layers, then the head) that holds shared parameters of its own. With one shared output
    layer that is the output layer; with per-task heads, the trunk's last layer."""
    task_specific = task_specific_parameters(critic)
    layer = []
    for network_name, network in critic.named_children():
        owners = []
        for path, module in network.named_modules():
            prefix = ".".join(filter(None, (network_name, path)))
            own = [f"{prefix}.{name}" for name, _ in module.named_parameters(recurse=False)]
            if own and not set(own) & task_specific:
                owners.append(own)
        layer += owners[-1]
    return layer
