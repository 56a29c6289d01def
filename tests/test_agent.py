import pytest
import torch
from helpers import ACT, STATE, K, N, make_batch
from torch.func import vmap

from mtrl import surgery
from mtrl.agent import MTSAC, AlphaInputs, CriticInputs
from mtrl.config import AgentConfig, SurgeryConfig

SURGERY_METHODS = surgery.available()


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
    inputs = CriticInputs(batch.obs, batch.action, target, batch.drawn)
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
    inputs = AlphaInputs(agent.task_onehot(batch.obs), log_prob, batch.drawn)
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


# ------------------------------------------------------------------ the papers' settings
def uniform_batch(counts: list[int], seed: int = 0):
    """A batch as a uniform draw lays it out: row k's first counts[k] slots drawn, the rest
    padding."""
    batch = make_batch(seed)
    drawn = torch.arange(N) < torch.tensor(counts)[:, None]
    return batch._replace(drawn=drawn.float()), drawn


def test_a_uniform_batch_trains_on_the_mean_over_its_draws(monkeypatch):
    """The mtrl family's critic loss on a uniform batch (agent/sac.py: F.mse_loss over the 1280
    draws, Q1 and Q2 summed) written on the drawn transitions alone: the plain path's gradient,
    and each task's loss the mean over its own draws (grad_manipulation.py
    _convert_loss_into_task_loss), 0 for a task drawn zero times."""
    agent = make_agent()
    batch, drawn = uniform_batch([5, 0, 2])
    critic = agent.components["critic"]
    target = agent.critic_target_values(batch)
    inputs = CriticInputs(batch.obs, batch.action, target, batch.drawn)
    losses = critic.loss(critic.params, inputs)
    obs, action, y = batch.obs[drawn], batch.action[drawn], target[drawn]
    q1, q2 = agent.critic(obs, action)
    per_sample = (q1 - y).pow(2) + (q2 - y).pow(2)
    expected = torch.stack([per_sample[:5].mean(), torch.tensor(0.0), per_sample[5:].mean()])
    torch.testing.assert_close(losses.detach(), expected.detach())
    reference = torch.autograd.grad(per_sample.mean(), list(critic.params.values()))
    monkeypatch.setattr(critic.optimizer, "step", lambda: None)
    agent._descend(critic, inputs)
    for param, grad in zip(critic.params.values(), reference, strict=True):
        torch.testing.assert_close(param.grad, grad)


def test_mean_critic_reduction_halves_the_summed_loss():
    """metaworld-algorithms mtsac.py: ((q_pred - target) ** 2).mean() over the ensemble of two
    Q networks: the mean of the two losses, half their sum."""
    batch = make_batch()
    summed, mean = make_agent(), make_agent(critic_reduction="mean")
    target = summed.critic_target_values(batch)
    inputs = CriticInputs(batch.obs, batch.action, target, batch.drawn)
    a = summed.components["critic"].loss(summed.components["critic"].params, inputs)
    b = mean.components["critic"].loss(mean.components["critic"].params, inputs)
    torch.testing.assert_close(b, a / 2)


def test_adam_eps_reaches_every_optimizer():
    agent = make_agent(adam_eps=1e-5)
    assert {c.optimizer.param_groups[0]["eps"] for c in agent.components.values()} == {1e-5}
    assert make_agent().components["actor"].optimizer.param_groups[0]["eps"] == 1e-8


def test_a_shared_temperature_is_one_parameter_every_task_moves():
    agent = make_agent(temperature="shared")
    alpha = agent.components["alpha"]
    assert list(alpha.params) == ["shared_log_alpha"] and alpha.shared_numel == 1
    log_prob = torch.randn(K, N)
    inputs = AlphaInputs(agent.task_onehot(make_batch().obs), log_prob, make_batch().drawn)
    jacobian = torch.autograd.functional.jacobian(
        lambda p: alpha.loss({"shared_log_alpha": p}, inputs), alpha.params["shared_log_alpha"]
    )
    # d/d log_alpha of -log_alpha (log pi + H), each task's mean: the same parameter for all
    torch.testing.assert_close(jacobian[:, 0], -(log_prob + agent.target_entropy).mean(-1))
    metrics = agent.update(make_batch())
    assert metrics["alpha"].shape == (K,) and torch.all(metrics["alpha"] == metrics["alpha"][0])


@pytest.mark.parametrize("same_sign", [True, False])
def test_pcgrad_combines_the_tasks_gradients_of_a_shared_temperature(same_sign, monkeypatch):
    """With one temperature the K task gradients are scalars. PCGrad projects a conflicting
    scalar onto zero (g_i - (g_i g_j / g_j^2) g_j = 0), so tasks of mixed signs cancel to no
    update; of one sign they pass unchanged (mtrl's PCGrad: the mean of the modified rows)."""
    agent = MTSAC(
        STATE + K,
        ACT,
        K,
        AgentConfig(hidden_dims=[8], batch_per_task=N, temperature="shared"),
        surgery=SurgeryConfig("pcgrad"),
    )
    alpha = agent.components["alpha"]
    assert "alpha" in agent.surgeries
    entropy_gap = torch.tensor([1.0, 2.0, 3.0] if same_sign else [1.0, -2.0, 3.0])
    log_prob = entropy_gap[:, None].expand(K, N) - agent.target_entropy
    inputs = AlphaInputs(agent.task_onehot(make_batch().obs), log_prob, make_batch().drawn)
    monkeypatch.setattr(alpha.optimizer, "step", lambda: None)
    agent._descend(alpha, inputs)
    grad = alpha.params["shared_log_alpha"].grad
    expected = -entropy_gap.mean() if same_sign else torch.tensor(0.0)
    torch.testing.assert_close(grad, expected.reshape(1))


@pytest.mark.parametrize("method", SURGERY_METHODS)
def test_every_surgery_method_updates_a_shared_temperature(method):
    """CAGrad's and PCGrad's published runs send the temperature's gradients through the
    method too (their _compute_gradient override covers log_alpha)."""
    torch.manual_seed(0)
    config = AgentConfig(hidden_dims=[8], batch_per_task=N, temperature="shared")
    agent = MTSAC(STATE + K, ACT, K, config, surgery=SurgeryConfig(method, diagnostics_every=1))
    before = agent.temperature.shared_log_alpha.detach().clone()
    for seed in range(2):
        metrics = agent.update(make_batch(seed))
    assert all(torch.isfinite(value).all() for value in metrics.values())
    assert "diag/alpha/cos" in metrics
    assert not torch.equal(agent.temperature.shared_log_alpha, before)
