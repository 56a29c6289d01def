import pytest
import torch
from torch.distributions import Normal, TanhTransform, TransformedDistribution

from mtrl.models import ModelSpec, task_specific_parameters
from mtrl.networks import Actor, TwinCritic, squashed_gaussian_log_prob


@pytest.fixture(autouse=True)
def _float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def test_log_prob_matches_numerical_change_of_variables():
    """log pi(a) = log N(u) - log |da/du|, with da/du taken by central finite differences."""
    gen = torch.Generator().manual_seed(0)
    mean = torch.randn(200, 3, generator=gen) * 2
    log_std = torch.rand(200, 3, generator=gen) * 3 - 2
    noise = torch.randn(200, 3, generator=gen)
    u = mean + log_std.exp() * noise
    h = 1e-6
    jacobian = (torch.tanh(u + h) - torch.tanh(u - h)) / (2 * h)
    expected = (Normal(mean, log_std.exp()).log_prob(u) - jacobian.log()).sum(-1)
    ok = jacobian.min(-1).values > 1e-8  # finite differences lose precision deep in saturation
    got = squashed_gaussian_log_prob(u, noise, log_std)
    torch.testing.assert_close(got[ok], expected[ok], rtol=1e-6, atol=1e-6)
    assert ok.sum() > 150


def test_log_prob_is_a_density_on_the_action_interval():
    """One action dim: exp(log pi(a)) integrates to 1 over (-1, 1)."""
    mean, log_std = torch.tensor([0.7]), torch.tensor([-0.3])
    a = torch.linspace(-1 + 1e-9, 1 - 1e-9, 400_001)
    u = torch.atanh(a)
    noise = (u - mean) / log_std.exp()
    density = squashed_gaussian_log_prob(u[:, None], noise[:, None], log_std).exp()
    assert torch.trapezoid(density, a).item() == pytest.approx(1.0, abs=1e-4)


def test_log_prob_is_finite_when_saturated_and_agrees_with_torch():
    u = torch.tensor([[-30.0, 0.0, 25.0]])
    noise = torch.tensor([[-3.0, 0.0, 2.5]])
    log_std = torch.tensor([[2.0, -1.0, 2.0]])
    got = squashed_gaussian_log_prob(u, noise, log_std)
    assert torch.isfinite(got).all()
    mean = u - log_std.exp() * noise
    inner = Normal(mean[:, 1:2], log_std[:, 1:2].exp())
    reference = TransformedDistribution(inner, [TanhTransform()]).log_prob(torch.tanh(u[:, 1:2]))
    got_mid = squashed_gaussian_log_prob(u[:, 1:2], noise[:, 1:2], log_std[:, 1:2])
    torch.testing.assert_close(got_mid, reference.sum(-1))


def test_actor_actions_are_bounded_and_zero_noise_is_the_mean():
    actor = Actor(obs_dim=8, action_dim=2, num_tasks=3, model=ModelSpec(hidden_dims=(16,)))
    obs = torch.randn(5, 8) * 10
    action, log_prob = actor(obs, torch.randn(5, 2))
    assert action.shape == (5, 2) and log_prob.shape == (5,)
    assert action.abs().max() < 1
    mean, log_std = actor.distribution(obs)
    torch.testing.assert_close(actor(obs, torch.zeros(5, 2))[0], torch.tanh(mean))
    assert log_std.min() >= -20 and log_std.max() <= 2


def one_hot_obs(num_tasks: int, n: int, state_dim: int = 4) -> torch.Tensor:
    """[K, n, state + K] observations whose last K entries are the task one-hot."""
    state = torch.randn(num_tasks, n, state_dim)
    onehot = torch.eye(num_tasks)[:, None, :].expand(num_tasks, n, num_tasks)
    return torch.cat([state, onehot], -1)


def test_multi_head_gradients_stay_in_their_task_head():
    K = 3
    critic = TwinCritic(4 + K, 2, K, ModelSpec("multihead", hidden_dims=(8,)))
    obs, action = one_hot_obs(K, 6), torch.randn(K, 6, 2)
    q1, q2 = critic(obs[1], action[1])  # samples of task 1 only
    (q1.sum() + q2.sum()).backward()
    heads = task_specific_parameters(critic)
    assert heads == {
        "q1.model.heads.linear.weight",
        "q1.model.heads.linear.bias",
        "q2.model.heads.linear.weight",
        "q2.model.heads.linear.bias",
    }
    grad = critic.q1.model.heads.linear.weight.grad.view(K, 1, -1)
    assert grad[1].abs().sum() > 0
    assert torch.all(grad[0] == 0) and torch.all(grad[2] == 0)


def test_multi_head_selects_the_head_of_each_sample():
    K = 4
    actor = Actor(3 + K, 2, K, ModelSpec("multihead", hidden_dims=(8,)))
    obs = one_hot_obs(K, 2, state_dim=3)
    hidden = actor.model.trunk(obs)  # the trunk reads the state and the one-hot
    weight = actor.model.heads.linear.weight.view(K, 4, 8)
    bias = actor.model.heads.linear.bias.view(K, 4)
    expected = torch.einsum("knh,koh->kno", hidden, weight) + bias[:, None, :]
    mean, log_std = actor.distribution(obs)
    torch.testing.assert_close(mean, expected[..., :2])
    torch.testing.assert_close(log_std, expected[..., 2:].clamp(-20, 2))


def test_single_head_has_no_task_specific_parameters():
    assert task_specific_parameters(Actor(5, 2, 2, ModelSpec(hidden_dims=(4,)))) == set()


