"""Gradient surgery inside MT-SAC: the mean reproduces the plain update, tasks never mix in
task-specific parameters, and the Gram diagnostics come out with sane values."""

import pytest
import torch
from test_agent import ACT, STATE, K, make_batch

from mtrl.agent import MTSAC, CriticInputs
from mtrl.config import AgentConfig, SurgeryConfig


def make_agent(surgery: str = "none", multi_head: bool = False, **surgery_kw) -> MTSAC:
    torch.manual_seed(0)
    config = AgentConfig(hidden_dims=[16, 16], batch_per_task=8, multi_head=multi_head)
    return MTSAC(STATE + K, ACT, K, config, seed=0, surgery=SurgeryConfig(surgery, **surgery_kw))


def parameters(agent: MTSAC) -> list[torch.Tensor]:
    modules = (agent.actor, agent.critic, agent.critic_target, agent.temperature)
    return [p.detach().clone() for m in modules for p in m.parameters()]


@pytest.mark.parametrize("multi_head", [False, True])
def test_mean_surgery_reproduces_the_plain_update(multi_head):
    plain, mean = make_agent("none", multi_head), make_agent("mean", multi_head)
    for a, b in zip(parameters(plain), parameters(mean), strict=True):
        assert torch.equal(a, b)
    for step in range(3):
        batch = make_batch(seed=step)
        plain_metrics = plain.update(batch)
        mean_metrics = mean.update(batch)
        for key in ("critic_loss", "actor_loss", "alpha_loss"):
            torch.testing.assert_close(plain_metrics[key], mean_metrics[key])
    for a, b in zip(parameters(plain), parameters(mean), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def critic_gradient(agent: MTSAC, inputs: CriticInputs) -> torch.Tensor:
    critic = agent.components["critic"]
    agent._descend(critic, inputs)
    return torch.cat([p.grad.flatten() for p in critic.params.values()])


def test_pcgrad_changes_the_gradient_when_tasks_conflict():
    plain, pcgrad = make_agent("none"), make_agent("pcgrad", diagnostics_every=1)
    batch = make_batch(seed=1)
    # task 0 wants larger Q values, task 1 smaller ones: their shared gradients conflict
    target = torch.tensor([10.0, -10.0, 0.0])[:, None].expand(K, batch.reward.shape[1])
    inputs = CriticInputs(batch.obs, batch.action, target, batch.drawn)
    mean_grad, pc_grad = critic_gradient(plain, inputs), critic_gradient(pcgrad, inputs)
    conflicts = pcgrad._diagnostics["diag/critic/conflict"].item()
    assert conflicts > 0, "the targets were chosen to make task gradients conflict"
    assert (mean_grad - pc_grad).norm() > 1e-3 * mean_grad.norm()


def own_task_head_gradients(agent: MTSAC, inputs: CriticInputs) -> dict[str, torch.Tensor]:
    """Reference: each task's head block from its own loss alone, by plain autograd."""
    critic = agent.components["critic"]
    heads = {n: p for n, p in critic.params.items() if "head" in n}
    expected = {n: torch.zeros_like(p) for n, p in heads.items()}
    for k in range(K):
        task_inputs = CriticInputs(*(t[k] for t in inputs))
        loss = critic.loss(critic.params, task_inputs)
        grads = torch.autograd.grad(loss, list(heads.values()))
        for name, grad in zip(heads, grads, strict=True):
            # head outputs are grouped by task: rows k*out ... (k+1)*out - 1 belong to task k
            expected[name].view(K, -1)[k] = grad.reshape(K, -1)[k] / K
    return expected


@pytest.mark.parametrize("method", ["pcgrad", "mgda", "cagrad"])
def test_task_specific_heads_get_exactly_their_own_task_gradient(method):
    agent = make_agent(method, multi_head=True)
    batch = make_batch(seed=2)
    inputs = CriticInputs(batch.obs, batch.action, agent.critic_target_values(batch), batch.drawn)
    expected = own_task_head_gradients(agent, inputs)
    critic = agent.components["critic"]
    assert list(critic.params)[-4:] == sorted(expected, key=list(critic.params).index)
    agent._descend(critic, inputs)
    for name, grad in expected.items():
        torch.testing.assert_close(critic.params[name].grad, grad, rtol=1e-5, atol=1e-7)


def test_temperatures_are_never_mixed():
    """One log-alpha per task, no shared parameter: no surgery object, own gradient only."""
    agent = make_agent("pcgrad")
    assert set(agent.surgeries) == {"critic", "actor"}
    assert agent.components["alpha"].shared_numel == 0


def test_components_without_surgery_take_the_plain_path():
    agent = make_agent("pcgrad", components=["critic"])
    assert set(agent.surgeries) == {"critic"}


def test_diagnostics_are_reported_every_n_updates_with_sane_values():
    agent = make_agent("pcgrad", diagnostics_every=2)
    first = agent.update(make_batch(seed=0))
    assert not any(k.startswith("diag/") for k in first)
    second = agent.update(make_batch(seed=1))
    for component in ("critic", "actor"):
        prefix = f"diag/{component}/"
        for key in ("cos", "cos_min"):
            assert -1.0 <= second[prefix + key].item() <= 1.0
        assert second[prefix + "cos_min"] <= second[prefix + "cos"]
        assert 0.0 <= second[prefix + "conflict"].item() <= 1.0
        for key in ("gms", "gms_min"):
            assert 0.0 <= second[prefix + key].item() <= 1.0
        assert second[prefix + "norms"].shape == (K,)
        assert (second[prefix + "norms"] > 0).all()
        assert second[prefix + "update_norm_ratio"].item() > 0


def test_surgery_options_reach_the_method():
    agent = make_agent("cagrad", options={"c": 0.9})
    assert agent.surgeries["critic"].options["c"] == 0.9
