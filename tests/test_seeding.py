"""Every random stream of a run is its own: no two consumers, and no two adjacent run seeds,
draw the same numbers."""

import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import ACT, STATE, K

from mtrl.agent import MTSAC
from mtrl.checkpoint import load_checkpoint, step_file
from mtrl.config import AgentConfig, SurgeryConfig, load_config
from mtrl.replay import MultiTaskReplay
from mtrl.seeding import stream_seed
from mtrl.train import Trainer

NAMES = ("agent.noise", "replay.sampling", "warmup.actions", "surgery.critic", "surgery.actor")


def test_stream_seeds_are_deterministic_and_distinct():
    seeds = {(run, name): stream_seed(run, name) for run in range(5) for name in NAMES}
    assert len(set(seeds.values())) == len(seeds)
    assert all(0 <= s < 2**63 for s in seeds.values())


def test_stream_seeds_are_the_same_in_another_process():
    """Resume relies on it: a salted hash (Python's ``hash``) would differ between processes."""
    code = "from mtrl.seeding import stream_seed; print(stream_seed(3, 'agent.noise'))"
    for salt in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": salt},
        )
        assert int(out.stdout) == stream_seed(3, "agent.noise")


def _agent(seed: int, surgery: str = "pcgrad") -> MTSAC:
    config = AgentConfig(hidden_dims=[8], batch_per_task=4)
    return MTSAC(STATE + K, ACT, K, config, seed=seed, surgery=SurgeryConfig(surgery))


def test_noise_and_replay_sampling_differ_within_a_run():
    """They used to be seeded alike: their first draws coincided."""
    agent = _agent(0)
    replay = MultiTaskReplay(K, 1000, STATE + K, ACT, seed=stream_seed(0, "replay.sampling"))
    noise_bits = torch.randint(1000, (20,), generator=agent.generator)
    sample_bits = torch.randint(1000, (20,), generator=replay.generator)
    assert not torch.equal(noise_bits, sample_bits)


def test_surgery_streams_differ_across_components_and_adjacent_run_seeds():
    """With seed + offset, run 0's actor stream was run 1's critic stream."""
    first_draws = {}
    for run in (0, 1, 2):
        for component, method in _agent(run).surgeries.items():
            first_draws[(run, component)] = torch.rand(8, generator=method.generator)
    keys = list(first_draws)
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            assert not torch.equal(first_draws[a], first_draws[b]), (a, b)


def test_the_same_seed_gives_the_same_streams():
    a, b = _agent(7), _agent(7)
    assert torch.equal(a.generator.get_state(), b.generator.get_state())
    for name in a.surgeries:
        assert torch.equal(a.surgeries[name].generator.get_state(),
                           b.surgeries[name].generator.get_state())  # fmt: skip
    rng = [np.random.default_rng(stream_seed(7, "warmup.actions")).random(3) for _ in range(2)]
    np.testing.assert_array_equal(*rng)


def test_the_trainer_gives_noise_and_replay_sampling_their_own_streams(tmp_path):
    """The trainer's wiring, not only the seeds: the replay samples from the
    ``replay.sampling`` stream of the run seed, the agent's noise from another one."""
    overrides = [
        "env.benchmark=mt1:reach-v3",
        "env.max_episode_steps=20",
        "agent.hidden_dims=[8]",
        "agent.batch_per_task=4",
        "train.total_steps=100",
        "train.warmup_steps=10",
        "train.buffer_size=1000",
        "train.seed=5",
    ]
    trainer = Trainer(load_config(None, overrides), tmp_path / "run", progress=False)
    try:
        replay_bits = torch.randint(1000, (20,), generator=trainer.replay.generator)
        noise_bits = torch.randint(1000, (20,), generator=trainer.agent.generator)
    finally:
        trainer.close()
    expected = torch.Generator().manual_seed(stream_seed(5, "replay.sampling"))
    assert torch.equal(replay_bits, torch.randint(1000, (20,), generator=expected))
    assert not torch.equal(replay_bits, noise_bits)


def global_random_states() -> tuple:
    numpy_state = np.random.get_state()
    return (
        random.getstate(),
        (numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]),
        (torch.get_rng_state().tolist()),
    )


@pytest.mark.parametrize("surgery", ["graddrop"])
def test_training_never_draws_from_the_global_random_states(tmp_path, surgery):
    """What makes a resume exact without the global random states of Python, NumPy and torch
    (checkpoints do not hold them): once a run is built, fresh or from a checkpoint, nothing
    draws from them. Warm-up actions, updates (with the randomised surgery methods),
    evaluations, episode resets and checkpoints all run on the run's own streams."""
    overrides = [
        "env.benchmark=mt1:reach-v3",
        "env.max_episode_steps=20",
        "agent.hidden_dims=[8]",
        "agent.batch_per_task=4",
        "train.total_steps=80",
        "train.warmup_steps=30",
        "train.buffer_size=1000",
        "train.eval_every=40",
        "train.eval_episodes=1",
        "train.final_eval_episodes=1",
        "checkpoint.every=40",
        f"surgery.name={surgery}",
    ]
    config = load_config(None, overrides)
    run = tmp_path / "run"
    for resume in (None, "from the checkpoint at step 40"):
        checkpoint = load_checkpoint(step_file(run, 40)) if resume else None
        trainer = Trainer(config, run, progress=False, resume=checkpoint)
        before = global_random_states()
        trainer.run()
        assert global_random_states() == before, resume or "fresh run"
