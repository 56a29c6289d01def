import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from mtrl.replay import MultiTaskReplay, batch_mean, task_means, uniform_slots

K, OBS, ACT = 3, 5, 2


def transition(step: int, terminated=None, truncated=None):
    """One transition per task whose values encode (task, step), so samples can be traced."""
    task = np.arange(K, dtype=np.float32)
    obs = np.stack([np.full(OBS, 100 * k + step, dtype=np.float32) for k in range(K)])
    return dict(
        obs=obs,
        action=np.stack([np.full(ACT, k, dtype=np.float32) for k in range(K)]),
        reward=task * 10 + step,
        next_obs=obs + 0.5,
        terminated=np.zeros(K) if terminated is None else terminated,
        truncated=np.zeros(K) if truncated is None else truncated,
    )


def test_batches_are_balanced_and_task_pure():
    replay = MultiTaskReplay(K, capacity_per_task=50, obs_dim=OBS, action_dim=ACT, seed=0)
    for step in range(20):
        replay.add(**transition(step))
    batch = replay.sample(per_task=7)
    assert batch.obs.shape == (K, 7, OBS)
    assert batch.action.shape == (K, 7, ACT)
    assert batch.reward.shape == batch.terminated.shape == batch.truncated.shape == (K, 7)
    for k in range(K):
        task_of_obs = torch.div(batch.obs[k, :, 0], 100, rounding_mode="floor")
        assert torch.all(task_of_obs == k), "row k must only hold task k's transitions"
        assert torch.all(batch.action[k] == k)
        step = batch.obs[k, :, 0] - 100 * k
        # every field of a sampled row comes from the same stored transition
        torch.testing.assert_close(batch.reward[k], 10.0 * k + step)
        torch.testing.assert_close(batch.next_obs[k], batch.obs[k] + 0.5)


def test_wraps_around_and_keeps_only_the_newest():
    replay = MultiTaskReplay(K, capacity_per_task=5, obs_dim=OBS, action_dim=ACT, seed=1)
    for step in range(8):
        replay.add(**transition(step))
    assert replay.size == 5
    assert replay.position == 8 % 5
    batch = replay.sample(per_task=400)
    steps = set((batch.obs[0, :, 0]).tolist())
    assert steps == {3.0, 4.0, 5.0, 6.0, 7.0}, "the three oldest transitions were overwritten"


def test_terminated_and_truncated_are_stored_separately():
    replay = MultiTaskReplay(K, capacity_per_task=4, obs_dim=OBS, action_dim=ACT)
    replay.add(**transition(0, terminated=np.array([1, 0, 0]), truncated=np.array([0, 1, 0])))
    batch = replay.sample(per_task=3)
    assert torch.all(batch.terminated[0] == 1) and torch.all(batch.truncated[0] == 0)
    assert torch.all(batch.terminated[1] == 0) and torch.all(batch.truncated[1] == 1)
    assert torch.all(batch.terminated[2] == 0) and torch.all(batch.truncated[2] == 0)


def test_sampling_is_reproducible_per_seed():
    def draw(seed):
        replay = MultiTaskReplay(K, capacity_per_task=30, obs_dim=OBS, action_dim=ACT, seed=seed)
        for step in range(30):
            replay.add(**transition(step))
        return replay.sample(per_task=10).obs

    torch.testing.assert_close(draw(4), draw(4))
    assert not torch.equal(draw(4), draw(5))


def test_empty_buffer_refuses_to_sample():
    replay = MultiTaskReplay(K, capacity_per_task=4, obs_dim=OBS, action_dim=ACT)
    with pytest.raises(RuntimeError, match="empty"):
        replay.sample(per_task=1)


# --------------------------------------------------------------------- uniform (pooled) draws
def filled(capacity: int, steps: int, seed: int = 0) -> MultiTaskReplay:
    replay = MultiTaskReplay(K, capacity_per_task=capacity, obs_dim=OBS, action_dim=ACT, seed=seed)
    for step in range(steps):
        replay.add(**transition(step))
    return replay


def test_a_uniform_batch_keeps_each_task_in_its_row_and_marks_its_draws():
    batch = filled(capacity=50, steps=20).sample_uniform(total=12)
    slots = uniform_slots(12, K)
    assert batch.obs.shape == (K, slots, OBS) and batch.drawn.shape == (K, slots)
    for k in range(K):
        assert torch.all(torch.div(batch.obs[k, :, 0], 100, rounding_mode="floor") == k)
    assert set(batch.drawn.unique().tolist()) <= {0.0, 1.0}
    drawn = batch.drawn > 0
    assert int(drawn.sum()) == 12, "exactly the batch's draws are marked"
    # a task's draws are the first slots of its row: the marks fall off once, never rise
    assert torch.all(drawn[:, 1:] <= drawn[:, :-1])
    assert torch.all(filled(capacity=50, steps=20).sample(per_task=4).drawn == 1)


