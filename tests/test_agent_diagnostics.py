"""The gradient diagnostics inside MT-SAC: on the plain path as with surgery, they leave
training bit-identical, and the curvature is that of the step actually taken."""

import pytest
import torch
from helpers import ACT, STATE, K, N, make_batch
from torch.func import functional_call

from mtrl.agent import MTSAC
from mtrl.config import AgentConfig, BalancerConfig, SurgeryConfig


def make_agent(
    surgery: str = "none", every: int = 1, model: str = "mlp", balancer: str = "none"
) -> MTSAC:
    torch.manual_seed(0)
    config = AgentConfig(hidden_dims=[16, 16], batch_per_task=N, model=model)
    return MTSAC(
        STATE + K,
        ACT,
        K,
        config,
        seed=0,
        surgery=SurgeryConfig(surgery, diagnostics_every=every),
        balancer=BalancerConfig(balancer),
    )


def state(agent: MTSAC) -> list[torch.Tensor]:
    """Every parameter, target parameter and optimizer moment, and the noise generator."""
    modules = (agent.actor, agent.critic, agent.critic_target, agent.temperature)
    out = [p.detach().clone() for m in modules for p in m.parameters()]
    for component in agent.components.values():
        for moments in component.optimizer.state.values():
            out += [v.clone() for v in moments.values() if torch.is_tensor(v)]
    return [*out, agent.generator.get_state()]


@pytest.mark.parametrize(
    "surgery,model,balancer",
    [
        ("none", "mlp", "none"),
        ("none", "multihead", "none"),
        ("none", "mlp", "famo"),
        ("pcgrad", "mlp", "none"),
        ("pcgrad", "multihead", "uw"),
        ("cagrad", "mlp", "none"),
    ],
)
def test_diagnostics_leave_training_bit_identical(surgery, model, balancer):
    quiet, watched = (make_agent(surgery, every, model, balancer) for every in (0, 1))
    for step in range(4):
        batch = make_batch(seed=step)
        quiet_metrics, watched_metrics = quiet.update(batch), watched.update(batch)
        assert not any(key.startswith("diag/") for key in quiet_metrics)
        assert "diag/critic/curvature" in watched_metrics
        for key, value in quiet_metrics.items():
            assert torch.equal(value, watched_metrics[key]), key
    for a, b in zip(state(quiet), state(watched), strict=True):
        assert torch.equal(a, b)


def test_the_plain_path_reports_the_triad_for_components_with_shared_parameters():
    agent = make_agent("none", every=2)
    assert not any(key.startswith("diag/") for key in agent.update(make_batch(seed=0)))
    metrics = agent.update(make_batch(seed=1))
    for component in ("critic", "actor"):
        prefix = f"diag/{component}/"
        assert metrics[prefix + "pair_cos"].shape == (K * (K - 1) // 2,)
        assert 0 <= metrics[prefix + "cond_a"] <= metrics[prefix + "conflict"] <= 1
        assert 0 <= metrics[prefix + "xi_le_1"] <= metrics[prefix + "conflict"]
        # without surgery (and without a balancer) the update is the mean gradient
        torch.testing.assert_close(metrics[prefix + "update_norm_ratio"], torch.tensor(1.0))
        assert torch.isfinite(metrics[prefix + "curvature"])
    assert not any(key.startswith("diag/alpha/") for key in metrics)


def critic_mean_loss(agent: MTSAC, params: dict, obs, action, target) -> torch.Tensor:
    """The critic's multi-task loss written out: the mean over tasks of both Q networks'
    mean squared errors."""
    q1, q2 = functional_call(agent.critic, params, (obs, action))
    return ((q1 - target).pow(2).mean(-1) + (q2 - target).pow(2).mean(-1)).mean()


@pytest.mark.parametrize("surgery", ["none", "pcgrad"])
def test_curvature_is_that_of_the_step_taken_on_the_same_batch(surgery):
    agent = make_agent(surgery)
    batch = make_batch(seed=3)
    agent.update(make_batch(seed=2))  # away from the initial parameters
    critic = agent.components["critic"]
    before = {name: p.detach().clone() for name, p in critic.params.items()}
    noise_state = agent.generator.get_state()
    target = agent.critic_target_values(batch)  # the update's first draw: the same target
    agent.generator.set_state(noise_state)
    metrics = agent.update(batch)
    after = {name: p.detach().clone() for name, p in critic.params.items()}

    params = {name: p.clone().requires_grad_() for name, p in before.items()}
    loss_before = critic_mean_loss(agent, params, batch.obs, batch.action, target)
    grads = torch.autograd.grad(loss_before, list(params.values()))
    loss_after = critic_mean_loss(agent, after, batch.obs, batch.action, target)
    linear = sum((g * (after[n] - before[n])).sum() for n, g in zip(params, grads, strict=True))
    expected = 2 * (loss_after - loss_before - linear)
    torch.testing.assert_close(
        metrics["diag/critic/curvature"].float(), expected.detach(), rtol=1e-3, atol=1e-7
    )
    squared_norm = sum(g.pow(2).sum() for g in grads)
    torch.testing.assert_close(
        metrics["diag/critic/curvature_rel"].float(),
        expected.detach() / squared_norm,
        rtol=1e-3,
        atol=0,
    )