# ------------------------------------------------------------- the papers' network settings
def test_without_task_input_the_networks_read_the_state_only():
    """agent.task_input=false (the mtrl family's identity encoder without task encoder): the
    first layer has no one-hot columns and the output ignores the one-hot; multihead still picks
    its head by task."""
    K, state_dim = 3, 4
    for name in ("mlp", "multihead"):
        actor = Actor(state_dim + K, 2, K, ModelSpec(name, hidden_dims=(8,), task_input=False))
        assert actor.model.trunk.layers[0].weight.shape == (8, state_dim)
        with_task = Actor(state_dim + K, 2, K, ModelSpec(name, hidden_dims=(8,)))
        assert with_task.model.trunk.layers[0].weight.shape == (8, state_dim + K)
        state = torch.randn(1, state_dim).expand(K, state_dim)
        mean = actor.distribution(torch.cat([state, torch.eye(K)], -1))[0]
        same = torch.allclose(mean[0], mean[1]) and torch.allclose(mean[1], mean[2])
        assert same == (name == "mlp"), name


def test_hidden_heads_compute_each_tasks_own_two_layers():
    """head_hidden: per task Linear, ReLU, Linear (facebookresearch/mtrl's FeedForward heads of
    two layers) after a trunk ending in a ReLU; written out with the head's own matrices."""
    K = 3
    actor = Actor(4 + K, 2, K, ModelSpec("multihead", {"head_hidden": 5}, (8, 8), None, False))
    obs = one_hot_obs(K, 6)
    trunk = actor.model.trunk(obs[..., :4])
    heads = actor.model.heads
    for k in range(K):
        hidden = torch.relu(trunk[k] @ heads.hidden.weight[k].T + heads.hidden.bias[k])
        out = hidden @ heads.out.weight[k].T + heads.out.bias[k]
        mean, log_std = actor.distribution(obs[k])
        torch.testing.assert_close(mean, out[:, :2])
        torch.testing.assert_close(log_std, out[:, 2:].clamp(-20, 2))
    assert task_specific_parameters(actor) == {
        "model.heads.hidden.weight",
        "model.heads.hidden.bias",
        "model.heads.out.weight",
        "model.heads.out.bias",
    }


def test_tanh_bounded_log_std_spans_the_bounds():
    """facebookresearch/mtrl actor.py: log_std = min + (max - min) (tanh(raw) + 1) / 2."""
    actor = Actor(7, 2, 3, ModelSpec(hidden_dims=(8,)), (-20.0, 2.0), log_std_squash=True)
    obs = one_hot_obs(3, 5)
    raw = actor.model(obs[..., :4], obs[..., 4:])[..., 2:]
    _, log_std = actor.distribution(obs)
    torch.testing.assert_close(log_std, -20 + 11 * (torch.tanh(raw) + 1))
    with torch.no_grad():
        actor.model.head.bias[2:] = torch.tensor([-1e3, 1e3])
        actor.model.head.weight[2:] = 0
    _, log_std = actor.distribution(obs)
    assert torch.all(log_std[..., 0] == -20) and torch.all(log_std[..., 1] == 2)


def _bound(weight: torch.Tensor) -> float:
    return weight.abs().max().item()


@pytest.mark.parametrize("model", ["mlp", "multihead"])
def test_xavier_init_draws_each_head_within_its_own_fans_and_zeroes_biases(model):
    """facebookresearch/mtrl agent/utils.py weight_init: xavier_uniform_ weights (per expert
    for the multi-head layers), zero biases."""
    torch.manual_seed(0)
    K = 10
    spec = ModelSpec(model, {"head_hidden": 64} if model == "multihead" else {}, (256, 256))
    critic = TwinCritic(39 + K, 4, K, spec, init="xavier")
    net = critic.q1.model
    blocks = [(layer.weight, layer.bias) for layer in net.trunk.layers]
    blocks += (
        [
            (net.heads.hidden.weight, net.heads.hidden.bias),
            (net.heads.out.weight, net.heads.out.bias),
        ]
        if model == "multihead"
        else [(net.head.weight, net.head.bias)]
    )
    for weight, bias in blocks:
        fan_out, fan_in = weight.shape[-2:]
        limit = (6 / (fan_in + fan_out)) ** 0.5
        assert _bound(weight) <= limit and _bound(weight) > 0.9 * limit
        if weight.numel() > 10_000:  # a uniform draw's standard deviation: limit / sqrt(3)
            assert weight.std().item() == pytest.approx(limit / 3**0.5, rel=0.05)
        assert torch.all(bias == 0)


def test_mwplus_init_draws_he_uniform_hidden_layers_and_small_outputs():
    """metaworld-algorithms: hidden kernels he_uniform (bound sqrt(6 / fan_in)) with zero
    biases (config/nn.py), output kernels and biases uniform in 1e-3 for the actor and 3e-3 for
    the Q networks (rl/networks.py); per-task linear heads drawn like the output layer."""
    torch.manual_seed(0)
    K = 10
    spec = ModelSpec("multihead", hidden_dims=(400, 400, 400))
    actor = Actor(39 + K, 4, K, spec, init="mwplus")
    critic = TwinCritic(39 + K, 4, K, spec, init="mwplus")
    for net, bound in ((actor.model, 1e-3), (critic.q1.model, 3e-3), (critic.q2.model, 3e-3)):
        for layer in net.trunk.layers:
            limit = (6 / layer.weight.shape[1]) ** 0.5
            assert 0.9 * limit < _bound(layer.weight) <= limit
            assert torch.all(layer.bias == 0)
        heads = net.heads.linear
        assert 0.9 * bound < _bound(heads.weight) <= bound
        assert 0.5 * bound < _bound(heads.bias) <= bound
    first = actor.model.trunk.layers[0].weight
    assert first.std().item() == pytest.approx((2 / first.shape[1]) ** 0.5, rel=0.05)
