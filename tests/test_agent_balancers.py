"""Loss balancers inside MT-SAC: equal weights reproduce the plain update, FAMO observes the
losses after the step, GradNorm's gradient norms at the last shared layer are right on both
paths, weights act on the rows before surgery, refusals, and the state in checkpoints."""

import pytest
import torch
from helpers import ACT, STATE, K, make_batch
from test_agent_surgery import parameters

from mtrl import balancers
from mtrl import checkpoint as ckpt
from mtrl.agent import MTSAC, CriticInputs, last_shared_layers
from mtrl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mtrl.config import AgentConfig, BalancerConfig, SurgeryConfig, changed_keys, load_config
from mtrl.surgery import per_task_grads


def make_agent(
    balancer: str = "none", surgery: str = "none", multi_head: bool = False, **options
) -> MTSAC:
    torch.manual_seed(0)
    config = AgentConfig(hidden_dims=[16, 16], batch_per_task=8, multi_head=multi_head)
    return MTSAC(
        STATE + K,
        ACT,
        K,
        config,
        seed=0,
        surgery=SurgeryConfig(surgery),
        balancer=BalancerConfig(balancer, options=options),
    )


def critic_inputs(agent: MTSAC, seed: int) -> CriticInputs:
    batch = make_batch(seed)
    return CriticInputs(batch.obs, batch.action, agent.critic_target_values(batch), batch.drawn)


