"""Experiment configuration: typed defaults, YAML presets, command-line overrides, validation.

A config is built in three layers, later ones winning: the dataclass defaults below, a preset or
YAML file (``--config``), then ``KEY=VALUE`` overrides and the dedicated CLI flags. OmegaConf does
the merging and type checking; :func:`validate` checks the values that types cannot express.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from mtrl import protocols
from mtrl.benchmarks import canonical_benchmark

MAX_EPISODE_STEPS = 500
"""Meta-World v3 truncates every episode at 500 steps itself; a longer horizon cannot happen."""
COMPONENTS = ("critic", "actor", "alpha")
"""The three MT-SAC losses, each trained by its own optimizer."""

COLLECTORS = ("serial", "overlap", "serial_lagged")
COMPILE_MODES = ("auto", "none", "inductor", "cudagraph")
"""``train.collector`` values: how env steps and updates are scheduled (see mtrl.collector)."""
REPLAY_SAMPLING = ("balanced", "uniform")
"""``train.replay_sampling`` values (see mtrl.replay)."""
TEMPERATURES = ("per_task", "shared")
"""``agent.temperature`` values: one log-alpha per task or one for all."""
CRITIC_REDUCTIONS = ("sum", "mean")
"""``agent.critic_reduction`` values: how the two Q networks' losses combine."""
INITS = ("torch", "xavier", "mwplus")
"""``agent.init`` values (see mtrl.networks.initialise)."""


class ConfigError(ValueError):
    """A user-facing configuration problem; the CLI prints it as one line and exits with 2."""


def option(default: Any, help: str) -> Any:
    """A config field with its ``--help`` text."""
    return field(default=default, metadata={"help": help})


def option_factory(factory: Callable[[], Any], help: str) -> Any:
    return field(default_factory=factory, metadata={"help": help})


@dataclass
class EnvConfig:
    benchmark: str = option(
        "mt10",
        "mt10, mt25, mt50, a task set mt50:<task>,<task>,... (e.g. "
        "mt50:reach-v3,button-press-topdown-v3: those MT50 tasks, each built as mt1:<task> is, "
        "the one-hot in the order given), or mt1:<env-name> (one task, to debug); "
        "case-insensitive",
    )
    goal_mode: str = option(
        "random",
        "random: each reset draws one of the task's 50 training goals (Meta-World's MT setting); "
        "fixed: one goal per task for the whole run (the setting of CARE, CAGrad, Nash-MTL)",
    )
    max_episode_steps: int = option(
        500, "episode horizon, at most 500; the env truncates (never terminates)"
    )
    reward_version: str = option("v2", "Meta-World reward: v2 (shaped, 0-10 per step) or v1")
    vector_strategy: str = option(
        "sync", "sync steps the K envs in this process; async: one process per env (many cores)"
    )