def test_task_means_on_a_balanced_batch_are_the_plain_means_bit_for_bit():
    values, ones = torch.randn(10, 13) * 100, torch.ones(10, 13)
    assert torch.equal(task_means(values, ones), values.mean(-1))
    drawn = (torch.arange(13) < torch.tensor([0, 13, 4, 1, 2, 3, 5, 6, 7, 8])[:, None]).float()
    expected = torch.stack([values[k, : int(n)].mean() for k, n in enumerate(drawn.sum(-1))])
    torch.testing.assert_close(task_means(values, drawn), expected.nan_to_num(0.0))
    # the batch mean from the task means is the mean over every drawn value
    mean = batch_mean(task_means(values, drawn), drawn)
    torch.testing.assert_close(mean, values[drawn > 0].mean())


def test_uniform_task_counts_are_those_of_uniform_draws_from_one_pool():
    """Uniform draws from a pool holding every task equally often: each batch's task counts
    are multinomial (12 draws, 1/3 each), so one task's count is Binomial(12, 1/3). The
    frequencies of 20000 batches against the exact pmf, and their mean and variance."""
    replay = filled(capacity=50, steps=20, seed=3)
    total, batches = 12, 20000
    counts = torch.stack([(replay.sample_uniform(total).drawn > 0).sum(-1) for _ in range(batches)])
    assert torch.all(counts.sum(-1) == total)
    pmf = torch.tensor(
        [math.comb(total, c) * (K - 1) ** (total - c) / K**total for c in range(total + 1)]
    )
    for k in range(K):
        frequency = torch.bincount(counts[:, k], minlength=total + 1).double() / batches
        assert (frequency - pmf).abs().max() < 0.015, k  # 5 standard errors at most
    mean, variance = counts.double().mean(0), counts.double().var(0)
    torch.testing.assert_close(
        mean, torch.full((K,), total / K, dtype=torch.double), atol=0.06, rtol=0
    )
    expected = total * (1 / K) * (1 - 1 / K)  # a balanced batch's counts would not vary at all
    torch.testing.assert_close(
        variance, torch.full((K,), expected, dtype=torch.double), rtol=0.05, atol=0
    )


def test_uniform_draws_cover_a_pooled_fifo_buffer_uniformly():
    """Independent formulation: one FIFO list of K x 5 transitions, added task by task per
    vector step as the mtrl family's replay_buffer.py does. After wrapping around it holds the
    same transitions as the rings, and every one of them is drawn equally often."""
    capacity, steps = 5, 8
    replay = filled(capacity=capacity, steps=steps, seed=2)
    pool: list[tuple[int, int]] = []
    for step in range(steps):
        for k in range(K):
            pool.append((k, step))
            pool = pool[-K * capacity :]
    seen: dict[tuple[int, int], int] = {}
    draws = 0
    for _ in range(3000):
        batch = replay.sample_uniform(total=10)
        drawn = batch.drawn > 0
        tasks = torch.div(batch.obs[..., 0], 100, rounding_mode="floor")[drawn]
        step = batch.obs[..., 0][drawn] - 100 * tasks
        for key in zip(tasks.int().tolist(), step.int().tolist(), strict=True):
            seen[key] = seen.get(key, 0) + 1
        draws += int(drawn.sum())
    assert set(seen) == set(pool)
    expected = draws / len(pool)
    chi2 = sum((n - expected) ** 2 / expected for n in seen.values())
    assert chi2 < 50, chi2  # 14 degrees of freedom: p < 1e-5 above 50


@pytest.mark.parametrize("total,tasks", [(1280, 10), (1280, 50), (12, 3), (7, 1)])
def test_uniform_slots_bound_the_overflow_probability(total, tasks):
    """Exact binomial tails in integer arithmetic: K P(count > slots) <= 1e-12 while one slot
    fewer would exceed it (1280 draws: 213 slots on MT10, 71 on MT50)."""
    slots = uniform_slots(total, tasks)

    def overflow(n: int) -> Fraction:
        tail = sum(
            math.comb(total, c) * (tasks - 1) ** (total - c) for c in range(n + 1, total + 1)
        )
        return tasks * Fraction(tail, tasks**total)

    assert overflow(slots) <= Fraction(1, 10**12)
    if slots < total:
        assert overflow(slots - 1) > Fraction(1, 10**12)
    assert {(1280, 10): 213, (1280, 50): 71}.get((total, tasks), slots) == slots
