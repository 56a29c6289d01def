"""The paper presets against the reference code: every preset that cites a published number
resolves to what produced that number (each row of a table from that row's own command), and
a preset is found whatever the working directory holds."""

from dataclasses import asdict

import pytest

from mtrl.cli import resolve_train_config, train_parser
from mtrl.config import ConfigError, available_presets, flatten, load_config, preset_dirs
from mtrl.published import PUBLISHED, caveats

MTRL_FAMILY = {
    # facebookresearch/mtrl (F), CAGrad mtrl/mtrl_files (C), FAMO mtrl_files (A)
    "env.goal_mode": "fixed",  # mtenv envs/metaworld/env.py 102-119: one task per env per run
    "train.total_steps/K": 2_000_000,  # C run.sh 6: experiment.num_train_steps=2000000
    "train.warmup_steps/K": 1500,  # C metaworld.yaml 5: init_steps 1500
    "train.warmup_updates": 1500,  # F experiment/multitask.py 218-221: init_steps at once
    "train.updates_per_step": 1,  # F multitask.py 221: else 1
    "train.buffer_size": 1_000_000,  # F config/replay_buffer/mtrl.yaml 5: capacity
    "train.replay_sampling": "uniform",  # F replay_buffer.py 72-76: randint over the pool
    "agent.batch_size": 1280,  # C run.sh 6, 15: replay_buffer.batch_size=1280 (MT10, MT50)
    "train.eval_every/K": 30_000,  # F multitask.py 155, 179; experiment/metaworld.py 60 (150)
    "train.eval_at_start": True,  # F multitask.py 153-179: step 0 is a multiple of both
    "train.eval_final": False,  # F multitask.py 253-254: nothing after the loop
    "train.eval_episodes": 1,  # C run.sh 6: experiment.num_eval_episodes=1
    "agent.hidden_dims": [400, 400, 400],  # F components/metaworld_actor.yaml 4-5; utils.py 121
    "agent.task_input": False,  # F actor.py 177-195, critic.py 254-272: no task encoder, no id
    "agent.init": "xavier",  # F agent/utils.py 67-71, 95-103; actor.py 210; critic.py 308
    "agent.log_std_squash": True,  # F actor.py 423-425: tanh rescaled into the bounds
    "agent.log_std_min": -20.0,  # F components/metaworld_actor.yaml 6
    "agent.log_std_max": 2.0,
    "agent.actor_lr": 3e-4,  # F config/agent/optimizers/metaworld_{actor,critic,alpha}.yaml 4
    "agent.critic_lr": 3e-4,
    "agent.alpha_lr": 3e-4,
    "agent.adam_eps": 1e-8,  # the same files set no eps: torch.optim.Adam's default
    "agent.gamma": 0.99,  # C cagrad_state_sac.yaml 20 (F state_sac.yaml 19): discount
    "agent.tau": 0.005,  # C cagrad_state_sac.yaml 23: critic_tau
    "agent.init_alpha": 1.0,  # C cagrad_state_sac.yaml 21: init_temperature
    "agent.target_entropy": None,  # F agent/sac.py 83: -|A|
    "agent.grad_clip": None,  # F agent/sac.py 337-346: no clipping
    "agent.critic_reduction": "sum",  # F agent/sac.py 313-315: mse(Q1) + mse(Q2)
}
MTRL_ROWS = {
    # F docs_src/source/pages/tutorials/baseline.rst 81-95, "Multi-task SAC"
    "mt10": {"agent.model": "mlp", "agent.temperature": "per_task", "surgery.name": "none"},
    "mt50": {"agent.model": "mlp", "agent.temperature": "per_task", "surgery.name": "none"},
    # F baseline.rst 100-116, actor.py 347-361, critic.py 181-195, moe_layer.py 78-96
    "mt10-mhsac": {
        "agent.model": "multihead",
        "agent.hidden_dims": [400, 400, 400, 400],
        "agent.model_options.head_hidden": 400,
        "agent.temperature": "per_task",
    },
    # F baseline.rst 121-136 (pcgrad_state_sac, should_use_disentangled_alpha=False)
    "mt10-pcgrad": {"surgery.name": "pcgrad", "agent.temperature": "shared"},
    "mt50-pcgrad": {"surgery.name": "pcgrad", "agent.temperature": "shared"},
    # C run.sh 6, 15 (cagrad_c 0.9 / 0.5; cagrad.py 254-255 divides by 1 + c^2)
    "mt10-cagrad": {
        "surgery.name": "cagrad",
        "surgery.options.c": 0.9,
        "surgery.options.rescale": True,
        "agent.temperature": "shared",
    },
    "mt50-cagrad": {
        "surgery.name": "cagrad",
        "surgery.options.c": 0.5,
        "surgery.options.rescale": True,
        "agent.temperature": "shared",
    },
    # C run.sh 9, 18 (cagrad_fast4 / cagrad_fast8)
    "mt10-cagrad_fast": {
        "surgery.name": "cagrad_fast",
        "surgery.options.c": 0.9,
        "agent.temperature": "shared",
    },
    "mt50-cagrad_fast": {
        "surgery.name": "cagrad_fast",
        "surgery.options.c": 0.5,
        "agent.temperature": "shared",
    },
    # A run.sh 5-8: gamma 0.01, w_lr 0.025, should_use_disentangled_alpha=False; famo.py 368-375
    "mt10-famo": {
        "balancer.name": "famo",
        "balancer.options.gamma": 0.01,
        "balancer.options.lr": 0.025,
        "balancer.components": ["critic"],
        "agent.temperature": "shared",
    },
    # F baseline.rst 141-165 and 191-208: should_use_disentangled_alpha=True (their networks:
    # mtrl.models, with 2 x 400 as Soft Modularization's observation embedding)
    "mt10-soft_modularization": {
        "agent.model": "soft_modularization",
        "agent.hidden_dims": [400, 400],
        "agent.temperature": "per_task",
    },
    "mt10-care": {"agent.model": "care", "agent.temperature": "per_task"},
}
MTRL_ROWS["mt50-mhsac"] = MTRL_ROWS["mt10-mhsac"]
MTRL_ROWS["mt50-soft_modularization"] = MTRL_ROWS["mt10-soft_modularization"]
MTRL_ROWS["mt50-care"] = MTRL_ROWS["mt10-care"]
MWPLUS = {
    # metaworld-algorithms (W), examples/multi_task/mtmhsac_mt10.py (E)
    "env.goal_mode": "random",  # W envs/metaworld.py: Meta-World's MT setting, a goal a reset
    "train.total_steps/K": 2_000_000,  # E 56: total_steps=int(2e7) transitions on MT10
    "train.warmup_steps/K": 4000,  # W config/rl.py 30: warmstart_steps
    "train.warmup_updates": 0,  # W rl/algorithms/base.py 644-647: one update per step
    "train.buffer_size": 1_000_000,  # E 57
    "train.replay_sampling": "balanced",  # W rl/buffers.py 345-357: batch_size / K per task
    "agent.batch_per_task": 128,  # E 58: batch_size=1280 over 10 tasks
    "agent.batch_size": None,
    "train.eval_every": 200_000,  # W config/rl.py 24: 200_000 // 500 episodes
    "train.eval_at_start": False,  # W base.py 644, 658-663: after the warm-up only
    "train.eval_final": True,
    "train.eval_episodes": 50,  # W config/envs.py 15: evaluation_num_episodes
    "agent.model": "multihead",  # E 43-51: MultiHeadConfig; W nn/multi_head.py
    "agent.hidden_dims": [400, 400, 400],  # W config/nn.py 9-12: width 400, depth 3
    "agent.model_options": {},  # W nn/multi_head.py 50-62: one linear head per task
    "agent.task_input": True,  # W nn/multi_head.py 27-40: the trunk reads the one-hot too
    "agent.temperature": "per_task",  # W rl/algorithms/mtsac.py 44-59: MultiTaskTemperature
    "agent.init": "mwplus",  # W config/nn.py 15-19; rl/networks.py 34-40, 227-228
    "agent.log_std_squash": False,  # W rl/networks.py 60-62: jnp.clip
    "agent.grad_clip": 1.0,  # E 44, 50: max_grad_norm=1.0 (actor and critic only)
    "agent.critic_reduction": "mean",  # W mtsac.py 302: mean over both Q networks
    "agent.adam_eps": 1e-5,  # W config/optim.py 26-27
    "agent.actor_lr": 3e-4,  # W config/optim.py 15
    "agent.critic_lr": 3e-4,
    "agent.alpha_lr": 3e-4,  # W mtsac.py 100: temperature_optimizer_config default
    "agent.gamma": 0.99,  # E 41
    "agent.tau": 0.005,  # W mtsac.py 103
    "agent.init_alpha": 1.0,  # W mtsac.py 101
}


