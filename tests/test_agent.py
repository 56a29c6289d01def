import pytest
import torch
from helpers import ACT, STATE, K, N, make_batch
from torch.func import vmap

from mtrl.agent import MTSAC, AlphaInputs, CriticInputs
from mtrl.config import AgentConfig, SurgeryConfig


def make_agent(**overrides) -> MTSAC:
    torch.manual_seed(0)
    config = AgentConfig(hidden_dims=[16, 16], batch_per_task=N, **overrides)
    return MTSAC(STATE + K, ACT, K, config, seed=0)


def test_critic_target_bootstraps_on_truncation_but_not_on_termination():
    agent = make_agent()
    batch = make_batch()
    terminated = torch.zeros(K, N)
    terminated[0] = 1.0
    truncated = torch.zeros(K, N)
    truncated[1] = 1.0
    flagged = batch._replace(terminated=terminated, truncated=truncated)

    state = agent.generator.get_state()
    target = agent.critic_target_values(flagged)
    agent.generator.set_state(state)
    plain = agent.critic_target_values(batch)

    # independent formula, with the same policy noise
    agent.generator.set_state(state)
    noise = torch.randn(K, N, ACT, generator=agent.generator)
    with torch.no_grad():
        next_action, next_log_prob = agent.actor(batch.next_obs, noise)
        q1, q2 = agent.critic_target(batch.next_obs, next_action)
    soft_value = torch.minimum(q1, q2) - 1.0 * next_log_prob  # init_alpha = 1
    expected = batch.reward + 0.99 * soft_value

    torch.testing.assert_close(target[0], batch.reward[0])  # terminal: no bootstrap
    torch.testing.assert_close(target[1], expected[1])  # truncated: bootstraps as usual
    torch.testing.assert_close(target[2], expected[2])
    torch.testing.assert_close(plain, expected)


def test_losses_are_per_task_and_agree_with_their_vmapped_slices():
    """The [K] loss vector equals the K losses computed one task at a time (the surgery path)."""
    agent = make_agent(multi_head=True)
    batch = make_batch()
    target = agent.critic_target_values(batch)
    inputs = CriticInputs(batch.obs, batch.action, target)
    critic = agent.components["critic"]
    losses = critic.loss(critic.params, inputs)
    assert losses.shape == (K,)
    sliced = vmap(critic.loss, in_dims=(None, 0))(critic.params, inputs)
    torch.testing.assert_close(losses, sliced)
    for k in range(K):
        alone = critic.loss(critic.params, CriticInputs(*(t[k] for t in inputs)))
        torch.testing.assert_close(losses[k], alone)


def test_each_temperature_only_sees_its_own_task():
    agent = make_agent()
    batch = make_batch()
    alpha = agent.components["alpha"]
    log_prob = torch.randn(K, N)
    inputs = AlphaInputs(agent.task_onehot(batch.obs), log_prob)
    jacobian = torch.autograd.functional.jacobian(
        lambda log_alpha: alpha.loss({"log_alpha": log_alpha}, inputs), alpha.params["log_alpha"]
    )
    off_diagonal = jacobian - torch.diag(torch.diagonal(jacobian))
    assert torch.all(off_diagonal == 0)
    expected = -(log_prob - ACT).mean(-1)  # d/dlog_alpha of -log_alpha (log_prob + H), H = -|A|
    torch.testing.assert_close(torch.diagonal(jacobian), expected)


def test_update_trains_every_component_and_reports_per_task_metrics():
    agent = make_agent()
    before = {
        name: [p.detach().clone() for p in c.params.values()]
        for name, c in agent.components.items()
    }
    target_before = [p.clone() for p in agent.critic_target.parameters()]
    metrics = agent.update(make_batch())
    for name, component in agent.components.items():
        changed = [
            not torch.equal(old, new)
            for old, new in zip(before[name], component.params.values(), strict=True)
        ]
        assert all(changed), f"{name}: every parameter should move"
    moved = [
        not torch.equal(a, b)
        for a, b in zip(target_before, agent.critic_target.parameters(), strict=True)
    ]
    assert all(moved)
    for key in ("critic_loss", "actor_loss", "alpha_loss", "alpha", "entropy", "q_target"):
        assert metrics[key].shape == (K,), key
        assert torch.isfinite(metrics[key]).all(), key
    assert not any(p.requires_grad for p in agent.critic_target.parameters())
    agent.update(make_batch(seed=1))
    assert agent.updates == 2  # the counter checkpoints and the diagnostics schedule read


def test_polyak_update_moves_targets_by_tau():
    agent = make_agent(tau=0.25)
    for p in agent.critic.parameters():
        p.data.add_(1.0)
    target = [p.clone() for p in agent.critic_target.parameters()]
    agent._update_targets()
    for old, new, online in zip(
        target, agent.critic_target.parameters(), agent.critic.parameters(), strict=True
    ):
        torch.testing.assert_close(new, old + 0.25 * (online - old))


def test_act_is_deterministic_without_noise_and_bounded():
    agent = make_agent()
    obs = make_batch().obs[:, 0].numpy()
    a1 = agent.act(obs, deterministic=True)
    a2 = agent.act(obs, deterministic=True)
    assert a1.shape == (K, ACT)
    assert (a1 == a2).all()
    stochastic = agent.act(obs)
    assert abs(stochastic).max() < 1 and not (stochastic == a1).all()


@pytest.mark.parametrize("target_entropy,expected", [(None, -ACT), (-0.5, -0.5)])
def test_target_entropy_defaults_to_minus_action_dim(target_entropy, expected):
    assert make_agent(target_entropy=target_entropy).target_entropy == expected


@pytest.mark.parametrize("surgery", ["none", "pcgrad"])
def test_grad_clip_bounds_the_update_that_reaches_the_optimizer(surgery, monkeypatch):
    """Clipping acts after surgery, on the actor and the critic, never on the temperatures."""
    clip = 1e-3
    torch.manual_seed(0)
    config = AgentConfig(hidden_dims=[16, 16], batch_per_task=N, grad_clip=clip)
    agent = MTSAC(STATE + K, ACT, K, config, seed=0, surgery=SurgeryConfig(surgery))
    norms: dict[str, float] = {}
    for name, component in agent.components.items():
        step = component.optimizer.step

        def record(name=name, component=component, step=step):
            grads = [p.grad for p in component.params.values()]
            norms[name] = float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads])))
            return step()

        monkeypatch.setattr(component.optimizer, "step", record)
    metrics = agent.update(make_batch())
    for name in ("critic", "actor"):
        assert float(metrics[f"grad_norm/{name}"]) > 10 * clip  # the clip was active
        assert norms[name] <= clip * (1 + 1e-4), name
    assert norms["alpha"] > clip  # untouched


def test_grad_clip_above_the_norm_changes_nothing():
    plain, clipped = make_agent(), make_agent(grad_clip=1e9)
    batch = make_batch()
    plain.update(batch)
    clipped.update(batch)
    for a, b in zip(plain.actor.parameters(), clipped.actor.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    for a, b in zip(plain.critic.parameters(), clipped.critic.parameters(), strict=True):
        torch.testing.assert_close(a, b)
