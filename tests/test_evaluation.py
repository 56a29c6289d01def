import numpy as np
import pytest
from metaworld.policies import SawyerReachV3Policy

from mtrl.config import EnvConfig
from mtrl.envs import make_envs, parse_benchmark
from mtrl.evaluation import EvalResult, evaluate

TASKS = ("reach-v3",)


class ScriptedReach:
    """Meta-World's expert reach policy; after ``leave_after`` steps it drives the hand away."""

    def __init__(self, leave_after: int | None = None):
        self.expert = SawyerReachV3Policy()
        self.leave_after = leave_after
        self.steps = 0

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        assert deterministic, "evaluation must ask for deterministic actions"
        self.steps += 1
        if self.leave_after is not None and self.steps > self.leave_after:
            return np.tile([0.0, -1.0, 1.0, 0.0], (len(obs), 1))
        return np.stack([self.expert.get_action(o[:39]) for o in obs])


class StandStill:
    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        return np.zeros((len(obs), 4))


@pytest.fixture()
def envs():
    envs = make_envs(parse_benchmark("mt1:reach-v3"), EnvConfig(), seed=0)
    yield envs
    envs.close()


pytestmark = pytest.mark.filterwarnings("ignore:Constant.*may be too high:UserWarning")


def test_expert_succeeds_and_standing_still_fails(envs):
    assert evaluate(ScriptedReach(), envs, TASKS, episodes=3).success == {"reach-v3": 1.0}
    assert evaluate(StandStill(), envs, TASKS, episodes=2).success == {"reach-v3": 0.0}


def test_success_at_any_step_counts_even_if_lost_later(envs):
    """The expert reaches the goal within ~70 steps, then the policy leaves it for good.

    The final state is a failure, but the episode succeeded at some step: it counts.
    """
    obs, _ = envs.reset()
    policy, successes = ScriptedReach(leave_after=100), []
    for _ in range(500):
        obs, _, _, _, info = envs.step(policy.act(obs, deterministic=True))
        successes.append(bool(info["success"][0]) if "success" in info else False)
    assert any(successes[:110]) and not successes[-2], "reaches the goal, then loses it"

    leaving = ScriptedReach(leave_after=100)
    assert evaluate(leaving, envs, TASKS, episodes=1).success == {"reach-v3": 1.0}
    # the same policy with the expert cut off before it arrives never succeeds
    assert evaluate(ScriptedReach(leave_after=1), envs, TASKS, episodes=1).success == {
        "reach-v3": 0.0
    }


def test_evaluation_restores_training_behaviour(envs):
    evaluate(StandStill(), envs, TASKS, episodes=1)
    assert envs.get_attr("terminate_on_success") == (False,)


def test_metrics_have_every_task_and_the_mean():
    result = EvalResult(
        success={"a": 1.0, "b": 0.5}, mean_return={"a": 10.0, "b": 20.0}, episodes=2
    )
    metrics = result.metrics()
    assert metrics["eval/success"] == 0.75
    assert metrics["eval/success/a"] == 1.0 and metrics["eval/success/b"] == 0.5
    assert metrics["eval/return"] == 15.0
    assert metrics["eval/episodes"] == 2


def test_episodes_must_be_positive(envs):
    with pytest.raises(ValueError, match="episodes must be > 0"):
        evaluate(StandStill(), envs, TASKS, episodes=0)