def resolved(preset: str) -> dict:
    config = load_config(preset)
    flat = flatten(asdict(config))
    tasks = {"mt10": 10, "mt50": 50}[config.env.benchmark]
    for key in list(flat):
        flat[f"{key}/K"] = flat[key] / tasks if isinstance(flat[key], int) else None
    return flat


def _differences(preset: str, table: dict) -> dict:
    flat = resolved(preset)
    return {key: (flat.get(key), value) for key, value in table.items() if flat.get(key) != value}


@pytest.mark.parametrize("preset", sorted(MTRL_ROWS))
def test_mtrl_family_presets_are_their_rows_commands(preset):
    """Each row of CAGrad Table 3 (and FAMO's MT10 number) from its own command: CARE's rows
    (Multi-task SAC, Multi-headed SAC, PCGrad, Soft Modularization, CARE) from
    facebookresearch/mtrl docs_src/source/pages/tutorials/baseline.rst lines 81-208, CAGrad and
    CAGrad-Fast from Cranial-XIX/CAGrad mtrl/mtrl_files/run.sh lines 6-18, FAMO from
    Cranial-XIX/FAMO mtrl_files/run.sh line 8, on the loop, replay and networks of
    facebookresearch/mtrl (files and lines beside each value in MTRL_FAMILY)."""
    assert _differences(preset, {**MTRL_FAMILY, **MTRL_ROWS[preset]}) == {}