@pytest.mark.parametrize("surgery", ["none", "mean"])
@pytest.mark.parametrize("balancer", ["uw", "gradnorm"])
def test_equal_weights_reproduce_the_plain_update(balancer, surgery):
    """Uncertainty weighting (s = 0) and GradNorm (w = 1) start with all weights 1: their first
    update is the plain one, on the plain path and through surgery alike."""
    plain, balanced = make_agent(), make_agent(balancer, surgery)
    batch = make_batch(seed=0)
    plain_metrics, metrics = plain.update(batch), balanced.update(batch)
    assert torch.equal(metrics["balancer/critic/weight"], torch.ones(K))
    torch.testing.assert_close(metrics["critic_loss"], plain_metrics["critic_loss"])
    for a, b in zip(parameters(plain), parameters(balanced), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    after = balanced.update(make_batch(seed=1))["balancer/critic/weight"]
    assert not torch.equal(after, torch.ones(K)), "the weights adapt after the first step"


@pytest.mark.parametrize("surgery", ["none", "pcgrad"])
def test_famo_learns_from_the_losses_after_the_step_on_the_same_batch(surgery):
    agent = make_agent("famo", surgery)
    critic = agent.components["critic"]
    inputs = critic_inputs(agent, seed=3)
    with torch.no_grad():
        before = critic.loss(critic.params, inputs)
    agent._descend(critic, inputs)
    with torch.no_grad():
        after = critic.loss(critic.params, inputs)
    # Algorithm 1 from z = 1/K: delta_i = (d_i - mean d) / K with d the log decreases; one
    # Adam step from zero moments moves each logit by -lr sign(delta_i)
    decrease = (before + 1e-8).log() - (after + 1e-8).log()
    delta = (decrease - decrease.mean()) / K
    expected = -0.025 * delta / (delta.abs() + 1e-8)
    torch.testing.assert_close(agent.balancers["critic"].param, expected)
    assert "balancer/critic/weight" in agent._diagnostics


def test_famo_weights_act_on_the_rows_before_surgery():
    """mean(w_i g_i) over the rows is the gradient of mean(w * losses): FAMO through the
    'mean' surgery equals FAMO on the plain path."""
    plain, rows = make_agent("famo"), make_agent("famo", "mean")
    for seed in range(3):
        batch = make_batch(seed)
        a, b = plain.update(batch), rows.update(batch)
        torch.testing.assert_close(a["balancer/critic/weight"], b["balancer/critic/weight"])
    for a, b in zip(parameters(plain), parameters(rows), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "multi_head,expected",
    [
        (False, ["q1.model.head.weight", "q1.model.head.bias"]),
        (True, ["q1.model.trunk.layers.1.weight", "q1.model.trunk.layers.1.bias"]),
    ],
)
def test_gradnorm_layer_is_the_last_shared_layer_of_each_q_network(multi_head, expected):
    agent = make_agent(multi_head=multi_head)
    twin = expected + [name.replace("q1.", "q2.") for name in expected]
    assert last_shared_layers(agent.critic) == agent.gradnorm_layer == twin


def own_layer_gradient_norms(agent: MTSAC, inputs: CriticInputs) -> torch.Tensor:
    """Reference: each task's loss alone, one autograd call per task, at the layer."""
    critic = agent.components["critic"]
    layer = [critic.params[name] for name in agent.gradnorm_layer]
    norms = []
    for k in range(K):
        loss = critic.loss(critic.params, CriticInputs(*(t[k] for t in inputs)))
        grads = torch.autograd.grad(loss, layer)
        norms.append(torch.cat([g.flatten() for g in grads]).norm())
    return torch.stack(norms)


@pytest.mark.parametrize("multi_head", [False, True])
def test_gradnorm_norms_agree_on_both_paths_with_per_task_autograd(multi_head):
    agent = make_agent(multi_head=multi_head)
    critic = agent.components["critic"]
    inputs = critic_inputs(agent, seed=2)
    expected = own_layer_gradient_norms(agent, inputs)
    losses = critic.loss(critic.params, inputs)
    by_autograd = agent._layer_norms_by_autograd(critic, losses)
    rows, _ = per_task_grads(critic.loss, critic.params, inputs, randomness="error")
    by_rows = agent._layer_norms_of_rows(critic, rows)
    torch.testing.assert_close(by_autograd, expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(by_rows, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("balancer", ["famo", "uw", "gradnorm"])
def test_balanced_updates_report_positive_finite_weights(balancer):
    agent = make_agent(balancer, "pcgrad", multi_head=True)
    for seed in range(4):
        metrics = agent.update(make_batch(seed))
    weights = metrics["balancer/critic/weight"]
    assert weights.shape == (K,) and torch.isfinite(weights).all() and (weights > 0).all()
    assert set(agent.balancers) == {"critic"}
    assert not any(k.startswith("balancer/actor") for k in metrics)


@pytest.mark.parametrize(
    "balancer,surgery,message",
    [
        (BalancerConfig("famo", components=["actor"]), SurgeryConfig(), "actor is refused"),
        (BalancerConfig("uw", components=["alpha"]), SurgeryConfig(), "changes sign"),
        (BalancerConfig("gradnorm"), SurgeryConfig("nashmtl"), "cannot both act on the critic"),
        (BalancerConfig("uw"), SurgeryConfig("imtlg"), "ignores the scale of each task"),
        (BalancerConfig("rlw"), SurgeryConfig(), "unknown balancer 'rlw'; allowed: none, famo"),
        (BalancerConfig("uw", {"lr": -1}), SurgeryConfig(), "balancer.options: option 'lr'"),
        (BalancerConfig(options={"lr": 1}), SurgeryConfig(), "balancer.name is none"),
    ],
)
def test_meaningless_balancers_are_refused(balancer, surgery, message):
    with pytest.raises(ValueError, match=message):
        balancers.validate(balancer, surgery)


def test_surgery_elsewhere_combines_with_any_balancer():
    """Nash-MTL on the actor does not meet the balancer on the critic."""
    balancers.validate(BalancerConfig("famo"), SurgeryConfig("nashmtl", components=["actor"]))


def test_checkpoint_round_trip_continues_bitwise(tmp_path):
    agent = make_agent("gradnorm", "pcgrad")
    for seed in range(3):
        agent.update(make_batch(seed))
    save_checkpoint(tmp_path / "a.pt", ckpt.KIND_AGENT, {"agent": ckpt._agent_state(agent)})
    other = make_agent("gradnorm", "pcgrad")
    ckpt._load_agent_state(other, load_checkpoint(tmp_path / "a.pt").state["agent"])
    saved, restored = agent.balancers["critic"], other.balancers["critic"]
    assert torch.equal(saved.param, restored.param) and not torch.equal(saved.param, torch.ones(K))
    assert torch.equal(saved.initial_losses, restored.initial_losses)
    batch = make_batch(seed=7)
    a, b = agent.update(batch), other.update(batch)
    assert torch.equal(a["balancer/critic/weight"], b["balancer/critic/weight"])
    for x, y in zip(parameters(agent), parameters(other), strict=True):
        assert torch.equal(x, y)


def test_checkpoint_without_the_balancer_state_is_refused():
    state = ckpt._agent_state(make_agent())
    with pytest.raises(CheckpointError, match="loss-balancer state does not fit"):
        ckpt._load_agent_state(make_agent("uw"), state)


def test_famo_preset_sets_only_the_method_and_its_commands_temperature_on_top_of_mt10():
    """FAMO's MT10 command (Cranial-XIX/FAMO mtrl_files/run.sh, line 8) also sets
    should_use_disentangled_alpha=False: one temperature for all tasks."""
    famo = load_config("mt10-famo")
    changed = changed_keys(load_config("mt10"), famo)
    assert changed.pop("agent.temperature") == ("per_task", "shared")
    assert "balancer.name" in changed and all(key.startswith("balancer.") for key in changed)
    assert famo.balancer.options == {"gamma": 0.01, "lr": 0.025}
    balancers.validate(famo.balancer, famo.surgery)