@dataclass
class AgentConfig:
    hidden_dims: list[int] = option_factory(
        lambda: [400, 400, 400],
        "hidden widths of the MLP of the actor and of each Q network (of the experts for moore, "
        "the observation embedding for soft_modularization: see the README)",
    )
    model: str = option(
        "mlp",
        "network of the actor and of both Q networks: mlp, multihead, soft_modularization, care, "
        "moore or paco (see the README)",
    )
    model_options: dict[str, Any] = option_factory(
        dict, "options of the model, e.g. {num_experts: 10} for care (agent.model_options.NAME=V)"
    )
    task_embeddings: str | None = option(
        None,
        "care: a JSON file mapping every task name to a fixed vector (e.g. language embeddings of "
        "the task descriptions); null: a learned embedding per task",
    )
    multi_head: bool = option(
        False, "true: the same as model=multihead (one output head per task), kept for old configs"
    )
    actor_lr: float = option(3e-4, "Adam learning rate of the actor")
    critic_lr: float = option(3e-4, "Adam learning rate of the twin critic")
    alpha_lr: float = option(3e-4, "Adam learning rate of the per-task log-temperatures")
    gamma: float = option(0.99, "discount factor")
    tau: float = option(0.005, "Polyak factor of the target critics")
    init_alpha: float = option(1.0, "initial temperature of every task")
    target_entropy: float | None = option(None, "per-task target entropy; null means -|A|")
    log_std_min: float = option(-20.0, "lower bound of the policy's log-std")
    log_std_max: float = option(2.0, "upper bound of the policy's log-std")
    batch_per_task: int = option(
        128,
        "transitions sampled per task per update under balanced replay sampling (batch = K x this)",
    )
    batch_size: int | None = option(
        None,
        "transitions per update in total under train.replay_sampling=uniform (the mtrl family: "
        "1280 on MT10 and MT50); null: K x batch_per_task. With balanced sampling it must be "
        "null or K x batch_per_task",
    )
    grad_clip: float | None = option(
        None,
        "clip the global norm of the actor's and of the critic's update (after surgery) to this; "
        "null: no clipping. The temperatures are never clipped",
    )
    task_input: bool = option(
        True,
        "mlp and multihead: append the task one-hot to the network input; false: the networks "
        "see the state only (the mtrl-family runs: identity encoder, no task encoder), multihead "
        "still picks its head by task. The other models never read the raw one-hot (they take "
        "the task through their task-specific parts) and ignore this",
    )
    temperature: str = option(
        "per_task",
        "per_task: one learned log-alpha per task; shared: one log-alpha for all tasks (CAGrad's, "
        "FAMO's and CARE's PCGrad runs), a shared parameter that gradient surgery on the alpha "
        "component combines like any other",
    )
    critic_reduction: str = option(
        "sum",
        "how the two Q networks' losses combine: sum (SAC, the mtrl family) or mean "
        "(Meta-World+; half the gradient, so grad_clip bites as twice the value would on the sum)",
    )
    adam_eps: float = option(1e-8, "Adam's eps for all three optimizers (Meta-World+: 1e-5)")
    init: str = option(
        "torch",
        "weight initialisation of the mlp and multihead networks: torch (PyTorch's default), "
        "xavier (Xavier-uniform weights, zero biases: facebookresearch/mtrl) or mwplus (He-uniform "
        "hidden weights, zero hidden biases, output weights and biases uniform in +-1e-3 for the "
        "actor and +-3e-3 for the Q networks: Meta-World+); the other models keep their own",
    )
    log_std_squash: bool = option(
        False,
        "bound the policy's log-std by tanh, rescaled into [log_std_min, log_std_max] (the mtrl "
        "family's actor) instead of clamping it (SAC, Meta-World+)",
    )

    def __post_init__(self) -> None:
        """``multi_head: true`` is the older spelling of ``model: multihead``; both keys are
        kept consistent, so that a config says its model in either spelling."""
        if self.multi_head:
            if self.model not in ("mlp", "multihead"):
                raise ConfigError(
                    f"agent.multi_head=true means agent.model=multihead and contradicts "
                    f"agent.model={self.model}; set only agent.model"
                )
            self.model = "multihead"
        self.multi_head = self.model == "multihead"


@dataclass
class SurgeryConfig:
    name: str = option("none", "gradient surgery method; none = mean of the per-task losses")
    options: dict[str, Any] = option_factory(
        dict, "method options, e.g. {c: 0.5} for cagrad (set one: surgery.options.c=0.5)"
    )
    components: list[str] = option_factory(
        lambda: ["critic", "actor", "alpha"],
        "the losses whose per-task gradients go through surgery (critic, actor, alpha)",
    )
    diagnostics_every: int = option(
        100,
        "every N updates, log the gradient diagnostics of the critic and the actor, with or "
        "without surgery: per task pair cos, magnitude similarity and xi, the shares of "
        "conflicting pairs meeting the PCGrad paper's conditions, and the curvature of the step "
        "(diag/<component>/...; the plain path computes per-task gradients on these updates "
        "only, and training is unchanged); 0: never",
    )
    diagnostics_batch: int = option(
        0,
        "0: the diagnostics use the update's own batch; N > 0: they are also computed on N "
        "transitions per task drawn for them alone, with their own random stream "
        "(diag/<component>/probe/...), to tell the gradients' geometry from minibatch noise; "
        "training is unchanged",
    )


