"""Where and when the trainer steps its K envs (``train.collector``).

One training iteration chooses the actions of vector step t from the observations, steps the K
envs, stores the K transitions and runs the update(s) due. The three collectors schedule it:

``serial`` (the reference)
    act -> step the envs -> store transition t -> update (it learns from transition t).
``overlap``
    act -> hand the actions to the env worker processes -> update while they step -> store.
    The update cannot include transition t, which is still being collected; so the action of
    step t+1 comes from the policy *before* the update that learns from step t: a fixed
    one-update policy lag. The workers step the envs while the learner updates, so an
    iteration costs about max(env step, update) instead of their sum on a multi-core node.
``serial_lagged``
    the same schedule as ``overlap`` with the envs stepped in this process: the reference the
    overlapped collector is tested against, bit for bit (same random draws in the same order).

Why the lag does not change the algorithm materially: SAC is off-policy. Its replay holds the
transitions of many past policies (up to a million per run), and the behaviour policy one
update (one Adam step at lr 3e-4) older than the current one differs far less from it than the
replay's oldest data do; every update still samples the same kind of balanced batch, only
without the newest K transitions for that one update. Asynchronous actor-learner setups for
off-policy learners (Ape-X) act with parameters many updates old. Its visible effects: updates
start one vector step later (once the replay holds ``train.warmup_steps`` transitions before
the step), so a lagged run makes one update fewer in total, and its numbers are not those of a
``serial`` run with the same seed.

Exact resume: in every schedule nothing is in flight at the end of an iteration (the workers
have answered), which is where checkpoints are written; the env state capture and restore of
:mod:`mtrl.checkpoint` reach the worker envs through ``call``/``get_attr``/``reset``.
"""

from __future__ import annotations

import atexit
import itertools
import multiprocessing as mp
import os
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, fields, replace
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from mtrl.config import Config
from mtrl.envs import Benchmark, make_envs, rebuild_envs

REPLY_TIMEOUT_S = 300.0
"""A worker that does not answer a request within this time is taken as hung (a vector step
takes milliseconds; building MT50's envs seconds)."""

_OK, _FAILED = "ok", "failed"


@dataclass(frozen=True)
class StepResult:
    """One vector step, one row per env, as the trainer stores it."""

    next_obs: np.ndarray
    """What the policy sees next: where an episode ended, the first observation of the next."""
    final_obs: np.ndarray
    """The transition's next observation: where an episode ended, its last observation."""
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    success: np.ndarray
    """``info["success"]`` of this step (of the ended episode's last step where one ended)."""

    @staticmethod
    def concatenate(parts: Sequence[StepResult]) -> StepResult:
        """The results of consecutive slices of the envs as one."""
        return StepResult(
            **{
                f.name: np.concatenate([getattr(p, f.name) for p in parts])
                for f in fields(StepResult)
            }
        )


def step_envs(envs: gym.vector.VectorEnv, actions: np.ndarray) -> StepResult:
    """Step a vector env (same-step autoreset) and pick out what the trainer stores."""
    next_obs, reward, terminated, truncated, info = envs.step(actions)
    done = terminated | truncated
    final_obs = next_obs
    success = np.asarray(info.get("success", np.zeros(len(done))), dtype=float)
    if done.any():
        final_obs = next_obs.copy()
        for i in np.flatnonzero(done):
            final_obs[i] = info["final_obs"][i]
        success = np.where(done, np.asarray(info["final_info"]["success"], dtype=float), success)
    return StepResult(next_obs, final_obs, reward, terminated, truncated, success)


class TrainEnvs(Protocol):
    """The trainer's envs: what the training loop and :mod:`mtrl.checkpoint` use of them."""

    num_envs: int
    single_observation_space: gym.Space
    single_action_space: gym.Space

    def step_async(self, actions: np.ndarray) -> None: ...

    def step_wait(self) -> StepResult: ...

    def reset(self) -> tuple[np.ndarray, dict[str, Any]]: ...

    def call(self, name: str, *args: Any) -> tuple[Any, ...]: ...

    def get_attr(self, name: str) -> tuple[Any, ...]: ...

    def close(self) -> None: ...


