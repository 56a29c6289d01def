"""Checkpoints: everything a run needs to continue as if it had never stopped.

A checkpoint file is an ordinary ``torch.save`` zip file holding one dict::

    format    "mtrl-checkpoint"
    version   FORMAT_VERSION (a reader refuses newer versions)
    kind      "train" (resumable: the whole run state) or "agent" (networks only, for mtrl-eval)
    checksum  "sha256:..." over kind, state and every tensor's bytes
    state     JSON text: counters, config, RNG states, env states, ... with tensor references
    tensors   {name: CPU tensor}: networks, optimizers, replay, generator states

It is read back with ``torch.load(weights_only=True)``: only tensors and plain containers are
ever unpickled. torch's zip reader does not check data CRCs, so a flipped byte in a tensor would
load silently; the checksum catches it.

Exact resume: a training checkpoint is written at an episode boundary (the K envs step in
lockstep and all reset together at the horizon). The MuJoCo state right after a reset is a
function of the env's task, so it is rebuilt by putting each env back on its saved task
(identified by index among the env's own 50 tasks, which the seed reproduces), resetting it, and
then loading the saved goal-sampling RNG states through Meta-World's ``load_checkpoint``. The
observation after that reset is compared with the saved one. A checkpoint taken mid-episode (on
preemption) restores everything but the physics: the envs start new episodes on resume, so the
continuation is deterministic but not identical to an uninterrupted run. A preemption checkpoint
may also be taken inside a vector step, with some of its updates still due or its evaluation not
(or not completely) run: the trainer's state says which, the evaluation envs' state is the one
from before that evaluation, and the resumed run does the rest first (see :mod:`mtrl.train`).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import signal
import threading
import warnings
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from mtrl.config import (
    CheckpointConfig,
    Config,
    ConfigError,
    changed_keys,
    config_from_yaml,
    load_config,
    to_yaml,
)
from mtrl.device import resolve_device
from mtrl.errors import WriteFailed, os_error_in

if TYPE_CHECKING:
    import gymnasium as gym

    from mtrl.agent import MTSAC
    from mtrl.envs import Benchmark
    from mtrl.evaluation import EvalResult
    from mtrl.logger import RunLogger
    from mtrl.replay import MultiTaskReplay

FORMAT = "mtrl-checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_DIR = "checkpoints"
BEST_FILE = "best.pt"
KIND_TRAIN = "train"
KIND_AGENT = "agent"
_STEP_FILE = re.compile(r"^step-(\d+)\.pt$")
_TMP_FILE = re.compile(r"^\..+\.tmp-\d+$")

# Config values that may differ between a run and its resumption: they change where and how fast
# the run executes or how its checkpoints are kept, not the experiment.
RESUME_MUTABLE_KEYS = (
    "train.device",
    "train.threads",
    "train.compile",
    "train.env_workers",
    "checkpoint.every",
    "checkpoint.keep_last",
    "checkpoint.keep_best",
)


class CheckpointError(ValueError):
    """A missing, unreadable, corrupted, foreign or incompatible checkpoint; one line for users."""


# --------------------------------------------------------------------------------- file format
_TENSOR, _NDARRAY, _TUPLE, _DICT = "__tensor__", "__ndarray__", "__tuple__", "__dict__"


def _encode(tree: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    """JSON-able copy of ``tree``; tensors and arrays move to ``tensors`` and leave a reference."""
    if isinstance(tree, torch.Tensor):
        tensor = tree.detach().cpu()
        whole = tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
        if not (tensor.is_contiguous() and whole and tensor.storage_offset() == 0):
            tensor = tensor.clone(memory_format=torch.contiguous_format)  # never save a view
        name = _unique(path, tensors)
        tensors[name] = tensor
        return {_TENSOR: name}
    if isinstance(tree, np.ndarray):
        name = _unique(path, tensors)
        tensors[name] = torch.from_numpy(np.array(tree, copy=True, order="C"))
        return {_NDARRAY: name}
    if isinstance(tree, np.generic):
        return tree.item()
    if tree is None or isinstance(tree, (bool, int, float, str)):
        return tree
    if isinstance(tree, tuple):
        return {_TUPLE: [_encode(v, tensors, f"{path}/{i}") for i, v in enumerate(tree)]}
    if isinstance(tree, list):
        return [_encode(v, tensors, f"{path}/{i}") for i, v in enumerate(tree)]
    if isinstance(tree, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in tree):
            return {k: _encode(v, tensors, f"{path}/{k}") for k, v in tree.items()}
        return {
            _DICT: [
                [_encode(k, tensors, f"{path}/key"), _encode(v, tensors, f"{path}/{k}")]
                for k, v in tree.items()
            ]
        }
    raise TypeError(f"cannot store a {type(tree).__name__} (at '{path}') in a checkpoint")


def _unique(path: str, taken: dict[str, torch.Tensor]) -> str:
    name, n = path.lstrip("/"), 1
    while name in taken:
        name, n = f"{path.lstrip('/')}#{n}", n + 1
    return name


def _decode(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(tree, list):
        return [_decode(v, tensors) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if len(tree) == 1:
        ((key, value),) = tree.items()
        if key == _TENSOR:
            return tensors[value]
        if key == _NDARRAY:
            return tensors[value].numpy()
        if key == _TUPLE:
            return tuple(_decode(v, tensors) for v in value)
        if key == _DICT:
            return {_decode(k, tensors): _decode(v, tensors) for k, v in value}
    return {k: _decode(v, tensors) for k, v in tree.items()}


def _checksum(version: int, kind: str, state: str, tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256(f"{FORMAT}\0{version}\0{kind}\0".encode())
    digest.update(state.encode())
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(f"\0{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        if tensor.numel():
            digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy())
    return f"sha256:{digest.hexdigest()}"


def save_checkpoint(path: Path, kind: str, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically: a temporary file beside ``path``, fsync, rename, fsync dir.

    A crash at any point leaves either the previous file or the new one, never a partial one.
    An ``OSError`` while writing (a full disk) removes the temporary file and is raised as
    :class:`WriteFailed`.
    """
    tensors: dict[str, torch.Tensor] = {}
    text = json.dumps(_encode(state, tensors, ""), separators=(",", ":"))
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "kind": kind,
        "checksum": _checksum(FORMAT_VERSION, kind, text, tensors),
        "state": text,
        "tensors": tensors,
    }
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        error = os_error_in(exc) if isinstance(exc, Exception) else None
        if error is not None:
            raise WriteFailed(path, error) from None
        raise
    return path


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint file, decoded (tensors on the CPU)."""

    path: Path
    kind: str
    state: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.state["step"])

    @property
    def config(self) -> Config:
        try:
            return config_from_yaml(self.state["config"], f"checkpoint '{self.path}'")
        except ConfigError as exc:
            raise CheckpointError(str(exc)) from None


def load_checkpoint(path: Path | str) -> Checkpoint:
    """Read and verify a checkpoint; any problem is a one-line :class:`CheckpointError`."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' is not a file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower():
            raise CheckpointError(
                f"'{path}' is not an mtrl checkpoint: it holds Python objects other than "
                "tensors and plain data, and is never unpickled"
            ) from None
        raise CheckpointError(f"'{path}' is corrupted (unreadable pickle data)") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read '{path}': {exc.strerror or exc}") from None
    except Exception:  # torch raises RuntimeError, EOFError, ... for damaged zip files
        raise CheckpointError(
            f"'{path}' is truncated, corrupted or not a PyTorch file (cannot be loaded)"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' is not an mtrl checkpoint (no '{FORMAT}' marker)")
    version = payload.get("version")
    if type(version) is not int or version < 1:
        raise CheckpointError(f"'{path}' has an invalid checkpoint format version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"'{path}' was written by a newer mtrl (checkpoint format {version}; this mtrl reads "
            f"format {FORMAT_VERSION}): upgrade mtrl to load it"
        )
    kind, text, tensors = payload.get("kind"), payload.get("state"), payload.get("tensors")
    if (
        kind not in (KIND_TRAIN, KIND_AGENT)
        or not isinstance(text, str)
        or not isinstance(tensors, dict)
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in tensors.items())
    ):
        raise CheckpointError(f"'{path}' is corrupted (malformed checkpoint structure)")
    if payload.get("checksum") != _checksum(version, kind, text, tensors):
        raise CheckpointError(f"'{path}' is corrupted: its content does not match its checksum")
    try:
        state = _decode(json.loads(text), tensors)
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"'{path}' is corrupted (malformed state)") from None
    return Checkpoint(path, kind, state)


