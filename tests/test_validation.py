"""Each registry validates its own config section; mtrl.validation.validate_run calls them all."""

from __future__ import annotations

import pytest

from mtrl import balancers, models, surgery
from mtrl.config import AgentConfig, BalancerConfig, ConfigError, SurgeryConfig, load_config
from mtrl.validation import validate_run


def test_the_defaults_pass_every_registry():
    surgery.validate("none", {})
    models.validate(AgentConfig(), ["reach-v3"])
    balancers.validate(BalancerConfig(), SurgeryConfig())
    assert validate_run(load_config("smoke")).num_tasks == 10


@pytest.mark.parametrize(
    "check,message",
    [
        (lambda: surgery.validate("magic", {}), "unknown surgery 'magic'; allowed: none, "),
        (lambda: surgery.validate("none", {"c": 1}), "surgery.options are set but"),
        (lambda: surgery.validate("cagrad", {"cc": 1}), "surgery 'cagrad': unknown option(s)"),
        (
            lambda: models.validate(AgentConfig(model="transformer"), ["reach-v3"]),
            "unknown model 'transformer' (agent.model)",
        ),
        (
            lambda: models.validate(AgentConfig(task_embeddings="x.json"), ["reach-v3"]),
            "agent.task_embeddings is set but agent.model=mlp does not read it",
        ),
        (
            lambda: balancers.validate(
                BalancerConfig("famo", components=["actor"]), SurgeryConfig()
            ),
            "balancer.components: actor is refused",
        ),
        (
            lambda: balancers.validate(BalancerConfig("none", options={"lr": 1}), SurgeryConfig()),
            "balancer.options are set but balancer.name is none",
        ),
    ],
)
def test_a_registry_names_what_is_wrong_in_its_section(check, message):
    with pytest.raises(ValueError) as info:
        check()
    assert message in str(info.value)


def test_validate_run_turns_a_registry_refusal_into_a_config_error():
    config = load_config("smoke", ["surgery.name=magic"])
    with pytest.raises(ConfigError, match="unknown surgery 'magic'"):
        validate_run(config)
