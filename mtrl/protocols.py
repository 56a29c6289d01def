"""The papers' Meta-World protocols: one name sets what the papers' code did in all their runs.

Published MT10/MT50 numbers come from two families of experiments that differ in almost every
setting, so a result is only comparable with a paper run under that paper's protocol. A
protocol sets what the reference code does in every run of the family (budget, goals, warm-up,
replay, evaluation, the code's network details); what differs between the rows of a paper's
table (the model, the surgery method, one or per-task temperatures) is set by that row's preset.

``mtrl``
    The CARE / CAGrad / Nash-MTL / FAMO family (facebookresearch/mtrl; CAGrad's and FAMO's
    ``run.sh`` on top): 2M vector steps (one step of every task; 20M transitions on MT10, 100M on
    MT50) with one update each, one fixed goal per task for the whole run, 1500 vector steps of
    random actions and then 1500 updates at once (``multitask.py``: ``num_updates =
    init_steps`` at ``step == init_steps``), a batch of 1280 drawn uniformly from one pooled
    FIFO buffer of 1e6 transitions (``replay_buffer.py``), networks that see no task id (identity
    encoder, no task encoder), Xavier-uniform weights with zero biases, the log-std bounded by
    tanh. Evaluation: one deterministic episode per task when ``step % 150 == 0`` and ``step %
    10000 == 0``, i.e. every 30k vector steps from step 0, and none after the last step (67
    evaluations); the reported number is the best mean success over them (CAGrad App. B).
``mwplus``
    Meta-World+ (metaworld-algorithms, v3 envs): 2e7 transitions on MT10 and 1e8 on MT50, random
    goals (one of the 50 training goals at every reset), 4000 vector steps of random actions, 50
    deterministic evaluation episodes per task every 200k transitions and at the end, batch 128
    per task, gradient-norm clipping at 1.0 on actor and critic, the critic loss the mean of the
    two Q losses, Adam eps 1e-5, He-uniform initialisation with small uniform output layers;
    the reported number is the final success.

Both run here on Meta-World v3 with horizon 500 and the v2 (shaped) reward. The mtrl family ran
the older V1 envs (horizon 150, V1 reward, normalised); the documentation's "Protocols and
published numbers" page says what that means for comparisons and
[CAVEATS][mtrl.published.CAVEATS] lists what cannot be reproduced. A protocol's values sit below
the preset and the command line in the config layers: any of them can still be changed, and
[deviations][mtrl.protocols.deviations] lists what was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from mtrl.benchmarks import SINGLE_TASK_PREFIX, parse_benchmark

NONE = "none"


@dataclass(frozen=True)
class Protocol:
    name: str
    source: str
    statistic: Literal["best", "final"]
    """What the papers report: the best evaluation of a run, or its final one."""
    vector_steps: int
    warmup_vector_steps: int
    warmup_updates: int
    goal_mode: str
    eval_every_vector_steps: int | None
    eval_every_transitions: int | None
    eval_at_start: bool
    eval_final: bool
    eval_episodes: int
    replay_sampling: str
    batch_total: int | None
    """Uniform sampling: the transitions of an update in total."""
    batch_per_task: int | None
    grad_clip: float | None
    task_input: bool
    init: str
    log_std_squash: bool
    critic_reduction: str
    adam_eps: float

    def values(self, num_tasks: int) -> dict[str, Any]:
        """Dotted config key -> value for a benchmark of ``num_tasks`` tasks."""
        eval_every = (
            self.eval_every_vector_steps * num_tasks
            if self.eval_every_vector_steps is not None
            else self.eval_every_transitions
        )
        batch = (
            self.batch_per_task
            if self.batch_per_task is not None
            else round((self.batch_total or 0) / num_tasks)
        )
        return {
            "env.goal_mode": self.goal_mode,
            "env.max_episode_steps": 500,
            "env.reward_version": "v2",
            "agent.batch_per_task": batch,
            "agent.batch_size": self.batch_total if self.replay_sampling == "uniform" else None,
            "agent.grad_clip": self.grad_clip,
            "agent.task_input": self.task_input,
            "agent.init": self.init,
            "agent.log_std_squash": self.log_std_squash,
            "agent.critic_reduction": self.critic_reduction,
            "agent.adam_eps": self.adam_eps,
            "train.total_steps": self.vector_steps * num_tasks,
            "train.warmup_steps": self.warmup_vector_steps * num_tasks,
            "train.warmup_updates": self.warmup_updates,
            "train.buffer_size": 1_000_000,
            "train.replay_sampling": self.replay_sampling,
            "train.updates_per_step": 1,
            "train.eval_every": eval_every,
            "train.eval_at_start": self.eval_at_start,
            "train.eval_final": self.eval_final,
            "train.eval_episodes": self.eval_episodes,
            "train.final_eval_episodes": self.eval_episodes,
        }


PROTOCOLS = {
    "mtrl": Protocol(
        name="mtrl",
        source="CARE / CAGrad / Nash-MTL / FAMO (facebookresearch/mtrl), CAGrad App. B",
        statistic="best",
        vector_steps=2_000_000,
        warmup_vector_steps=1500,
        warmup_updates=1500,
        goal_mode="fixed",
        eval_every_vector_steps=30_000,
        eval_every_transitions=None,
        eval_at_start=True,
        eval_final=False,
        eval_episodes=1,
        replay_sampling="uniform",
        batch_total=1280,
        batch_per_task=None,
        grad_clip=None,
        task_input=False,
        init="xavier",
        log_std_squash=True,
        critic_reduction="sum",
        adam_eps=1e-8,
    ),
    "mwplus": Protocol(
        name="mwplus",
        source="Meta-World+ (metaworld-algorithms, v3 envs)",
        statistic="final",
        vector_steps=2_000_000,
        warmup_vector_steps=4000,
        warmup_updates=0,
        goal_mode="random",
        eval_every_vector_steps=None,
        eval_every_transitions=200_000,
        eval_at_start=False,
        eval_final=True,
        eval_episodes=50,
        replay_sampling="balanced",
        batch_total=None,
        batch_per_task=128,
        grad_clip=1.0,
        task_input=True,
        init="mwplus",
        log_std_squash=False,
        critic_reduction="mean",
        adam_eps=1e-5,
    ),
}


def names() -> list[str]:
    return [NONE, *PROTOCOLS]


def get(name: str) -> Protocol:
    """The protocol called ``name``; ValueError listing the allowed names otherwise."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol '{name}'; allowed: {', '.join(names())}")
    return PROTOCOLS[name]


def values(name: str, benchmark: str) -> dict[str, Any]:
    """The config values protocol ``name`` sets on ``benchmark`` (empty for ``none``)."""
    if name == NONE:
        return {}
    protocol = get(name)
    parsed = parse_benchmark(benchmark)
    if parsed.name.startswith(SINGLE_TASK_PREFIX):
        raise ValueError(
            f"protocol '{name}' is defined for the suites (mt10, mt25, mt50) and task sets of "
            f"them, not '{benchmark}'; use train.protocol={NONE} for mt1"
        )
    return protocol.values(parsed.num_tasks)


def deviations(name: str, benchmark: str, flat_config: dict[str, Any]) -> dict[str, Any]:
    """Protocol keys whose value in ``flat_config`` (dotted keys) differs: key -> run value."""
    return {
        key: flat_config.get(key)
        for key, value in values(name, benchmark).items()
        if flat_config.get(key) != value
    }


def statistic(name: str) -> str | None:
    """``best`` or ``final``: the number a protocol's papers report; None without a protocol."""
    return None if name == NONE else get(name).statistic