# --------------------------------------------------------------------------------- run folder
def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def step_file(run_dir: Path, step: int) -> Path:
    return checkpoint_dir(run_dir) / f"step-{step:010d}.pt"


def train_checkpoints(run_dir: Path) -> list[Path]:
    """The run's training checkpoints, oldest first."""
    directory = checkpoint_dir(run_dir)
    if not directory.is_dir():
        return []
    found = [(int(m[1]), p) for p in directory.iterdir() if (m := _STEP_FILE.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = train_checkpoints(run_dir)
    return found[-1] if found else None


def _remove_stale_temporaries(directory: Path) -> None:
    """Temporary files of a process killed mid-write (their target was never replaced)."""
    for path in directory.iterdir():
        if _TMP_FILE.match(path.name):
            path.unlink(missing_ok=True)


# --------------------------------------------------------------------------------- the run
class Run(Protocol):
    """What a checkpoint captures from a training run and puts back into a freshly built one.

    :class:`mtrl.train.Trainer` provides it; this module never imports the trainer.
    """

    config: Config
    device: torch.device
    benchmark: Benchmark
    action_dim: int
    task_embeddings: torch.Tensor | None
    agent: MTSAC
    replay: MultiTaskReplay
    envs: gym.vector.VectorEnv
    eval_envs: gym.vector.VectorEnv
    action_rng: np.random.Generator
    logger: RunLogger
    checkpointer: Checkpointer
    step: int
    at_boundary: bool
    eval_envs_state: list[dict[str, Any]] | None
    """The evaluation envs' state (:func:`env_state`) from before the evaluation in progress, or
    None between evaluations: a checkpoint written during an evaluation stores it, so that the
    evaluation runs again on resume from the same start."""

    def loop_state(self) -> dict[str, Any]:
        """The training loop's own state: current observations, unfinished episodes, metrics
        not yet logged, the last evaluation."""
        ...

    def load_loop_state(self, state: dict[str, Any], obs: np.ndarray, restart: bool) -> None:
        """Put back :meth:`loop_state`; ``obs``: the restored envs' observations; ``restart``:
        the envs start new episodes (the checkpoint was taken mid-episode)."""
        ...


# --------------------------------------------------------------------------------- state parts
def agent_networks(agent: MTSAC) -> dict[str, dict[str, torch.Tensor]]:
    return {
        "actor": agent.actor.state_dict(),
        "critic": agent.critic.state_dict(),
        "critic_target": agent.critic_target.state_dict(),
        "temperature": agent.temperature.state_dict(),
    }


def load_agent_networks(agent: MTSAC, networks: dict[str, dict[str, torch.Tensor]]) -> None:
    if is_mtrl_0_1_layout(networks):
        networks = from_mtrl_0_1_layout(networks, agent.num_tasks, agent.action_dim)
    modules = {
        "actor": agent.actor,
        "critic": agent.critic,
        "critic_target": agent.critic_target,
        "temperature": agent.temperature,
    }
    for name, module in modules.items():
        if name not in networks:
            continue  # an agent-only checkpoint may hold just what evaluation needs
        try:
            module.load_state_dict(networks[name])
        except RuntimeError as exc:
            raise CheckpointError(
                f"the checkpoint's {name} does not fit this agent (different networks?): "
                f"{str(exc).splitlines()[0]}"
            ) from None


def is_mtrl_0_1_layout(networks: dict[str, dict[str, torch.Tensor]]) -> bool:
    """Networks saved by mtrl 0.1, before ``mtrl.models``: the actor's layers at its top level."""
    return any(key.startswith("trunk.") for key in networks.get("actor", {}))


def from_mtrl_0_1_layout(
    networks: dict[str, dict[str, torch.Tensor]], num_tasks: int, action_dim: int
) -> dict[str, dict[str, torch.Tensor]]:
    """The same MLP (``mlp``) or MLP with per-task heads (``multihead``) under mtrl.models' names.

    The layers moved under ``model.`` and the heads from ``head.layer`` to ``head`` or ``heads``;
    the Q networks read ``[state, one-hot, action]`` then and ``[state, action, one-hot]`` now,
    so the columns of their first layer are reordered. The functions computed are unchanged.
    """

    def rename(key: str) -> str:
        key = key.replace("trunk.", "model.trunk.", 1)
        key = key.replace("head.layer.linear.", "model.heads.linear.", 1)
        return key.replace("head.layer.", "model.head.", 1)

    def first_layer_columns(weight: torch.Tensor) -> torch.Tensor:
        state = weight.shape[1] - num_tasks - action_dim
        onehot, action = weight[:, state : state + num_tasks], weight[:, state + num_tasks :]
        return torch.cat([weight[:, :state], action, onehot], dim=1)

    upgraded: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensors in networks.items():
        upgraded[name] = {}
        for key, value in tensors.items():
            if name in ("critic", "critic_target") and key.endswith("trunk.layers.0.weight"):
                value = first_layer_columns(value)
            upgraded[name][rename(key) if name != "temperature" else key] = value
    return upgraded


def _agent_state(agent: MTSAC) -> dict[str, Any]:
    state: dict[str, Any] = {
        "networks": agent_networks(agent),
        "optimizers": {name: c.optimizer.state_dict() for name, c in agent.components.items()},
        "generator": agent.generator.get_state(),
        "probe_generator": agent.probe_generator.get_state(),
        "updates": agent.updates,
        "surgery": {name: method.state_dict() for name, method in agent.surgeries.items()},
        "balancer": {name: balancer.state_dict() for name, balancer in agent.balancers.items()},
    }
    return state


def _load_agent_state(agent: MTSAC, state: dict[str, Any]) -> None:
    load_agent_networks(agent, state["networks"])
    for name, component in agent.components.items():
        component.optimizer.load_state_dict(state["optimizers"][name])
    agent.generator.set_state(state["generator"])
    if "probe_generator" in state:  # absent from checkpoints older than surgery.diagnostics_batch
        agent.probe_generator.set_state(state["probe_generator"])
    agent.updates = state["updates"]
    agent.release_graph()  # a captured update would still use the replaced optimizer state
    if set(state["surgery"]) != set(agent.surgeries):
        raise CheckpointError("the checkpoint's gradient-surgery state does not fit this agent")
    for name, method in agent.surgeries.items():
        try:
            method.load_state_dict(state["surgery"][name])
        except ValueError as exc:
            raise CheckpointError(f"gradient-surgery state of the {name}: {exc}") from None
    balancers = state.get("balancer", {})  # absent from checkpoints older than the balancers
    if set(balancers) != set(agent.balancers):
        raise CheckpointError("the checkpoint's loss-balancer state does not fit this agent")
    for name, balancer in agent.balancers.items():
        try:
            balancer.load_state_dict(balancers[name])
        except ValueError as exc:
            raise CheckpointError(f"loss-balancer state of the {name}: {exc}") from None


def _onehot_columns(replay: MultiTaskReplay) -> torch.Tensor:
    """Replay columns holding the task one-hot (the last K entries of obs and of next obs)."""
    obs_dim, action_dim = replay._widths[0], replay._widths[1]
    k = replay.num_tasks
    next_obs_start = obs_dim + action_dim + 1
    next_obs_end = next_obs_start + obs_dim
    columns = [*range(obs_dim - k, obs_dim), *range(next_obs_end - k, next_obs_end)]
    return torch.tensor(columns, device=replay.device)


def _onehot_values(replay: MultiTaskReplay, size: int) -> torch.Tensor:
    """What the one-hot columns of ``size`` rows per task hold: ``[K, size, 2K]``."""
    eye = torch.eye(replay.num_tasks, device=replay.device)
    return eye.repeat(1, 2)[:, None, :].expand(-1, size, -1)


def _replay_state(replay: MultiTaskReplay) -> dict[str, Any]:
    """The filled rows only, and without the one-hot columns when they hold exactly the task's
    one-hot (always, for Meta-World observations): they are rebuilt on load, bit for bit."""
    rows = replay.data[:, : replay.size]
    onehot = _onehot_columns(replay)
    keep = torch.ones(rows.shape[-1], dtype=torch.bool, device=replay.device)
    keep[onehot] = False
    compact = torch.equal(rows[..., onehot], _onehot_values(replay, replay.size))
    return {
        "capacity": replay.capacity,
        "width": replay.data.shape[-1],
        "position": replay.position,
        "size": replay.size,
        "onehot_dropped": compact,
        "rows": rows[..., keep] if compact else rows,
        "generator": replay.generator.get_state(),
    }


def _load_replay_state(replay: MultiTaskReplay, state: dict[str, Any]) -> None:
    if state["capacity"] != replay.capacity or state["width"] != replay.data.shape[-1]:
        raise CheckpointError("the checkpoint's replay does not fit this run's replay buffer")
    size = state["size"]
    replay.data.zero_()
    rows = state["rows"].to(replay.device)
    if state["onehot_dropped"]:
        onehot = _onehot_columns(replay)
        keep = torch.ones(replay.data.shape[-1], dtype=torch.bool, device=replay.device)
        keep[onehot] = False
        full = torch.zeros((replay.num_tasks, size, replay.data.shape[-1]), device=replay.device)
        full[..., keep] = rows
        full[..., onehot] = _onehot_values(replay, size)
        rows = full
    replay.data[:, :size] = rows
    replay.position, replay.size = state["position"], size
    replay.generator.set_state(state["generator"])


def _task_digest(serialized_tasks: list[dict[str, str]]) -> str:
    return hashlib.sha256(json.dumps(serialized_tasks, sort_keys=True).encode()).hexdigest()


def env_state(envs: gym.vector.VectorEnv) -> list[dict[str, Any]]:
    """Per env: Meta-World's checkpoint (goal-sampling and env RNG states, task-sampling switch),
    a digest of its task list, and the index of the task it is on now.

    The tasks themselves are not stored: they are pickles, and a checkpoint is never unpickled.
    The same seed rebuilds them; the digest proves it on load.
    """
    saved = []
    tasks = envs.get_attr("tasks")
    current = envs.get_attr("_last_rand_vec")
    for (env_id, ckpt), env_tasks, rand_vec in zip(
        envs.call("get_checkpoint"), tasks, current, strict=True
    ):
        # Meta-World's own in-memory task data, not the checkpoint's: safe to unpickle.
        index = next(
            (
                i
                for i, task in enumerate(env_tasks)
                if np.array_equal(pickle.loads(task.data)["rand_vec"], rand_vec)
            ),
            None,
        )
        saved.append(
            {
                "id": env_id,
                "tasks_sha256": _task_digest(ckpt["tasks"]),
                "task": index,
                "rng_state": ckpt["rng_state"],
                "env_rng_state": ckpt["env_rng_state"],
                "sample_tasks_on_reset": ckpt["sample_tasks_on_reset"],
            }
        )
    return saved


_env_state = env_state  # the name of mtrl 0.3.0


def _restore_envs(envs: gym.vector.VectorEnv, saved: list[dict[str, Any]]) -> np.ndarray:
    """Put every env on its saved task, reset it, then load its saved RNG states.

    Returns the observations of that reset: the state the envs were in right after the
    episode boundary at which the checkpoint was written.
    """
    fresh = list(envs.call("get_checkpoint"))
    if [env_id for env_id, _ in fresh] != [s["id"] for s in saved] or any(
        _task_digest(ckpt["tasks"]) != s["tasks_sha256"]
        for (_, ckpt), s in zip(fresh, saved, strict=True)
    ):
        raise CheckpointError(
            "the checkpoint's environments differ from the ones built now "
            "(another benchmark, seed or Meta-World version?)"
        )
    pinned = [
        (
            env_id,
            {
                **ckpt,
                "tasks": ckpt["tasks"] if s["task"] is None else [ckpt["tasks"][s["task"]]],
                "sample_tasks_on_reset": True,
            },
        )
        for (env_id, ckpt), s in zip(fresh, saved, strict=True)
    ]
    envs.call("load_checkpoint", pinned)
    obs, _ = envs.reset()
    restored = [
        (
            env_id,
            {
                **ckpt,
                "rng_state": s["rng_state"],
                "env_rng_state": s["env_rng_state"],
                "sample_tasks_on_reset": s["sample_tasks_on_reset"],
            },
        )
        for (env_id, ckpt), s in zip(fresh, saved, strict=True)
    ]
    envs.call("load_checkpoint", restored)
    return obs


def _rng_state(run: Run) -> dict[str, Any]:
    """The warm-up actions' stream (the agent's, the replay's and the surgery methods' travel
    with their owners). The global random states of Python, NumPy and torch (CPU and CUDA) are
    not saved: they only seed the initialisation of the networks, which a resume overwrites, and
    nothing draws from them after a run is built (every consumer has its own stream, see
    :mod:`mtrl.seeding`; ``test_training_never_draws_from_the_global_random_states`` checks it).
    Checkpoints of mtrl 0.2.0 and earlier hold them too; they are ignored."""
    return {"action": run.action_rng.bit_generator.state}


def _load_rng_state(run: Run, state: dict[str, Any]) -> None:
    run.action_rng.bit_generator.state = state["action"]


# --------------------------------------------------------------------------------- writer
class Checkpointer:
    """Writes a run's checkpoints and keeps the last ``keep_last`` plus the best agent.

    ``checkpoints/step-<N>.pt`` are training checkpoints (resumable), written every
    ``every`` env steps at the next episode boundary, at the end, and on preemption.
    ``checkpoints/best.pt`` is the agent of the evaluation with the highest mean success so far
    (networks only, for mtrl-eval); every training checkpoint carries a copy, so that a resume
    can put back the best of the history it continues.
    """

    def __init__(self, run_dir: Path, config: CheckpointConfig):
        self.run_dir = Path(run_dir)
        self.config = config
        self.last_step = 0
        self.best: dict[str, Any] | None = None

    def due(self, step: int, at_boundary: bool) -> bool:
        every = self.config.every
        return every > 0 and at_boundary and step // every > self.last_step // every

    def path(self, step: int) -> Path:
        return step_file(self.run_dir, step)

    def save(self, run: Run, finished: bool = False) -> Path:
        self.last_step = run.step
        path = save_checkpoint(
            step_file(self.run_dir, run.step), KIND_TRAIN, _train_state(run, finished)
        )
        self._prune()
        return path

    def _prune(self) -> None:
        for old in train_checkpoints(self.run_dir)[: -self.config.keep_last]:
            old.unlink(missing_ok=True)
        _remove_stale_temporaries(checkpoint_dir(self.run_dir))
        _fsync_dir(checkpoint_dir(self.run_dir))

    def on_evaluation(self, run: Run, result: EvalResult) -> None:
        if not self.config.keep_best:
            return
        if self.best is not None and result.mean_success <= self.best["success"]:
            return
        networks = {
            name: {k: v.detach().clone() for k, v in params.items()}
            for name, params in agent_networks(run.agent).items()
        }
        self.best = {
            "success": result.mean_success,
            "step": run.step,
            "eval": result.metrics(),
            "networks": networks,
        }
        self._write_best(run)

    def _write_best(self, run: Run) -> None:
        assert self.best is not None
        state = {
            **_description(run),
            "step": self.best["step"],
            "eval": self.best["eval"],
            "agent": {"networks": self.best["networks"]},
        }
        save_checkpoint(checkpoint_dir(self.run_dir) / BEST_FILE, KIND_AGENT, state)

    def state(self) -> dict[str, Any]:
        return {"last_step": self.last_step, "best": self.best}

    def load_state(self, run: Run, state: dict[str, Any]) -> None:
        self.last_step = state["last_step"]
        self.best = state["best"] if self.config.keep_best else None
        if self.best is None:
            return
        # best.pt may be newer than this checkpoint (written by the run that was killed), or
        # missing: put back the best of the history being continued.
        best_path = checkpoint_dir(self.run_dir) / BEST_FILE
        try:
            current = load_checkpoint(best_path)
            if current.step == self.best["step"] and current.state["eval"] == self.best["eval"]:
                return
        except CheckpointError:
            pass
        self._write_best(run)


def _description(run: Run) -> dict[str, Any]:
    """What identifies a checkpoint's experiment and agent layout (with the fixed task
    embeddings the networks were built with, so that evaluation and resume need no file)."""
    from mtrl import __version__
    from mtrl.rundir import git_commit

    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mtrl_version": __version__,
        "git_commit": git_commit(),
        "config": to_yaml(run.config),
        "device": run.device.type,
        "benchmark": run.benchmark.name,
        "task_names": list(run.benchmark.task_names),
        "obs_dim": int(run.envs.single_observation_space.shape[0]),
        "action_dim": int(run.action_dim),
        "task_embeddings": run.task_embeddings,
    }


def _train_state(run: Run, finished: bool) -> dict[str, Any]:
    return {
        **_description(run),
        "step": run.step,
        "finished": finished,
        "episode_boundary": run.at_boundary,
        "trainer": run.loop_state(),
        "agent": _agent_state(run.agent),
        "replay": _replay_state(run.replay),
        "rng": _rng_state(run),
        "envs": {
            "train": env_state(run.envs),
            "eval": env_state(run.eval_envs)
            if run.eval_envs_state is None
            else run.eval_envs_state,
        },
        "logger": {"metrics_bytes": run.logger.position()},
        "checkpointer": run.checkpointer.state(),
    }


def restore_run(run: Run, checkpoint: Checkpoint) -> None:
    """Load a training checkpoint into a freshly built run of the same config."""
    state = checkpoint.state
    if (
        state["task_names"] != list(run.benchmark.task_names)
        or state["obs_dim"] != run.envs.single_observation_space.shape[0]
        or state["action_dim"] != run.action_dim
    ):
        raise CheckpointError(f"'{checkpoint.path}' belongs to another benchmark")
    _load_agent_state(run.agent, state["agent"])
    _load_replay_state(run.replay, state["replay"])
    run.step = state["step"]

    obs = _restore_envs(run.envs, state["envs"]["train"])
    _restore_envs(run.eval_envs, state["envs"]["eval"])
    restart = not state["episode_boundary"]
    if restart:
        # Checkpointed mid-episode (preemption): the physics cannot be restored, so the
        # unfinished episodes are dropped and new ones start from the saved RNG states.
        obs, _ = run.envs.reset()
    elif not np.array_equal(obs, state["trainer"]["obs"]):
        warnings.warn(
            "the environments could not be put back exactly into their checkpointed state; "
            "the resumed run continues from fresh episodes",
            RuntimeWarning,
            stacklevel=2,
        )
    run.load_loop_state(state["trainer"], obs, restart)
    _load_rng_state(run, state["rng"])
    run.checkpointer.load_state(run, state["checkpointer"])


# --------------------------------------------------------------------------------- resume
def prepare_resume(run_dir: Path, overrides: list[str]) -> tuple[Config, Checkpoint]:
    """The config and the verified latest checkpoint to continue ``run_dir`` with.

    Reads only: a ConfigError or CheckpointError here means nothing was modified.
    """
    from mtrl.rundir import CONFIG_FILE

    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ConfigError(f"--resume '{run_dir}' does not exist")
    if not run_dir.is_dir():
        raise ConfigError(f"--resume '{run_dir}' is not a folder")
    config_file = run_dir / CONFIG_FILE
    if not config_file.is_file():
        raise ConfigError(f"--resume '{run_dir}' is not an mtrl run folder (no {CONFIG_FILE})")
    try:
        stored = load_config(str(config_file))
        requested = load_config(str(config_file), overrides)
    except ConfigError as exc:
        raise ConfigError(f"--resume '{run_dir}': {exc}") from None
    changes = experiment_differences(stored, requested)
    if changes:
        raise ConfigError(
            f"--resume: {changes[0]} would change the experiment; a resumed run keeps its "
            f"config, only {', '.join(RESUME_MUTABLE_KEYS)} may change"
        )
    path = latest_checkpoint(run_dir)
    if path is None:
        raise CheckpointError(
            f"run '{run_dir}' has no checkpoint to resume from (none in {checkpoint_dir(run_dir)})"
        )
    checkpoint = load_checkpoint(path)
    check_resumable(run_dir, checkpoint, requested)
    device = resolve_device(requested.train.device)
    if device.type != checkpoint.state["device"]:
        raise ConfigError(
            f"'{path}' was written on {checkpoint.state['device']}; resume it on "
            f"{checkpoint.state['device']} too (train.device), the random streams differ "
            f"on {device.type}"
        )
    return requested, checkpoint


def check_resumable(run_dir: Path, checkpoint: Checkpoint, config: Config) -> None:
    """Everything that must hold before a resume touches the run folder."""
    if checkpoint.kind != KIND_TRAIN:
        raise CheckpointError(f"'{checkpoint.path}' holds an agent only; it cannot be resumed")
    if is_mtrl_0_1_layout(checkpoint.state["agent"]["networks"]):
        raise CheckpointError(
            f"'{checkpoint.path}' was written by mtrl {checkpoint.state.get('mtrl_version')}, "
            "whose training state (networks, optimizers, random streams) this mtrl cannot "
            "continue; mtrl-eval still evaluates its agent"
        )
    if experiment_differences(checkpoint.config, config):
        raise CheckpointError(
            f"'{checkpoint.path}' belongs to a different experiment than "
            f"'{Path(run_dir) / 'config.yaml'}'"
        )
    if checkpoint.state["finished"]:
        raise CheckpointError(
            f"run '{run_dir}' is already complete (step {checkpoint.step}); nothing to resume"
        )
    from mtrl.logger import METRICS_FILE

    metrics = Path(run_dir) / METRICS_FILE
    recorded = checkpoint.state["logger"]["metrics_bytes"]
    size = metrics.stat().st_size if metrics.exists() else 0
    if size < recorded:
        raise CheckpointError(
            f"'{metrics}' is shorter than when '{checkpoint.path.name}' was written "
            f"({size} < {recorded} bytes): the run folder was modified"
        )


def experiment_differences(stored: Config, requested: Config) -> list[str]:
    """``key=requested (the run has stored)`` for every value outside RESUME_MUTABLE_KEYS."""
    return [
        f"{key}={new} (the run has {old})"
        for key, (old, new) in changed_keys(stored, requested).items()
        if key not in RESUME_MUTABLE_KEYS
    ]


# --------------------------------------------------------------------------------- preemption
class Preempted(Exception):
    """The run stopped on a preemption signal after writing a checkpoint."""

    def __init__(self, signal_name: str, step: int, path: Path, run_dir: Path):
        super().__init__(
            f"stopped by {signal_name} at step {step}; checkpoint '{path}' written; "
            f"continue with: mtrl-train --resume {run_dir}"
        )
        self.signal_name, self.step, self.path = signal_name, step, path


class PreemptionSignals:
    """Records SIGTERM / SIGUSR1 instead of dying, so the loop can checkpoint and exit.

    The handler only records the first signal: a second one, or one that arrives while a
    checkpoint is written, changes nothing (the write goes on; Python retries the system call it
    interrupted). The trainer polls :attr:`received` between two updates and between two steps
    of an evaluation."""

    NAMES = ("SIGTERM", "SIGUSR1")

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # Only record it: printing here could re-enter a write to stderr (the progress bar).
        if self.received is None:
            self.received = signal.Signals(signum).name

    @property
    def installed(self) -> bool:
        return bool(self._previous)

    def install(self) -> PreemptionSignals:
        """Install the handlers (once: installing again changes nothing)."""
        if not self.installed and threading.current_thread() is threading.main_thread():
            for name in self.NAMES:
                if hasattr(signal, name):
                    number = getattr(signal, name)
                    self._previous[number] = signal.signal(number, self._handle)
        return self

    def uninstall(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()
