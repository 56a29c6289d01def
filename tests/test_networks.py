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
