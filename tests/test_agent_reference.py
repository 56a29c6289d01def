"""One MT-SAC update against a reference written here from the SAC equations (Haarnoja et al.
2018, with clipped double Q and learned per-task temperatures), with non-default gamma, tau,
target entropy and per-task temperatures:

    y        = r + gamma (1 - terminated) (min_j Q'_j(s', a') - alpha_k log pi(a'|s'))
    L_Q      = mean_n (Q_1(s, a) - y)^2 + mean_n (Q_2(s, a) - y)^2          (per task k)
    L_pi     = mean_n (alpha_k log pi(a~|s) - min_j Q_j(s, a~))             (updated critic)
    L_alpha  = -mean_n log alpha_k (log pi(a~|s) + H)                      (updated actor)
    theta'  <- theta' + tau (theta - theta')

with the tanh-Gaussian log-density log pi(tanh u) = log N(u; mu, sigma) - sum log(1 - tanh^2 u)
written out. Each component steps on the mean of its K losses; the reference steps its own
copies with torch's Adam. Compared: the per-task losses and targets the update reports, the
gradient each optimizer receives, and every parameter afterwards (targets included).
"""

import copy
import math

import pytest
import torch
from helpers import ACT, STATE, K, N, make_batch

from mtrl.agent import MTSAC
from mtrl.config import AgentConfig, SurgeryConfig

GAMMA, TAU, ENTROPY = 0.9, 0.1, -1.3
ALPHAS = torch.tensor([0.3, 0.05, 1.7], dtype=torch.float64)


def squashed_sample(actor, obs, noise):
    """a = tanh(mu + sigma eps) and log pi(a|s) from the actor's mean and log-std."""
    mean, log_std = actor.distribution(obs)
    u = mean + log_std.exp() * noise
    gaussian = (-0.5 * noise**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    return torch.tanh(u), gaussian - torch.log(1 - torch.tanh(u) ** 2).sum(-1)


def adam_step(params, loss, lr):
    """The reference's step: the gradient of ``loss``, then one torch.optim.Adam step."""
    params = list(params)
    grads = torch.autograd.grad(loss, params)
    optimizer = torch.optim.Adam(params, lr=lr)
    for param, grad in zip(params, grads, strict=True):
        param.grad = grad
    optimizer.step()
    return grads


@pytest.mark.parametrize("surgery", ["none", "mean"])
def test_one_update_equals_the_sac_equations(monkeypatch, surgery):
    """Both update paths: the gradient of the mean loss, and the K per-task gradients from one
    vmapped pass combined by their mean."""
    torch.manual_seed(0)
    config = AgentConfig(
        hidden_dims=[16, 16],
        batch_per_task=N,
        gamma=GAMMA,
        tau=TAU,
        target_entropy=ENTROPY,
        actor_lr=1e-3,
        critic_lr=2e-3,
        alpha_lr=3e-3,
    )
    agent = MTSAC(STATE + K, ACT, K, config, seed=0, surgery=SurgeryConfig(surgery))
    for module in (agent.actor, agent.critic, agent.critic_target, agent.temperature):
        module.double()
    with torch.no_grad():
        agent.temperature.log_alpha.copy_(ALPHAS.log())
    batch = make_batch(seed=3)
    terminated = torch.zeros(K, N)
    terminated[:, ::3] = 1.0
    batch = batch._replace(terminated=terminated)
    batch = type(batch)(*(t.double() for t in batch))

    actor, critic = copy.deepcopy(agent.actor), copy.deepcopy(agent.critic)
    target, temperature = copy.deepcopy(agent.critic_target), copy.deepcopy(agent.temperature)
    generator = torch.Generator()
    generator.set_state(agent.generator.get_state())
    next_noise = torch.randn(K, N, ACT, generator=generator)
    noise = torch.randn(K, N, ACT, generator=generator)

    received = {}
    for name, component in agent.components.items():
        step = component.optimizer.step

        def record(name=name, component=component, step=step):
            received[name] = [p.grad.clone() for p in component.params.values()]
            return step()

        monkeypatch.setattr(component.optimizer, "step", record)
    metrics = agent.update(batch)

    # Critic: the soft Bellman target of the target critics, per-task temperatures.
    alpha = ALPHAS[:, None]
    with torch.no_grad():
        next_action, next_log_prob = squashed_sample(actor, batch.next_obs, next_noise)
        q1_next, q2_next = target(batch.next_obs, next_action)
        soft_value = torch.minimum(q1_next, q2_next) - alpha * next_log_prob
        y = batch.reward + GAMMA * (1 - batch.terminated) * soft_value
    q1, q2 = critic(batch.obs, batch.action)
    critic_losses = (q1 - y).pow(2).mean(-1) + (q2 - y).pow(2).mean(-1)
    critic_grads = adam_step(critic.parameters(), critic_losses.mean(), 2e-3)

    # Actor: against the updated critic, whose parameters it does not train.
    action, log_prob = squashed_sample(actor, batch.obs, noise)
    q1, q2 = critic(batch.obs, action)
    actor_losses = (alpha * log_prob - torch.minimum(q1, q2)).mean(-1)
    actor_grads = adam_step(actor.parameters(), actor_losses.mean(), 1e-3)

    # Temperatures: the updated actor's log-probabilities on the same noise.
    with torch.no_grad():
        _, log_prob = squashed_sample(actor, batch.obs, noise)
    log_alpha = temperature.log_alpha
    alpha_losses = -(log_alpha[:, None] * (log_prob + ENTROPY)).mean(-1)
    alpha_grads = adam_step([log_alpha], alpha_losses.mean(), 3e-3)
    entropy = -log_prob.mean(-1)

    with torch.no_grad():
        for slow, fast in zip(target.parameters(), critic.parameters(), strict=True):
            slow.add_(TAU * (fast - slow))

    close = {"rtol": 1e-9, "atol": 1e-12}
    torch.testing.assert_close(metrics["q_target"], y.mean(-1), **close)
    torch.testing.assert_close(metrics["critic_loss"], critic_losses.detach(), **close)
    torch.testing.assert_close(metrics["actor_loss"], actor_losses.detach(), **close)
    torch.testing.assert_close(metrics["alpha_loss"], alpha_losses.detach(), **close)
    torch.testing.assert_close(metrics["entropy"], entropy, **close)
    torch.testing.assert_close(metrics["alpha"], log_alpha.detach().exp(), **close)
    for name, grads in [("critic", critic_grads), ("actor", actor_grads), ("alpha", alpha_grads)]:
        for got, expected in zip(received[name], grads, strict=True):
            torch.testing.assert_close(got, expected, **close)
    for ours, theirs in [
        (agent.critic, critic),
        (agent.actor, actor),
        (agent.temperature, temperature),
        (agent.critic_target, target),
    ]:
        for got, expected in zip(ours.parameters(), theirs.parameters(), strict=True):
            torch.testing.assert_close(got, expected, **close)