def make_train_envs(benchmark: Benchmark, config: Config) -> TrainEnvs:
    """The training envs of ``config.train.collector``: in this process or in worker processes."""
    if config.train.collector != "overlap":
        return LocalEnvs(make_envs(benchmark, config.env, config.train.seed))
    # Built here only for Meta-World's goal generation (seconds); the workers receive the
    # per-task constructors and build their envs themselves.
    template = make_envs(benchmark, replace(config.env, vector_strategy="sync"), config.train.seed)
    template.close()
    workers = config.train.env_workers or default_env_workers(benchmark.num_tasks)
    return EnvWorkers(template.env_fns, config.env.goal_mode, workers)


def default_env_workers(num_tasks: int) -> int:
    """One available CPU core stays with the learner, each other one steps envs: at least one
    worker, at most one per task."""
    try:
        cores = len(os.sched_getaffinity(0))  # the cores this process may use (cgroups, SLURM)
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(num_tasks, cores - 1))


class LocalEnvs(gym.vector.VectorWrapper):
    """The envs stepped in this process (collectors ``serial`` and ``serial_lagged``)."""

    def step_async(self, actions: np.ndarray) -> None:
        self._result = step_envs(self.env, actions)

    def step_wait(self) -> StepResult:
        return self._result

    def call(self, name: str, *args: Any) -> tuple[Any, ...]:
        return self.env.call(name, *args)

    def get_attr(self, name: str) -> tuple[Any, ...]:
        return self.env.get_attr(name)


class EnvWorkerError(RuntimeError):
    """An env worker process died, failed or stopped answering; the run cannot go on."""


@dataclass
class _Worker:
    index: int
    tasks: range
    process: BaseProcess
    conn: Connection

    def __str__(self) -> str:
        last = self.tasks.stop - 1
        tasks = f"task {last}" if len(self.tasks) == 1 else f"tasks {self.tasks.start}-{last}"
        return f"env worker {self.index} (pid {self.process.pid}, {tasks})"


class EnvWorkers:
    """The K envs stepped by N worker processes, each owning a contiguous slice of the tasks.

    Each worker builds its slice with :func:`mtrl.envs.rebuild_envs` from the constructors of a
    :func:`mtrl.envs.make_envs` vector env, so the envs, their seeds and their episodes are
    those of the serial collector. It offers what the trainer and the checkpoint code use of a
    vector env (``reset``, ``call``, ``get_attr``, the spaces) and ``step_async`` /
    ``step_wait``, whose results are concatenated in task order.

    Failure handling: every reply is awaited together with the worker's liveness, so a worker
    that dies raises :class:`EnvWorkerError` at once, and one that does not answer within
    ``timeout_s`` raises it too; never a hang. Workers ignore SIGINT, SIGTERM and SIGUSR1 (the
    trainer handles those and then closes them) and leave as soon as the trainer's end of
    their pipe closes, so they never outlive the trainer, even one killed by SIGKILL.
    """

    def __init__(
        self,
        env_fns: Sequence[Callable[[], gym.Env]],
        goal_mode: str,
        num_workers: int,
        timeout_s: float = REPLY_TIMEOUT_S,
    ):
        if not 1 <= num_workers <= len(env_fns):
            raise ValueError(f"num_workers must be in [1, {len(env_fns)}], got {num_workers}")
        self.num_envs = len(env_fns)
        self.timeout_s = timeout_s
        # spawn: a worker starts from a fresh interpreter, not a copy of the learner (its
        # threads, its replay buffer, its CUDA context), on every platform alike.
        context = mp.get_context("spawn")
        self._workers: list[_Worker] = []
        # Before multiprocessing's own exit handler (atexit runs last in, first out), which
        # would wait forever for workers that ignore its SIGTERM and still have an open pipe.
        atexit.register(self.close)
        try:
            for index, tasks in enumerate(_split(self.num_envs, num_workers)):
                conn, child = context.Pipe()
                process = context.Process(
                    target=_serve,
                    args=(child, goal_mode),
                    name=f"mtrl-env-worker-{index}",
                    daemon=True,
                )
                process.start()
                child.close()  # the worker's end lives in the worker only: EOF when it dies
                self._workers.append(_Worker(index, tasks, process, conn))
            # The constructors (Meta-World's goals: ~16 kB per task) go through the pipe, not
            # through start(): a worker that dies while it starts (e.g. a main module that
            # starts workers again when imported) is then an error, not a blocked start().
            for w in self._workers:
                self._send(w, [env_fns[i] for i in w.tasks])
            spaces = self._gather()
        except BaseException:
            self.close()
            raise
        self.single_observation_space, self.single_action_space = spaces[0]

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    def step_async(self, actions: np.ndarray) -> None:
        for w in self._workers:
            self._send(w, "step", actions[w.tasks.start : w.tasks.stop])

    def step_wait(self) -> StepResult:
        return StepResult.concatenate(self._gather())

    def reset(self) -> tuple[np.ndarray, dict[str, Any]]:
        self._broadcast("reset")
        return np.concatenate(self._gather()), {}

    def call(self, name: str, *args: Any) -> tuple[Any, ...]:
        """``name(*args)`` on every env, like a gymnasium vector env's ``call``."""
        self._broadcast("call", name, args)
        return tuple(value for part in self._gather() for value in part)

    def get_attr(self, name: str) -> tuple[Any, ...]:
        self._broadcast("get_attr", name)
        return tuple(value for part in self._gather() for value in part)

    def close(self, grace_s: float = 5.0) -> None:
        """Close the pipes (a worker leaves at the end of its request); kill a worker that has
        not left after ``grace_s``."""
        for w in self._workers:
            w.conn.close()
        deadline = time.monotonic() + grace_s
        for w in self._workers:
            w.process.join(max(0.0, deadline - time.monotonic()))
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
        self._workers = []
        atexit.unregister(self.close)

    # ----------------------------------------------------------------------------- messages
    def _broadcast(self, command: str, *args: Any) -> None:
        for w in self._workers:
            self._send(w, command, *args)

    def _send(self, w: _Worker, *message: Any) -> None:
        try:
            w.conn.send(message)
        except OSError:  # BrokenPipeError, ConnectionResetError: the worker is gone
            raise _died(w) from None

    def _gather(self) -> list[Any]:
        return [self._receive(w) for w in self._workers]

    def _receive(self, w: _Worker) -> Any:
        ready = wait([w.conn, w.process.sentinel], self.timeout_s)
        if not ready:
            raise EnvWorkerError(f"{w} did not answer within {self.timeout_s:g} s")
        if w.conn not in ready:
            raise _died(w)
        try:
            status, payload = w.conn.recv()
        except (EOFError, OSError):  # the pipe closed: the worker is gone
            raise _died(w) from None
        if status == _FAILED:
            raise EnvWorkerError(f"{w} failed: {payload}")
        return payload