@dataclass
class BalancerConfig:
    name: str = option(
        "none", "loss balancer: none, famo, uw or gradnorm (adaptive per-task loss weights)"
    )
    options: dict[str, Any] = option_factory(
        dict, "balancer options, e.g. {gamma: 0.01} for famo (set one: balancer.options.gamma=0.01)"
    )
    components: list[str] = option_factory(
        lambda: ["critic"],
        "the losses that get balanced; only the critic's (squared TD errors, positive, over "
        "shared parameters) qualify",
    )


@dataclass
class TrainConfig:
    protocol: str = option(
        "none",
        "a paper's protocol whose budget, goals, warm-up, evaluation and clipping the run follows: "
        "mtrl (CARE/CAGrad/Nash-MTL/FAMO), mwplus (Meta-World+) or none (your own settings); "
        "preset and command-line values still win and are recorded as deviations",
    )
    total_steps: int = option(2_000_000, "env steps summed over tasks (a vector step is K)")
    warmup_steps: int = option(40_000, "env steps of uniform random actions before updates")
    buffer_size: int = option(1_000_000, "replay capacity in transitions, split evenly over tasks")
    replay_sampling: str = option(
        "balanced",
        "balanced: agent.batch_per_task transitions of every task per update; uniform: "
        "agent.batch_size transitions drawn uniformly from all tasks' stored transitions, as from "
        "the mtrl family's one pooled FIFO buffer (the K per-task rings, filled in lockstep, hold "
        "exactly what that pool holds), so the tasks' counts vary from batch to batch; each task's "
        "loss is the mean over its draws. Uniform pads every task's draws to a fixed number of "
        "slots that holds them but with probability 1e-12 (for 1280 draws: 213 per task on MT10, "
        "71 on MT50, so the networks process 1.7x and 2.8x the batch)",
    )
    updates_per_step: int = option(1, "gradient updates per vector env step (K transitions)")
    warmup_updates: int = option(
        0,
        "updates run at once at the first update step, when the warm-up ends, in place of that "
        "step's updates_per_step (the mtrl family runs as many as its warm-up had vector steps, "
        "1500); 0: no burst",
    )
    eval_every: int = option(200_000, "evaluate every this many env steps; 0: only at the end")
    eval_at_start: bool = option(
        False, "also evaluate the untrained agent before the first step (the mtrl family does)"
    )
    eval_final: bool = option(
        True,
        "evaluate once more at the end of training; false: the last periodic evaluation is the "
        "final one (the mtrl family evaluates no more after it)",
    )
    eval_episodes: int = option(10, "episodes per task at intermediate evaluations")
    final_eval_episodes: int = option(50, "episodes per task at the final evaluation")
    log_every: int = option(10_000, "write training metrics every this many env steps")
    seed: int = option(0, "seeds networks, replay sampling, exploration and the envs' goals")
    device: str = option("auto", "auto (CUDA when available), cpu, cuda or cuda:N")
    threads: int = option(
        1,
        "torch CPU threads; 1 measured fastest on small CPU machines (2 busy-waiting threads made "
        "an update 9x slower), raise it only after measuring",
    )
    compile: str = option(
        "auto",
        "auto: inductor on a CPU for a run of at least 10,000 updates (where compiling pays), "
        "none otherwise; none: eager updates (the reference arithmetic); inductor: the "
        "update's gradients and forward passes through torch.compile and Adam's fused kernel "
        "(same arithmetic, other rounding; faster on a CPU, seconds to compile at the start; "
        "needs a C++ compiler); "
        "cudagraph: replay each update from one CUDA graph (same results, far fewer kernel "
        "launches; needs a surgery method that solves on the device; on a CPU the update runs "
        "eagerly with a note)",
    )
    collector: str = option(
        "serial",
        "serial: step the envs, then update (the reference); overlap: env worker processes step "
        "the envs while the learner updates, acting with the policy of one update before "
        "(a fixed one-update lag); serial_lagged: the overlap's schedule in this process",
    )
    env_workers: int = option(
        0,
        "processes stepping the envs under collector=overlap, each a contiguous slice of the "
        "tasks; 0: min(tasks, CPU cores available - 1), at least 1",
    )


