from dataclasses import fields

import pytest

from mtrl.config import (
    Config,
    ConfigError,
    available_presets,
    check_task_multiples,
    describe_options,
    load_config,
    to_yaml,
)


def test_defaults_follow_the_design():
    config = load_config()
    assert config.agent.hidden_dims == [400, 400, 400]
    assert config.agent.batch_per_task == 128
    assert (config.agent.actor_lr, config.agent.gamma, config.agent.tau) == (3e-4, 0.99, 0.005)
    assert config.train.buffer_size == 1_000_000
    assert config.train.threads == 1


def test_presets_exist_and_load():
    assert {"mt10", "mt50", "smoke"} <= set(available_presets())
    mt50 = load_config("mt50")
    assert mt50.env.benchmark == "mt50"
    smoke = load_config("smoke")
    assert smoke.agent.hidden_dims == [64, 64]
    assert smoke.train.total_steps < load_config("mt10").train.total_steps


def test_overrides_win_over_presets_and_are_typed():
    config = load_config("smoke", ["agent.hidden_dims=[8,8,8]", "train.seed=7", "agent.tau=0.5"])
    assert config.agent.hidden_dims == [8, 8, 8]
    assert config.train.seed == 7
    assert config.agent.tau == 0.5
    assert load_config(None, ["surgery.options={c: 0.9}"]).surgery.options == {"c": 0.9}


def test_yaml_file_and_round_trip(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("agent:\n  multi_head: true\ntrain:\n  total_steps: 1000\n")
    config = load_config(str(path))
    assert config.agent.multi_head and config.train.total_steps == 1000
    resolved = tmp_path / "config.yaml"
    resolved.write_text(to_yaml(config))
    assert load_config(str(resolved)) == config


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["agent.hidden=[1]"], "unknown config key 'agent.hidden'; allowed keys here: agent."),
        (
            ["trian.seed=1"],
            "unknown config key 'trian'; allowed keys here: agent, balancer, checkpoint, env",
        ),
        (["train.total_steps=many"], "bad value for 'train.total_steps'"),
        (["train.total_steps=0"], "train.total_steps must be > 0, got 0"),
        (["train.total_steps=-10"], "train.total_steps must be > 0, got -10"),
        (["agent.gamma=1.5"], "agent.gamma must be in [0, 1]"),
        (["agent.hidden_dims=[]"], "agent.hidden_dims must be a non-empty list"),
        (["env.goal_mode=sometimes"], "env.goal_mode must be random or fixed"),
        (["train.device=tpu"], "train.device must be auto, cpu, cuda or cuda:N"),
        (["seed"], "is not of the form KEY=VALUE"),
        (["balancer.components=[critic,critic]"], "balancer.components must be distinct names"),
        (["balancer.components=[q]"], "balancer.components must be distinct names from critic"),
    ],
)
def test_bad_values_name_the_problem_and_what_is_allowed(overrides, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_preset_lists_the_presets(tmp_path):
    with pytest.raises(ConfigError, match="unknown config preset 'mt100'; presets: mt10"):
        load_config("mt100")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "missing.yaml"))


def test_bad_preset_file_is_reported(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("agent:\n  nonsense: 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'agent\.nonsense'"):
        load_config(str(path))


def test_step_counts_must_be_whole_vector_steps():
    config = load_config(None, ["train.eval_every=1005"])
    check_task_multiples(config, 5)
    with pytest.raises(ConfigError, match=r"train.eval_every \(1005\) must be a multiple of"):
        check_task_multiples(config, 10)
    small = load_config(None, ["train.buffer_size=100", "agent.batch_per_task=64"])
    with pytest.raises(ConfigError, match=r"fewer than agent\.batch_per_task"):
        check_task_multiples(small, 10)


def test_every_option_is_documented():
    rows = describe_options()
    keys = {key for key, _, _ in rows}
    assert {"env.benchmark", "agent.multi_head", "surgery.name", "train.threads"} <= keys
    assert all(text for _, _, text in rows)
    sections = [getattr(Config(), f.name) for f in fields(Config)]
    assert len(keys) == sum(len(vars(section)) for section in sections)
