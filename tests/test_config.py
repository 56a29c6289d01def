from dataclasses import asdict, fields

import pytest

from mtrl import protocols
from mtrl.config import (
    Config,
    ConfigError,
    available_presets,
    check_task_multiples,
    describe_options,
    flatten,
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
        (
            ["agent.hidden=[1]"],
            "unknown config key 'agent.hidden' (did you mean agent.hidden_dims?); allowed keys "
            "here: agent.",
        ),
        (
            ["trian.seed=1"],
            "unknown config key 'trian' (did you mean train?); allowed keys here: agent, balancer, "
            "checkpoint",
        ),
        (["train.total_steps=many"], "bad value for 'train.total_steps'"),
        (["train.total_steps=0"], "train.total_steps must be > 0, got 0"),
        (["train.total_steps=-10"], "train.total_steps must be > 0, got -10"),
        (["agent.gamma=1.5"], "agent.gamma must be in [0, 1]"),
        (["agent.hidden_dims=[]"], "agent.hidden_dims must be a non-empty list"),
        (["env.goal_mode=sometimes"], "env.goal_mode must be random or fixed"),
        (["train.device=tpu"], "train.device must be auto, cpu, cuda or cuda:N"),
        (["env.max_episode_steps=600"], "env.max_episode_steps must be in 1..500"),
        (["env.max_episode_steps=0"], "env.max_episode_steps must be in 1..500"),
        (["agent.grad_clip=0"], "agent.grad_clip must be > 0 or null"),
        (["train.protocol=care"], "unknown protocol 'care'; allowed: none, mtrl, mwplus"),
        (
            ["train.protocol=mtrl", "env.benchmark=mt1:reach-v3"],
            "protocol 'mtrl' is defined for the suites (mt10, mt25, mt50) and task sets of them, "
            "not 'mt1:reach-v3'",
        ),
        (["logger.wandb_mode=cloud"], "logger.wandb_mode must be offline or online"),
        (["seed"], "is not of the form KEY=VALUE"),
        (["balancer.components=[critic,critic]"], "balancer.components must be distinct names"),
        (["balancer.components=[q]"], "balancer.components must be distinct names from critic"),
        (["agent.temperature=both"], "agent.temperature must be one of per_task, shared"),
        (["agent.critic_reduction=max"], "agent.critic_reduction must be one of sum, mean"),
        (["agent.init=he"], "agent.init must be one of torch, xavier, mwplus, got 'he'"),
        (["agent.adam_eps=0"], "agent.adam_eps must be > 0"),
        (["agent.batch_size=0"], "agent.batch_size must be > 0 or null"),
        (
            ["train.replay_sampling=pooled"],
            "train.replay_sampling must be one of balanced, uniform",
        ),
        (["train.warmup_updates=-1"], "train.warmup_updates must be >= 0"),
        (["train.eval_final=false", "train.eval_every=0"], "train.eval_final=false leaves no"),
        (
            ["train.eval_final=false", "train.total_steps=100", "train.eval_every=100"],
            "must be in 1..99 (below train.total_steps) or train.eval_at_start=true",
        ),
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


def test_multi_head_is_the_older_spelling_of_the_multihead_model():
    for overrides in (["agent.multi_head=true"], ["agent.model=multihead"]):
        agent = load_config(None, overrides).agent
        assert (agent.model, agent.multi_head) == ("multihead", True), overrides
    assert load_config("mt10-mhsac").agent.model == "multihead"
    assert (load_config().agent.model, load_config().agent.multi_head) == ("mlp", False)
    with pytest.raises(ConfigError, match=r"agent\.multi_head=true means agent\.model=multihead"):
        load_config(None, ["agent.multi_head=true", "agent.model=care"])


def test_step_counts_must_be_whole_vector_steps():
    config = load_config(None, ["train.eval_every=1005"])
    check_task_multiples(config, 5)
    with pytest.raises(ConfigError, match=r"train.eval_every \(1005\) must be a multiple of"):
        check_task_multiples(config, 10)
    small = load_config(None, ["train.buffer_size=100", "agent.batch_per_task=64"])
    with pytest.raises(ConfigError, match=r"fewer than agent\.batch_per_task"):
        check_task_multiples(small, 10)


def test_the_batch_of_each_replay_sampling_must_be_drawable():
    """Balanced sampling draws agent.batch_per_task of every task: a total that is not K times
    it is refused (the mtrl protocol's 1280 on MT50 with balanced sampling); uniform sampling
    needs a buffer that K rings hold exactly as one pool."""
    switched = load_config("mt50", ["train.replay_sampling=balanced"])
    with pytest.raises(ConfigError, match=r"agent\.batch_size \(1280\) must be null or 50 x"):
        check_task_multiples(switched, 50)
    check_task_multiples(load_config("mt10", ["train.replay_sampling=balanced"]), 10)
    check_task_multiples(
        load_config("mt50", ["train.replay_sampling=balanced", "agent.batch_size=null"]), 50
    )
    odd = load_config("mt10", ["train.buffer_size=1000005"])
    with pytest.raises(ConfigError, match=r"must be a multiple of the number of tasks \(10\)"):
        check_task_multiples(odd, 10)


def test_every_option_is_documented():
    rows = describe_options()
    keys = {key for key, _, _ in rows}
    assert {"env.benchmark", "agent.multi_head", "surgery.name", "train.threads"} <= keys
    assert all(text for _, _, text in rows)
    sections = [getattr(Config(), f.name) for f in fields(Config)]
    assert len(keys) == sum(len(vars(section)) for section in sections)


def test_horizon_of_500_is_the_longest_allowed():
    assert load_config(None, ["env.max_episode_steps=500"]).env.max_episode_steps == 500


@pytest.mark.parametrize("spelling", ["MT50", "Mt50", " mt50 "])
def test_benchmark_names_are_stored_in_one_spelling(spelling):
    assert load_config(None, [f"env.benchmark={spelling}"]) == load_config(
        None, ["env.benchmark=mt50"]
    )


@pytest.mark.parametrize(
    "benchmark,tasks,total,eval_every,batch",
    [("mt10", 10, 20_000_000, 300_000, 128), ("mt50", 50, 100_000_000, 1_500_000, 26)],
)
def test_mtrl_protocol_values_reach_the_resolved_config(benchmark, tasks, total, eval_every, batch):
    config = load_config(None, ["train.protocol=mtrl", f"env.benchmark={benchmark}"])
    assert (config.env.goal_mode, config.env.max_episode_steps) == ("fixed", 500)
    assert config.train.total_steps == total == 2_000_000 * tasks
    assert (config.train.warmup_steps, config.train.warmup_updates) == (1500 * tasks, 1500)
    # every 30k vector steps (the code's eval_freq 10k at 150-step episode boundaries), from 0
    assert config.train.eval_every == eval_every == 30_000 * tasks
    assert (config.train.eval_at_start, config.train.eval_final) == (True, False)
    assert (config.train.eval_episodes, config.train.final_eval_episodes) == (1, 1)
    # 1280 in total, drawn uniformly from the pooled buffer (balanced: 128 per task, MT50 26)
    assert (config.train.replay_sampling, config.agent.batch_size) == ("uniform", 1280)
    assert config.agent.batch_per_task == batch
    assert config.agent.grad_clip is None
    assert (config.agent.task_input, config.agent.init, config.agent.log_std_squash) == (
        False,
        "xavier",
        True,
    )
    assert (config.agent.critic_reduction, config.agent.adam_eps) == ("sum", 1e-8)
    assert protocols.statistic("mtrl") == "best"


def test_mwplus_protocol_values_reach_the_resolved_config():
    config = load_config(None, ["train.protocol=mwplus", "env.benchmark=mt50"])
    assert config.env.goal_mode == "random"
    assert config.train.total_steps == 100_000_000
    assert (config.train.warmup_steps, config.train.warmup_updates) == (4000 * 50, 0)
    assert config.train.eval_every == 200_000  # transitions, on MT10 and MT50 alike
    assert (config.train.eval_at_start, config.train.eval_final) == (False, True)
    assert (config.train.eval_episodes, config.train.final_eval_episodes) == (50, 50)
    assert (config.agent.batch_per_task, config.agent.grad_clip) == (128, 1.0)
    assert (config.train.replay_sampling, config.agent.batch_size) == ("balanced", None)
    assert (config.agent.critic_reduction, config.agent.adam_eps) == ("mean", 1e-5)
    assert (config.agent.init, config.agent.task_input) == ("mwplus", True)
    assert protocols.statistic("mwplus") == "final"


def test_presets_and_overrides_win_over_the_protocol_and_deviations_are_listed():
    config = load_config("mt10-short", ["train.eval_episodes=5"])
    assert config.train.protocol == "mtrl"
    assert config.env.goal_mode == "fixed"  # from the protocol
    assert config.train.total_steps == 2_000_000  # the preset's
    assert config.train.eval_episodes == 5  # the override's
    flat = {"train.total_steps": 2_000_000, "train.eval_episodes": 5}
    assert protocols.deviations("mtrl", "mt10", {**_flat(load_config("mt10")), **flat}) == flat
    assert protocols.deviations("mtrl", "mt10", _flat(load_config("mt10"))) == {}


def test_paper_presets_follow_their_protocol_at_the_full_budget():
    for name in available_presets():
        config = load_config(name)
        if name in ("mt10-short", "mt50-short") or config.train.protocol == "none":
            continue
        assert (
            protocols.deviations(config.train.protocol, config.env.benchmark, _flat(config)) == {}
        ), name
    assert load_config("mt10").train.protocol == "mtrl"
    assert load_config("mt10-mwplus").train.protocol == "mwplus"


def _flat(config: Config) -> dict:
    return flatten(asdict(config))