@dataclass
class CheckpointConfig:
    every: int = option(
        100_000,
        "write a checkpoint every this many env steps, at the first episode boundary at or after "
        "each multiple (resume is exact there); 0: only at the end and on preemption",
    )
    keep_last: int = option(2, "keep this many most recent checkpoints; older ones are deleted")
    keep_best: bool = option(
        True, "keep checkpoints/best.pt, the agent of the evaluation with the best mean success"
    )


@dataclass
class LoggerConfig:
    wandb: bool = option(
        False,
        "also log to Weights & Biases (pip install 'mtrl[wandb]'); tensorboard and "
        "metrics.jsonl are always written",
    )
    wandb_project: str = option("mtrl", "W&B project")
    wandb_entity: str | None = option(None, "W&B entity (team or user); null: your default")
    wandb_mode: str = option(
        "offline",
        "offline: W&B files in the run folder, no network (upload later with 'wandb sync'); "
        "online: needs 'wandb login' and network",
    )


@dataclass
class Config:
    env: EnvConfig = field(default_factory=EnvConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    surgery: SurgeryConfig = field(default_factory=SurgeryConfig)
    balancer: BalancerConfig = field(default_factory=BalancerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)


def preset_dirs() -> list[Path]:
    """Where presets live: the repository's ``configs/`` or the installed ``share/mtrl/configs``."""
    return [
        Path(__file__).resolve().parent.parent / "configs",
        Path(sys.prefix) / "share" / "mtrl" / "configs",
    ]


def available_presets() -> list[str]:
    names = {p.stem for d in preset_dirs() if d.is_dir() for p in d.glob("*.yaml")}
    return sorted(names)


YAML_SUFFIXES = (".yaml", ".yml")


def _is_path(name_or_file: str) -> bool:
    """A YAML suffix or a folder in it makes a config name a file path; a bare word is a preset."""
    path = Path(name_or_file)
    return path.suffix in YAML_SUFFIXES or len(path.parts) > 1 or name_or_file.endswith(os.sep)


def _preset_path(name_or_file: str, including: Path | None = None) -> Path:
    """The YAML file of a preset name or of a path; a folder is never taken for a config.

    A bare name is looked up among the presets first, so that a folder (or file) of the same name
    in the working directory cannot shadow one. On the command line (``including`` None) a bare
    name that is no preset may still name a file there; a ``base:`` (``including``: the file
    naming it) resolves a bare name among the presets only, and a path relative to that file's
    folder.
    """
    if not _is_path(name_or_file):
        for directory in preset_dirs():
            candidate = directory / f"{name_or_file}.yaml"
            if candidate.is_file():
                return candidate
        if including is not None or not Path(name_or_file).is_file():
            raise ConfigError(
                f"unknown config preset '{name_or_file}'; presets: "
                f"{', '.join(available_presets())} (or give a path to a YAML file)"
            )
    path = Path(name_or_file)
    if including is not None and not path.is_absolute():
        path = including.parent / path
    if path.is_dir():
        raise ConfigError(f"config '{name_or_file}' is a folder, not a YAML file")
    if not path.is_file():
        raise ConfigError(f"config file '{name_or_file}' does not exist")
    return path


def _one_line(exc: OmegaConfBaseException) -> str:
    return str(exc).splitlines()[0].strip() if str(exc) else type(exc).__name__


def _merge(base: DictConfig, layer: Any, origin: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, layer)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{origin}: {_describe(exc)}") from None


def _describe(exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None)
    message = _one_line(exc)
    if isinstance(exc, (ConfigKeyError, ConfigAttributeError)):
        parent = ".".join(str(key).split(".")[:-1]) if key else ""
        allowed = _keys_at(parent)
        return (
            f"unknown config key '{key}'{_did_you_mean(str(key))}; allowed keys here: "
            f"{', '.join(allowed)}"
        )
    if key:
        return f"bad value for '{key}': {message}"
    return message


def _did_you_mean(key: str) -> str:
    """Known keys spelled like ``key``, in any section: a right name in the wrong section
    (``train.batch_size`` for ``agent.batch_size``) is as common as a typo."""
    known = [f.name for f in fields(Config)] + [k for k, _, _ in describe_options()]
    leaf = key.rsplit(".", 1)[-1]

    def likeness(candidate: str) -> float:
        whole = difflib.SequenceMatcher(None, key, candidate).ratio()
        return max(whole, difflib.SequenceMatcher(None, leaf, candidate.rsplit(".", 1)[-1]).ratio())

    close = sorted((k for k in known if likeness(k) >= 0.8), key=likeness, reverse=True)
    return f" (did you mean {' or '.join(close[:3])}?)" if close else ""


def _keys_at(dotted: str) -> list[str]:
    node: Any = OmegaConf.structured(Config)
    for part in filter(None, dotted.split(".")):
        node = node[part]
    return sorted(f"{dotted}.{k}" if dotted else str(k) for k in node)


def _preset_layers(preset: str, seen: tuple[Path, ...] = ()) -> list[tuple[DictConfig, str]]:
    """A preset's layers, its ``base: <preset>`` chain first, each with its origin for errors."""
    path = _preset_path(preset, seen[-1] if seen else None)
    if path.resolve() in seen:
        raise ConfigError(f"config '{path}' includes itself through 'base'")
    try:
        layer = OmegaConf.load(path)
    except (OSError, OmegaConfBaseException, ValueError) as exc:
        raise ConfigError(f"cannot read config '{path}': {_one_line(exc)}") from None
    if not isinstance(layer, DictConfig):
        raise ConfigError(f"config '{path}' must be a YAML mapping of sections")
    base = layer.pop("base", None)
    below = [] if base is None else _preset_layers(str(base), (*seen, path.resolve()))
    return [*below, (layer, f"config '{path.name}'")]


def parse_overrides(overrides: list[str]) -> DictConfig:
    """Turn ``["agent.actor_lr=1e-3", ...]`` into a config layer (values parsed as YAML)."""
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override '{item}' is not of the form KEY=VALUE (e.g. train.seed=3)")
    try:
        return OmegaConf.from_dotlist(overrides)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"bad override: {_one_line(exc)}") from None


