import numpy as np
import pytest
import torch

from mtrl.replay import MultiTaskReplay

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
