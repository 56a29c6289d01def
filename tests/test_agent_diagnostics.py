"""The gradient diagnostics inside MT-SAC: on the plain path as with surgery, they leave
training bit-identical, and the curvature is that of the step actually taken."""

import pytest
import torch
from helpers import ACT, STATE, K, N, make_batch, tiny_mt1, without_timing
from torch.func import functional_call

from mtrl.agent import MTSAC
from mtrl.analysis.cli import report_main
from mtrl.checkpoint import step_file
from mtrl.cli import train_main
from mtrl.config import AgentConfig, BalancerConfig, SurgeryConfig
from mtrl.logger import read_metrics


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


@pytest.mark.parametrize("surgery", ["none", "pcgrad"])
def test_a_probe_batch_leaves_training_bit_identical(surgery):
    """surgery.diagnostics_batch: the diagnostics on a second, larger batch draw their noise
    from the probe stream only; every parameter, moment and training stream stays the same."""
    plain, probed = make_agent(surgery, every=2), make_agent(surgery, every=2)
    for step in range(5):
        batch = make_batch(seed=step)
        a, b = plain.update(batch), probed.update(batch, make_batch(100 + step, 4 * N))
        assert ("diag/critic/probe/conflict" in b) == (step % 2 == 1)
        assert "diag/actor/probe/cond_a" in b or step % 2 == 0
        for key, value in a.items():
            assert torch.equal(value, b[key]), key
    for x, y in zip(state(plain), state(probed), strict=True):
        assert torch.equal(x, y)
    assert not torch.equal(plain.probe_generator.get_state(), probed.probe_generator.get_state())


def test_the_probe_statistics_are_those_of_the_probe_batch():
    """The critic's probe cosine and curvature, by hand: targets from the pre-update target
    networks with the probe stream's noise, each task's gradient on its own probe slice."""
    agent = make_agent("none", every=1)
    agent.update(make_batch(seed=2))  # away from the initial parameters
    batch, probe = make_batch(seed=3), make_batch(7, 3 * N)
    critic = agent.components["critic"]
    before = {name: p.detach().clone() for name, p in critic.params.items()}
    probe_state = agent.probe_generator.get_state()
    probe_target = agent._target_values(probe, agent._probe_noise(probe.action.shape))
    agent.probe_generator.set_state(probe_state)
    metrics = agent.update(batch, probe)
    after = {name: p.detach().clone() for name, p in critic.params.items()}

    grads, losses = [], []
    for task in range(K):
        params = {name: p.clone().requires_grad_() for name, p in before.items()}
        sl = slice(task, task + 1)
        loss = critic_mean_loss(agent, params, probe.obs[sl], probe.action[sl], probe_target[sl])
        grads.append(
            torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(params.values()))])
        )
        losses.append(loss.detach())
    rows = torch.stack(grads).double()
    cos = [
        (rows[i] @ rows[j] / (rows[i].norm() * rows[j].norm())).item()
        for i, j in zip(*torch.triu_indices(K, K, 1).tolist(), strict=True)
    ]
    torch.testing.assert_close(
        metrics["diag/critic/probe/pair_cos"].double(),
        torch.tensor(cos, dtype=torch.double),
        rtol=1e-4,
        atol=1e-5,
    )
    assert not torch.allclose(
        metrics["diag/critic/pair_cos"], metrics["diag/critic/probe/pair_cos"]
    )

    step = torch.cat([(after[n] - before[n]).flatten() for n in before]).double()
    loss_after = critic_mean_loss(agent, after, probe.obs, probe.action, probe_target)
    expected = 2 * (loss_after.double() - torch.stack(losses).double().mean() - rows.mean(0) @ step)
    torch.testing.assert_close(
        metrics["diag/critic/probe/curvature"].double(), expected, rtol=1e-2, atol=1e-6
    )


def test_a_run_with_probe_batches_trains_as_one_without(tmp_path):
    """mtrl-train with surgery.diagnostics_batch: the same parameters, optimizer moments,
    replay and training streams at the end (the probe stream aside), the same training and
    diagnostics lines, and the probe's statistics beside them."""
    pair = ("--benchmark", "mt50:reach-v3,push-v3", "surgery.diagnostics_every=5")
    runs = {}
    for name, extra in (("plain", ()), ("probed", ("surgery.diagnostics_batch=64",))):
        runs[name] = tmp_path / name
        assert train_main([*tiny_mt1(200, runs[name], *pair[2:], *extra), *pair[:2]]) == 0
    raw = [torch.load(step_file(run, 200), weights_only=True) for run in runs.values()]
    assert raw[0]["tensors"].keys() == raw[1]["tensors"].keys()
    differing = [
        k for k, v in raw[0]["tensors"].items() if not torch.equal(v, raw[1]["tensors"][k])
    ]
    assert differing == ["agent/probe_generator"]
    plain, probed = (read_metrics(run) for run in runs.values())
    assert any("diag/critic/probe/conflict" in r for r in probed)
    for a, b in zip(without_timing(plain), without_timing(probed), strict=True):
        assert a == {k: v for k, v in b.items() if "/probe/" not in k}
    # mtrl-report --claims sets the probe's triad beside the same runs' update-batch triad.
    out = tmp_path / "claims"
    argv = [str(runs["probed"]), "--claims", "push-v3", "--out", str(out), "--reps", "100"]
    assert report_main(argv) == 0
    text = (out / "claims.md").read_text()
    assert "### critic loss, probe batch: runs with a probe batch (64 per task)" in text
    assert "### actor loss, update batch: runs with a probe batch (64 per task)" in text