def _died(w: _Worker) -> EnvWorkerError:
    w.process.join(1.0)
    code = w.process.exitcode
    if code is None:
        how = "closed its pipe"
    elif code < 0:
        how = f"was killed by {_signal_name(-code)}"
    else:
        how = f"exited with status {code}"
    return EnvWorkerError(f"{w} {how}")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _split(n: int, parts: int) -> list[range]:
    """``range(n)`` in ``parts`` contiguous slices whose sizes differ by at most one."""
    size, extra = divmod(n, parts)
    bounds = [i * size + min(i, extra) for i in range(parts + 1)]
    return [range(a, b) for a, b in itertools.pairwise(bounds)]


# ------------------------------------------------------------------------------- worker process
_COMMANDS: dict[str, Callable[..., Any]] = {
    "step": step_envs,
    "reset": lambda envs: envs.reset()[0],
    "call": lambda envs, name, args: envs.call(name, *args),
    "get_attr": lambda envs, name: envs.get_attr(name),
}


def _serve(conn: Connection, goal_mode: str) -> None:
    """A worker: receive its envs' constructors and build them, then answer requests until the
    trainer's end of the pipe closes (a normal close, or the trainer is gone)."""
    for name in ("SIGINT", "SIGTERM", "SIGUSR1"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    envs = None
    try:
        (env_fns,) = conn.recv()
        envs = rebuild_envs(env_fns, goal_mode)
        conn.send((_OK, (envs.single_observation_space, envs.single_action_space)))
        while True:
            command, *args = conn.recv()
            conn.send((_OK, _COMMANDS[command](envs, *args)))
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the trainer closed the pipe or is gone
    except Exception as exc:
        traceback.print_exc()  # a bug in an env: the details go to stderr, the trainer stops
        with suppress(OSError):
            conn.send((_FAILED, f"{type(exc).__name__}: {exc}"))
    finally:
        if envs is not None:
            envs.close()
        conn.close()