@pytest.mark.parametrize("preset", ["mt10-mwplus", "mt50-mwplus"])
def test_mwplus_presets_are_metaworld_algorithms_mtmhsac(preset):
    """Farama-Foundation/metaworld-algorithms (rainx0r/metaworld-algorithms)
    examples/multi_task/mtmhsac_mt10.py lines 31-62 with the library defaults it relies on
    (files and lines beside each value in MWPLUS). MT50 has no reference script: the MT10 one
    with 50 tasks, which the preset declares."""
    assert _differences(preset, MWPLUS) == {}
    if preset == "mt50-mwplus":
        text = next(d / f"{preset}.yaml" for d in preset_dirs() if (d / f"{preset}.yaml").is_file())
        assert "EXTRAPOLATION" in text.read_text()
        assert any("extrapolates" in c for c in caveats("mwplus", "mt50"))


def test_every_published_number_names_a_preset_checked_here():
    assert {p.preset for p in PUBLISHED} <= set(MTRL_ROWS)


@pytest.mark.parametrize("preset", [*sorted(MTRL_ROWS), "mt10-mwplus", "mt50-mwplus"])
def test_paper_presets_resolve_as_mtrl_train_does(preset):
    config = resolve_train_config(train_parser().parse_intermixed_args(["--config", preset]))
    assert config == load_config(preset)


def test_the_paper_setting_declares_what_it_cannot_reproduce():
    assert any("V1 envs" in c and "horizon 150" in c for c in caveats("mtrl", "mt10"))
    assert any("2026-05-19" in c and "terminal" in c for c in caveats("mwplus", "mt10"))
    assert caveats("none", "mt10") == ()


# ----------------------------------------------------------------- presets and the folder
def test_a_folder_or_file_named_like_a_preset_does_not_shadow_it(tmp_path, monkeypatch):
    """A folder ``mt10`` in the working directory once made ``--config mt10-mwplus`` fail
    (its ``base: mt10`` was taken for that folder)."""
    expected = {name: load_config(name) for name in ("mt10", "mt10-mwplus")}
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mt10").mkdir()
    (tmp_path / "mt10-mwplus").write_text("agent:\n  hidden_dims: [1]\n")
    for name, config in expected.items():
        assert load_config(name) == config
        args = train_parser().parse_intermixed_args(["--config", name])
        assert resolve_train_config(args) == config


def test_base_resolves_among_the_presets_and_files_beside_the_including_one(tmp_path, monkeypatch):
    (tmp_path / "mt10").mkdir()
    mine = tmp_path / "sub"
    mine.mkdir()
    (mine / "mine.yaml").write_text("base: mt10\ntrain:\n  seed: 4\n")
    (mine / "more.yaml").write_text("base: mine.yaml\ntrain:\n  threads: 2\n")
    monkeypatch.chdir(tmp_path)
    config = load_config("sub/more.yaml")
    assert (config.train.seed, config.train.threads) == (4, 2)
    assert config.train.protocol == "mtrl" and config.env.benchmark == "mt10"


def test_a_folder_is_never_a_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "c.yaml").mkdir()
    with pytest.raises(ConfigError, match="unknown config preset 'runs'; presets: mt10"):
        load_config("runs")
    with pytest.raises(ConfigError, match=r"config 'runs/' is a folder, not a YAML file"):
        load_config("runs/")
    with pytest.raises(ConfigError, match=r"config 'c.yaml' is a folder, not a YAML file"):
        load_config("c.yaml")
    (tmp_path / "b.yaml").write_text("base: runs\n")
    with pytest.raises(ConfigError, match="unknown config preset 'runs'"):
        load_config("b.yaml")


def test_a_bare_name_that_is_no_preset_may_still_be_a_file_here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "myconfig").write_text("train:\n  seed: 9\n")
    assert load_config("myconfig").train.seed == 9
    assert "myconfig" not in available_presets()