def load_config(preset: str | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, the protocol's values, ``preset`` (a name in ``configs/`` or a YAML path), then
    ``overrides``.

    The protocol (``train.protocol``) may be named by any layer above it, and its values depend
    on the benchmark, so the layers are merged once to find both, then again with the protocol's
    values below the preset: what a preset or the command line sets always wins.
    """
    layers = [] if preset is None else _preset_layers(preset)
    if overrides:
        layers.append((parse_overrides(overrides), "override"))
    config = _merge_layers(OmegaConf.structured(Config), layers)
    config.env.benchmark = canonical_benchmark(config.env.benchmark)
    try:
        fixed = protocols.values(config.train.protocol, config.env.benchmark)
    except ValueError as exc:
        raise ConfigError(f"train.protocol: {exc}") from None
    if fixed:
        origin = f"protocol '{config.train.protocol}'"
        base = _merge(OmegaConf.structured(Config), unflatten(fixed), origin)
        config = _merge_layers(base, layers)
    return _validated(config)


def _merge_layers(config: DictConfig, layers: list[tuple[DictConfig, str]]) -> DictConfig:
    for layer, origin in layers:
        config = _merge(config, layer, origin)
    return config


def to_yaml(config: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def config_from_yaml(text: str, origin: str) -> Config:
    """A resolved config from YAML text (as stored inside a checkpoint), validated."""
    try:
        layer = OmegaConf.create(text)
    except (OmegaConfBaseException, ValueError) as exc:
        raise ConfigError(f"cannot read the config of {origin}: {exc}") from None
    return _validated(_merge(OmegaConf.structured(Config), layer, origin))


def _validated(config: DictConfig) -> Config:
    result: Config = OmegaConf.to_object(config)  # type: ignore[assignment]
    result.env.benchmark = canonical_benchmark(result.env.benchmark)
    validate(result)
    return result


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def validate(config: Config) -> None:
    """Reject values the types allow but the experiment cannot use."""
    env, agent, train = config.env, config.agent, config.train
    _require(
        env.goal_mode in ("random", "fixed"),
        f"env.goal_mode must be random or fixed, got '{env.goal_mode}'",
    )
    _require(
        env.reward_version in ("v1", "v2"),
        f"env.reward_version must be v1 or v2, got '{env.reward_version}'",
    )
    _require(
        env.vector_strategy in ("sync", "async"),
        f"env.vector_strategy must be sync or async, got '{env.vector_strategy}'",
    )
    _require(
        0 < env.max_episode_steps <= MAX_EPISODE_STEPS,
        f"env.max_episode_steps must be in 1..{MAX_EPISODE_STEPS} (Meta-World v3 truncates every "
        f"episode at {MAX_EPISODE_STEPS} steps itself), got {env.max_episode_steps}",
    )
    _require(
        len(agent.hidden_dims) > 0 and all(h > 0 for h in agent.hidden_dims),
        f"agent.hidden_dims must be a non-empty list of positive widths, got {agent.hidden_dims}",
    )
    for name in ("actor_lr", "critic_lr", "alpha_lr", "init_alpha"):
        value = getattr(agent, name)
        _require(value > 0, f"agent.{name} must be > 0, got {value}")
    _require(0 <= agent.gamma <= 1, f"agent.gamma must be in [0, 1], got {agent.gamma}")
    _require(0 < agent.tau <= 1, f"agent.tau must be in (0, 1], got {agent.tau}")
    _require(
        agent.log_std_min < agent.log_std_max,
        f"agent.log_std_min ({agent.log_std_min}) must be below agent.log_std_max "
        f"({agent.log_std_max})",
    )
    _require(
        agent.batch_per_task > 0, f"agent.batch_per_task must be > 0, got {agent.batch_per_task}"
    )
    _require(
        agent.grad_clip is None or agent.grad_clip > 0,
        f"agent.grad_clip must be > 0 or null (no clipping), got {agent.grad_clip}",
    )
    _require(
        agent.batch_size is None or agent.batch_size > 0,
        f"agent.batch_size must be > 0 or null (K x agent.batch_per_task), got {agent.batch_size}",
    )
    for name, allowed in (
        ("temperature", TEMPERATURES),
        ("critic_reduction", CRITIC_REDUCTIONS),
        ("init", INITS),
    ):
        value = getattr(agent, name)
        _require(
            value in allowed,
            f"agent.{name} must be one of {', '.join(allowed)}, got '{value}'",
        )
    _require(agent.adam_eps > 0, f"agent.adam_eps must be > 0, got {agent.adam_eps}")
    for name in ("total_steps", "buffer_size", "updates_per_step", "eval_episodes"):
        value = getattr(train, name)
        _require(value > 0, f"train.{name} must be > 0, got {value}")
    names = ("warmup_steps", "warmup_updates", "eval_every", "final_eval_episodes", "log_every")
    for name in (*names, "seed"):
        value = getattr(train, name)
        _require(value >= 0, f"train.{name} must be >= 0, got {value}")
    _require(
        train.replay_sampling in REPLAY_SAMPLING,
        f"train.replay_sampling must be one of {', '.join(REPLAY_SAMPLING)}, "
        f"got '{train.replay_sampling}'",
    )
    _require(
        train.eval_final or train.eval_at_start or 0 < train.eval_every < train.total_steps,
        f"train.eval_final=false leaves no evaluation: train.eval_every ({train.eval_every}) "
        f"must be in 1..{train.total_steps - 1} (below train.total_steps) or "
        "train.eval_at_start=true",
    )
    _require(
        train.device in ("auto", "cpu", "cuda") or train.device.startswith("cuda:"),
        f"train.device must be auto, cpu, cuda or cuda:N, got '{train.device}'",
    )
    _require(train.threads > 0, f"train.threads must be > 0, got {train.threads}")
    _require(
        train.collector in COLLECTORS,
        f"train.collector must be one of {', '.join(COLLECTORS)}, got '{train.collector}'",
    )
    _require(
        train.env_workers >= 0,
        f"train.env_workers must be >= 0 (0: chosen from the CPU cores), got {train.env_workers}",
    )
    _require(
        train.compile in COMPILE_MODES,
        f"train.compile must be one of {', '.join(COMPILE_MODES)}, got '{train.compile}'",
    )
    _require(
        train.protocol in protocols.names(),
        f"train.protocol must be one of {', '.join(protocols.names())}, got '{train.protocol}'",
    )
    logger = config.logger
    _require(
        logger.wandb_mode in ("offline", "online"),
        f"logger.wandb_mode must be offline or online, got '{logger.wandb_mode}'",
    )
    surgery = config.surgery
    for section in ("surgery", "balancer"):
        components = getattr(config, section).components
        _require(
            set(components) <= set(COMPONENTS) and len(set(components)) == len(components),
            f"{section}.components must be distinct names from {', '.join(COMPONENTS)}, "
            f"got {components}",
        )
    _require(
        surgery.diagnostics_every >= 0,
        f"surgery.diagnostics_every must be >= 0, got {surgery.diagnostics_every}",
    )
    _require(
        surgery.diagnostics_batch >= 0,
        f"surgery.diagnostics_batch must be >= 0 (0: the update's batch), got "
        f"{surgery.diagnostics_batch}",
    )
    checkpoint = config.checkpoint
    _require(checkpoint.every >= 0, f"checkpoint.every must be >= 0, got {checkpoint.every}")
    _require(
        checkpoint.keep_last >= 1, f"checkpoint.keep_last must be >= 1, got {checkpoint.keep_last}"
    )


def check_task_multiples(config: Config, num_tasks: int) -> None:
    """The values that depend on the number of tasks. Step counts must be whole vector steps so
    that evaluation and logging happen exactly."""
    for name in ("total_steps", "eval_every", "log_every"):
        value = getattr(config.train, name)
        _require(
            value % num_tasks == 0,
            f"train.{name} ({value}) must be a multiple of the number of tasks ({num_tasks}): "
            "one vector step is one env step per task",
        )
    _require(
        config.train.env_workers <= num_tasks,
        f"train.env_workers ({config.train.env_workers}) must not exceed the number of tasks "
        f"({num_tasks}): each worker steps at least one env",
    )
    capacity = config.train.buffer_size // num_tasks
    _require(
        capacity >= config.agent.batch_per_task,
        f"train.buffer_size ({config.train.buffer_size}) leaves {capacity} transitions per task, "
        f"fewer than agent.batch_per_task ({config.agent.batch_per_task})",
    )
    agent, balanced = config.agent, config.train.replay_sampling == "balanced"
    per_task_total = num_tasks * agent.batch_per_task
    _require(
        not balanced or agent.batch_size in (None, per_task_total),
        f"agent.batch_size ({agent.batch_size}) must be null or {num_tasks} x "
        f"agent.batch_per_task ({per_task_total}) with train.replay_sampling=balanced, which "
        "draws agent.batch_per_task of every task; set agent.batch_size=null",
    )
    _require(
        balanced or config.train.buffer_size % num_tasks == 0,
        f"train.buffer_size ({config.train.buffer_size}) must be a multiple of the number of "
        f"tasks ({num_tasks}) with train.replay_sampling=uniform: then the per-task rings hold "
        "exactly what one pooled buffer of that size would",
    )


def describe_options() -> list[tuple[str, str, str]]:
    """(dotted key, default, help) for every config value, for ``--help``."""
    rows = []
    for section in fields(Config):
        for item in fields(section.default_factory()):  # type: ignore[misc]
            default = getattr(section.default_factory(), item.name)  # type: ignore[misc]
            rows.append((f"{section.name}.{item.name}", repr(default), item.metadata["help"]))
    return rows


RUN_ONLY_KEYS = frozenset(
    {
        "train.seed",
        "train.device",
        "train.threads",
        "train.compile",
        "train.env_workers",
        "train.log_every",
        "env.vector_strategy",
    }
)
"""Settings that change where or how a run executes or logs, not what it computes (besides the
seed): the seeds of one experiment differ only in these (and in checkpoint.* and logger.*)."""


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"seed": 0}}`` -> ``{"train.seed": 0}`` (an empty mapping stays a value)."""
    if isinstance(tree, dict) and (tree or not prefix):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): tree}


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"train.seed": 0}`` -> ``{"train": {"seed": 0}}``."""
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def changed_keys(old: Config, new: Config) -> dict[str, tuple[Any, Any]]:
    """Dotted key -> (old value, new value) for every value that differs, sorted by key."""
    a, b = flatten(asdict(old)), flatten(asdict(new))
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}
