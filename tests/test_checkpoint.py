"""Checkpoint files and the state they carry, without training runs (see test_resume.py)."""

import ast
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from mtrl import checkpoint as ckpt
from mtrl.agent import MTSAC
from mtrl.checkpoint import (
    Checkpointer,
    CheckpointError,
    experiment_differences,
    load_agent_networks,
    load_checkpoint,
    save_checkpoint,
)
from mtrl.config import AgentConfig, CheckpointConfig, SurgeryConfig, load_config
from mtrl.envs import make_envs, parse_benchmark
from mtrl.replay import MultiTaskReplay

K, STATE, ACT = 3, 5, 2


def test_the_checkpoint_module_does_not_import_the_trainer():
    """The trainer imports the checkpoint module and hands itself over as a ``Run``."""
    tree = ast.parse(Path(ckpt.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "mtrl.train" not in imported and "mtrl.cli" not in imported


def nested_state():
    return {
        "tensor": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "view": torch.arange(100.0)[10:13],  # saved as its 3 values, not the 100-element storage
        "array": np.arange(4, dtype=np.uint32),
        "tuple": (1, 2.5, "x", None, True),
        "int_keys": {0: torch.ones(2), 7: "seven"},
        "big_int": 2**127 + 5,
        "floats": [math.inf, -0.0, 1e-300],
        "nested": {"list": [torch.zeros(0), {"deep": torch.tensor(3, dtype=torch.int64)}]},
    }


def assert_same(a, b):
    assert type(a) is type(b), (a, b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    else:
        assert a == b or (a != a and b != b)


def test_round_trip_keeps_types_and_bits(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", ckpt.KIND_AGENT, nested_state())
    loaded = load_checkpoint(path)
    assert loaded.kind == ckpt.KIND_AGENT
    assert_same(loaded.state, nested_state())
    raw = torch.load(path, weights_only=True)
    assert raw["tensors"]["view"].untyped_storage().nbytes() == 3 * 4
    assert not list(tmp_path.glob(".*")), "no temporary file left behind"


def test_flipped_byte_in_tensor_data_is_caught_by_the_checksum(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", ckpt.KIND_AGENT, {"w": torch.zeros(100_000)})
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside the tensor bytes: torch.load alone does not notice
    path.write_bytes(bytes(data))
    torch.load(path, weights_only=True)
    with pytest.raises(CheckpointError, match="does not match its checksum"):
        load_checkpoint(path)


def test_foreign_unsafe_newer_and_missing_files_are_refused(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not an mtrl checkpoint"):
        load_checkpoint(foreign)

    unsafe = tmp_path / "unsafe.pt"
    torch.save({"format": ckpt.FORMAT, "object": ValueError("x")}, unsafe)
    with pytest.raises(CheckpointError, match="never unpickled"):
        load_checkpoint(unsafe)

    text = tmp_path / "notes.pt"
    text.write_text("hello\n")
    with pytest.raises(CheckpointError, match="not a PyTorch file"):
        load_checkpoint(text)

    newer = tmp_path / "newer.pt"
    save_checkpoint(newer, ckpt.KIND_AGENT, {"step": 1})
    payload = torch.load(newer, weights_only=True)
    torch.save({**payload, "version": ckpt.FORMAT_VERSION + 1}, newer)
    with pytest.raises(CheckpointError, match="newer mtrl"):
        load_checkpoint(newer)

    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="not a file"):
        load_checkpoint(tmp_path)


def test_a_crash_mid_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "c.pt", ckpt.KIND_AGENT, {"step": 1})
    before = path.read_bytes()

    def crash(obj, file):
        file.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt  # e.g. the process being stopped mid-write

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, ckpt.KIND_AGENT, {"step": 2})
    assert path.read_bytes() == before
    assert load_checkpoint(path).state["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]


def filled_replay(capacity: int, steps: int, seed: int = 0) -> MultiTaskReplay:
    """Observations that end with the task one-hot, as Meta-World's do."""
    replay = MultiTaskReplay(K, capacity, STATE + K, ACT, seed=seed)
    rng = np.random.default_rng(seed)
    onehot = np.eye(K)
    for _ in range(steps):
        obs = np.concatenate([rng.normal(size=(K, STATE)), onehot], 1)
        next_obs = np.concatenate([rng.normal(size=(K, STATE)), onehot], 1)
        replay.add(
            obs, rng.uniform(-1, 1, (K, ACT)), rng.normal(size=K), next_obs, np.zeros(K), np.ones(K)
        )
    if steps:
        replay.sample(4)  # advance the sampling generator
    return replay


@pytest.mark.parametrize("steps", [0, 7, 10, 23], ids=["empty", "partial", "full", "wrapped"])
def test_replay_round_trip_is_bitwise_and_drops_the_onehot(tmp_path, steps):
    replay = filled_replay(capacity=10, steps=steps)
    state = ckpt._replay_state(replay)
    assert state["onehot_dropped"]
    assert state["rows"].shape == (K, replay.size, replay.data.shape[-1] - 2 * K)
    save_checkpoint(tmp_path / "r.pt", ckpt.KIND_AGENT, {"replay": state})
    restored = MultiTaskReplay(K, 10, STATE + K, ACT, seed=99)
    ckpt._load_replay_state(restored, load_checkpoint(tmp_path / "r.pt").state["replay"])
    assert torch.equal(restored.data, replay.data)
    assert (restored.position, restored.size) == (replay.position, replay.size)
    if steps:
        assert torch.equal(restored.sample(5).obs, replay.sample(5).obs)


def test_replay_without_a_onehot_is_stored_whole():
    replay = filled_replay(capacity=10, steps=5)
    replay.data[1, 2, STATE] = 0.5  # not a one-hot any more
    state = ckpt._replay_state(replay)
    assert not state["onehot_dropped"]
    restored = MultiTaskReplay(K, 10, STATE + K, ACT)
    ckpt._load_replay_state(restored, state)
    assert torch.equal(restored.data, replay.data)


def make_agent(init_seed: int) -> MTSAC:
    """An agent with a stateful, randomised surgery method (GradVac: EMA targets, task orders);
    ``init_seed`` draws its initial networks (the run's seed, hence the method's, stays 0)."""
    torch.manual_seed(init_seed)
    config = AgentConfig(hidden_dims=[16, 16], batch_per_task=4)
    return MTSAC(STATE + K, ACT, K, config, seed=0, surgery=SurgeryConfig("gradvac"))


def test_agent_state_round_trip_continues_bitwise(tmp_path):
    replay = filled_replay(capacity=20, steps=20)
    agent = make_agent(0)
    for _ in range(3):
        agent.update(replay.sample(4))
    save_checkpoint(tmp_path / "a.pt", ckpt.KIND_AGENT, {"agent": ckpt._agent_state(agent)})

    other = make_agent(1)
    ckpt._load_agent_state(other, load_checkpoint(tmp_path / "a.pt").state["agent"])
    assert other.updates == agent.updates == 3
    for name, method in agent.surgeries.items():
        saved, restored = method.state_dict(), other.surgeries[name].state_dict()
        assert torch.equal(saved["generator"], restored["generator"])
        assert torch.equal(saved["state"]["phi_hat"], restored["state"]["phi_hat"])
        assert saved["state"]["phi_hat"].abs().sum() > 0, "GradVac's targets moved: real state"
    batch = replay.sample(4)
    agent.update(batch)
    other.update(batch)
    for name, networks in ckpt.agent_networks(agent).items():
        for key, value in networks.items():
            assert torch.equal(value, ckpt.agent_networks(other)[name][key]), (name, key)


def test_agent_of_other_networks_is_refused():
    small = ckpt._agent_state(make_agent(0))
    wide = MTSAC(STATE + K, ACT, K, AgentConfig(hidden_dims=[32]), seed=0)
    with pytest.raises(CheckpointError, match="does not fit"):
        ckpt.load_agent_networks(wide, small["networks"])


def test_periodic_checkpoints_wait_for_an_episode_boundary(tmp_path):
    checkpointer = Checkpointer(tmp_path, CheckpointConfig(every=1000))
    assert not checkpointer.due(990, at_boundary=True)
    assert not checkpointer.due(1000, at_boundary=False)
    assert not checkpointer.due(1490, at_boundary=False)
    assert checkpointer.due(1500, at_boundary=True)  # the first boundary at or after 1000
    checkpointer.last_step = 1500
    assert not checkpointer.due(1990, at_boundary=True)
    assert checkpointer.due(2000, at_boundary=True)
    assert not Checkpointer(tmp_path, CheckpointConfig(every=0)).due(5000, at_boundary=True)


def test_only_run_control_values_may_change_on_resume():
    stored = load_config("smoke")
    same = load_config(
        "smoke",
        ["train.threads=2", "checkpoint.every=500", "train.device=cpu", "train.compile=cudagraph"],
    )
    assert experiment_differences(stored, same) == []
    changed = load_config("smoke", ["train.seed=3", "agent.gamma=0.9"])
    assert experiment_differences(stored, changed) == [
        "agent.gamma=0.9 (the run has 0.99)",
        "train.seed=3 (the run has 0)",
    ]


@pytest.mark.parametrize("goal_mode", ["random", "fixed"])
def test_env_state_restores_goals_and_the_episode_after_a_boundary(goal_mode):
    """Rebuild, restore and step: the same observations as the envs that kept running."""
    config = load_config(None, ["env.max_episode_steps=10", f"env.goal_mode={goal_mode}"]).env
    benchmark = parse_benchmark("mt1:reach-v3")
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (40, 1, 4))

    original = make_envs(benchmark, config, seed=3)
    original.reset()
    for action in actions[:10]:  # one whole episode: the boundary
        obs, *_ = original.step(action)
    saved = ckpt._env_state(original)
    assert saved[0]["task"] is not None
    continued = [obs] + [original.step(a)[0] for a in actions[10:]]  # crosses two more resets

    rebuilt = make_envs(benchmark, config, seed=3)
    rebuilt.reset()
    rebuilt.step(actions[0])  # some other state, to be overwritten
    replayed = [ckpt._restore_envs(rebuilt, saved)] + [rebuilt.step(a)[0] for a in actions[10:]]
    for a, b in zip(continued, replayed, strict=True):
        assert np.array_equal(a, b)
    original.close()
    rebuilt.close()


def test_stale_temporary_files_are_removed_by_the_next_checkpoint(tmp_path):
    directory = tmp_path / ckpt.CHECKPOINT_DIR
    directory.mkdir()
    stale = directory / ".step-0000000100.pt.tmp-12345"
    stale.write_bytes(b"partial")
    for step in (100, 200, 300):
        save_checkpoint(ckpt.step_file(tmp_path, step), ckpt.KIND_AGENT, {"step": step})
    Checkpointer(tmp_path, CheckpointConfig(keep_last=2))._prune()
    assert sorted(os.listdir(directory)) == ["step-0000000200.pt", "step-0000000300.pt"]


@pytest.mark.parametrize(
    "fixture",
    [
        "mtrl-0.1.0-mlp",
        "mtrl-0.1.0-multihead",
        "mtrl-0.2.0-soft_modularization",
        "mtrl-0.2.0-care",
        "mtrl-0.2.0-moore",
        "mtrl-0.2.0-paco",
    ],
)
def test_agents_saved_by_earlier_versions_still_load_and_compute_the_same(fixture):
    """tests/data holds agents written by mtrl 0.1.0 (before mtrl.models) and by mtrl 0.2.0 (the
    network models before their initialisation followed the authors' code; CARE's attention then
    read the context detached, which changes gradients, not outputs), with the outputs that
    version computed; today's networks, loaded from them, compute the same."""
    checkpoint = load_checkpoint(Path(__file__).parent / "data" / f"{fixture}.pt")
    expected = checkpoint.state["expected"]
    obs, action = expected["obs"], expected["action"]
    k, a = obs.shape[0], action.shape[-1]
    if fixture.startswith("mtrl-0.1"):  # its config predates agent.model
        config = AgentConfig(hidden_dims=[16, 16], model=fixture.split("-")[-1])
    else:
        config = checkpoint.config.agent
    agent = MTSAC(obs.shape[-1], a, k, config, seed=0)
    load_agent_networks(agent, checkpoint.state["agent"]["networks"])
    mean_action = agent.act(obs.reshape(-1, obs.shape[-1]).numpy(), deterministic=True)
    torch.testing.assert_close(torch.from_numpy(mean_action), expected["mean_action"])
    with torch.no_grad():
        q1, q2 = agent.critic(obs, action)
    torch.testing.assert_close(q1, expected["q1"])
    torch.testing.assert_close(q2, expected["q2"])


def test_a_training_checkpoint_of_mtrl_0_1_is_not_resumed(tmp_path):
    old = load_checkpoint(Path(__file__).parent / "data" / "mtrl-0.1.0-mlp.pt")
    training = ckpt.Checkpoint(old.path, ckpt.KIND_TRAIN, old.state)
    with pytest.raises(CheckpointError, match=r"written by mtrl 0\.1\.0.*mtrl-eval still"):
        ckpt.check_resumable(tmp_path, training, load_config())
