import numpy as np

from mtrl.config import EnvConfig
from mtrl.envs import make_envs, parse_benchmark

GOAL = slice(36, 39)  # Meta-World's MT observations end the 39-dim state with the goal position


def rollout(envs, steps: int, seed: int):
    """Observations and rewards of ``steps`` steps with seeded random actions."""
    rng = np.random.default_rng(seed)
    obs, _ = envs.reset()
    trace, rewards = [obs], []
    for _ in range(steps):
        action = rng.uniform(-1, 1, (envs.num_envs, *envs.single_action_space.shape))
        obs, reward, *_ = envs.step(action)
        trace.append(obs)
        rewards.append(reward)
    return np.stack(trace), np.stack(rewards)


def test_mt10_seeding_one_hot_order_and_same_first_episode():
    """Two MT10 builds with the same seed replay the same episode for the same actions."""
    a = make_envs(parse_benchmark("mt10"), EnvConfig(), seed=11)
    b = make_envs(parse_benchmark("mt10"), EnvConfig(), seed=11)
    assert a.num_envs == 10
    assert a.single_observation_space.shape == (49,)
    names = [n.removeprefix("Sawyer").removesuffix("EnvV3") for n in a.get_attr("task_name")]
    assert names[:3] == ["Reach", "Push", "PickPlace"]

    obs_a, rew_a = rollout(a, 501, seed=0)  # the whole first episode and the next reset
    obs_b, rew_b = rollout(b, 501, seed=0)
    a.close()
    b.close()
    np.testing.assert_array_equal(obs_a[0, :, 39:], np.eye(10))
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(rew_a, rew_b)


def test_different_seeds_give_different_goals():
    spec = parse_benchmark("mt1:reach-v3")
    goals = []
    for seed in (1, 2):
        envs = make_envs(spec, EnvConfig(), seed=seed)
        goals.append(envs.reset()[0][0, GOAL])
        envs.close()
    assert not np.allclose(goals[0], goals[1])


def episode_goals(goal_mode: str, episodes: int = 4) -> np.ndarray:
    config = EnvConfig(goal_mode=goal_mode, max_episode_steps=5)
    envs = make_envs(parse_benchmark("mt1:reach-v3"), config, seed=3)
    obs, _ = envs.reset()
    goals = [obs[0, GOAL]]
    zero = np.zeros((1, 4))
    while len(goals) < episodes:
        obs, _, terminated, truncated, _ = envs.step(zero)
        if truncated[0] or terminated[0]:
            goals.append(obs[0, GOAL])  # same-step autoreset: obs is the next episode's first
    envs.close()
    return np.stack(goals)


def test_fixed_goal_mode_keeps_one_goal_and_random_mode_draws_new_ones():
    fixed = episode_goals("fixed")
    assert np.allclose(fixed, fixed[0])
    random = episode_goals("random")
    assert len({tuple(g.round(6)) for g in random}) > 1


def test_horizon_truncates_without_terminating():
    envs = make_envs(parse_benchmark("mt1:reach-v3"), EnvConfig(max_episode_steps=7), seed=0)
    envs.reset()
    flags = [envs.step(np.zeros((1, 4)))[2:4] for _ in range(7)]
    envs.close()
    terminated = [bool(t[0]) for t, _ in flags]
    truncated = [bool(t[0]) for _, t in flags]
    assert terminated == [False] * 7
    assert truncated == [False] * 6 + [True]


def test_a_task_set_replays_its_tasks_as_mt1_does_with_a_wider_one_hot():
    """Each task of a task set is the env ``mt1:<task>`` builds with the same seed: the same
    goals and episodes for the same actions (here across a reset, with random goals), with the
    one-hot of its position in the set."""
    config = EnvConfig(max_episode_steps=20)
    pair = make_envs(parse_benchmark("mt50:button-press-topdown-v3,reach-v3"), config, seed=5)
    singles = [make_envs(parse_benchmark(f"mt1:{t}"), config, seed=5) for t in pair_tasks()]
    assert pair.single_observation_space.shape == (41,)
    rng = np.random.default_rng(0)
    obs, _ = pair.reset()
    single_obs = [envs.reset()[0] for envs in singles]
    np.testing.assert_array_equal(obs[:, 39:], np.eye(2))
    for _ in range(45):
        np.testing.assert_array_equal(obs[:, :39], np.concatenate(single_obs)[:, :39])
        action = rng.uniform(-1, 1, (2, 4))
        obs, reward, *_ = pair.step(action)
        steps = [envs.step(action[i : i + 1]) for i, envs in enumerate(singles)]
        single_obs = [step[0] for step in steps]
        np.testing.assert_array_equal(reward, np.concatenate([step[1] for step in steps]))
    for envs in (pair, *singles):
        envs.close()


def pair_tasks() -> tuple[str, ...]:
    return parse_benchmark("mt50:button-press-topdown-v3,reach-v3").task_names
