"""The training loop: env -> per-task replay -> MT-SAC update -> logs and evaluations.

Its schedule: ``train.warmup_steps`` of random actions, then ``train.updates_per_step`` updates
per vector step (the first update step runs ``train.warmup_updates`` instead, if set:
[updates_due][mtrl.train.updates_due]), and evaluations at the steps
[evaluation_steps][mtrl.train.evaluation_steps] lists.

Preemption: after SIGTERM or SIGUSR1 the loop stops at the next of these points, writes a
checkpoint and raises :class:`mtrl.checkpoint.Preempted`: between two updates (also inside the
warm-up burst; the updates still due are in the checkpoint), between two vector steps of an
evaluation (the evaluation runs again, whole, on resume), or after the vector step.
"""

from __future__ import annotations

import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict
from itertools import combinations
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from tqdm import tqdm

from mtrl.agent import MTSAC
from mtrl.checkpoint import (
    Checkpoint,
    Checkpointer,
    Preempted,
    PreemptionSignals,
    WriteFailed,
    env_state,
    restore_run,
)
from mtrl.collector import StepResult, make_train_envs
from mtrl.config import Config, TrainConfig, check_task_multiples
from mtrl.device import resolve_device
from mtrl.envs import make_envs, parse_benchmark
from mtrl.evaluation import EvalResult, EvaluationStopped, evaluate
from mtrl.logger import RunLogger
from mtrl.models import load_task_embeddings
from mtrl.replay import Batch, MultiTaskReplay
from mtrl.rundir import protocol
from mtrl.seeding import stream_seed

COMPILE_PAYS_AFTER = 10_000
"""Updates from which ``train.compile=auto`` compiles on a CPU. Compiling costs 5-30 s once per
process (tens of seconds with a cold cache) and saves 2-12 ms per update on the CPU presets
(``scripts/bench_train.py``): it pays within a few thousand updates, not in a short test run."""


def compile_mode(train: TrainConfig, device: torch.device, num_tasks: int) -> str:
    """What ``train.compile`` means for this run on ``device``: ``auto`` is ``inductor`` on a
    CPU for a run of at least ``COMPILE_PAYS_AFTER`` updates, ``none`` otherwise (and, with a
    note, where no C++ compiler is found: inductor builds C++ on a CPU); ``cudagraph`` off CUDA
    runs the updates eagerly (the same computation), with a note on stderr, so that one config
    serves GPU and CPU machines."""
    if train.compile == "auto":
        pays = planned_updates(train, num_tasks) >= COMPILE_PAYS_AFTER
        if device.type != "cpu" or not pays:
            return "none"
        if not any(shutil.which(cxx) for cxx in (os.environ.get("CXX", "g++"), "c++", "clang++")):
            print("note: no C++ compiler found; the updates run eagerly", file=sys.stderr)
            return "none"
        return "inductor"
    if train.compile == "cudagraph" and device.type != "cuda":
        note = f"note: train.compile=cudagraph needs CUDA; the updates run eagerly on {device}"
        print(note, file=sys.stderr)
        return "none"
    return train.compile


def planned_updates(train: TrainConfig, num_tasks: int) -> int:
    """About the updates a run makes (``updates_due`` at each vector step after the warm-up)."""
    update_steps = max(train.total_steps - max(train.warmup_steps, num_tasks), 0) // num_tasks + 1
    first = train.warmup_updates or train.updates_per_step
    return first + (update_steps - 1) * train.updates_per_step


class EpisodeStats:
    """Returns and any-step success of the training episodes that ended since the last read."""

    def __init__(self, num_envs: int):
        self.running_return = np.zeros(num_envs)
        self.running_success = np.zeros(num_envs, dtype=bool)
        self.returns: list[float] = []
        self.successes: list[bool] = []

    def record(self, reward: np.ndarray, success: np.ndarray, done: np.ndarray) -> None:
        self.running_return += reward
        self.running_success |= success.astype(bool)
        for i in np.flatnonzero(done):
            self.returns.append(float(self.running_return[i]))
            self.successes.append(bool(self.running_success[i]))
        self.running_return[done] = 0.0
        self.running_success[done] = False

    def drop_unfinished(self) -> None:
        """Forget the episodes in progress (the envs start new ones)."""
        self.running_return[:] = 0.0
        self.running_success[:] = False

    def state_dict(self) -> dict[str, object]:
        return {
            "running_return": self.running_return.copy(),
            "running_success": self.running_success.copy(),
            "returns": list(self.returns),
            "successes": list(self.successes),
        }

    def load_state_dict(self, state: dict) -> None:
        self.running_return = np.array(state["running_return"], dtype=float)
        self.running_success = np.array(state["running_success"], dtype=bool)
        self.returns = list(state["returns"])
        self.successes = list(state["successes"])

    def pop(self) -> dict[str, float]:
        if not self.returns:
            return {}
        out = {
            "train/episode_return": float(np.mean(self.returns)),
            "train/episode_success": float(np.mean(self.successes)),
        }
        self.returns.clear()
        self.successes.clear()
        return out


class IntervalMetrics:
    """Update metrics summed on the device between log lines: no host sync per update.

    Keys may come and go (surgery diagnostics arrive every N updates), so each has its count.
    """

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, metrics: dict[str, torch.Tensor]) -> None:
        for key, value in metrics.items():
            value = value.detach()
            self.sums[key] = self.sums[key] + value if key in self.sums else value.clone()
            self.counts[key] = self.counts.get(key, 0) + 1

    def pop_means(self) -> dict[str, torch.Tensor]:
        """Interval means on the host; the accumulator starts over."""
        means = {key: (total / self.counts[key]).cpu() for key, total in self.sums.items()}
        self.sums, self.counts = {}, {}
        return means

    def state_dict(self) -> dict[str, object]:
        return {"sums": dict(self.sums), "counts": dict(self.counts)}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        self.sums = {key: value.to(device) for key, value in state["sums"].items()}
        self.counts = dict(state["counts"])


class Trainer:
    """Owns the envs, the agent and the replay of one run and steps them in lockstep.

    ``resume``: a verified training checkpoint of this run to continue from (see
    :mod:`mtrl.checkpoint`); the trainer is built as for a new run, then loaded.
    """

    def __init__(
        self,
        config: Config,
        run_dir: Path,
        progress: bool = True,
        resume: Checkpoint | None = None,
        signals: PreemptionSignals | None = None,
    ):
        """``signals``: handlers the caller installed before building the trainer (the CLI
        does, so a signal while the envs are built is not a death); :meth:`run` answers a
        signal they recorded before it started with a checkpoint at once."""
        self.config = config
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.benchmark = parse_benchmark(config.env.benchmark)
        self.num_tasks = self.benchmark.num_tasks
        check_task_multiples(config, self.num_tasks)
        train = config.train
        torch.set_num_threads(train.threads)
        self.device = resolve_device(train.device)
        # Each consumer of randomness draws from its own stream (mtrl.seeding); the envs follow
        # Meta-World's seeding with the run seed itself, so that the seed selects the same goals
        # as in other Meta-World code.
        random.seed(stream_seed(train.seed, "python"))
        np.random.seed(stream_seed(train.seed, "numpy") % 2**32)
        torch.manual_seed(stream_seed(train.seed, "torch.init"))

        self.envs = make_train_envs(self.benchmark, config)
        self.lagged = train.collector != "serial"
        """Overlap and serial_lagged update while the envs step (see :mod:`mtrl.collector`)."""
        # Same seed, hence the same 50 goals per task (and in fixed mode the same goal).
        self.eval_envs = make_envs(self.benchmark, config.env, train.seed)
        obs_dim = self.envs.single_observation_space.shape[0]
        self.action_dim = self.envs.single_action_space.shape[0]
        self.task_embeddings = self._task_embeddings(resume)
        mode = compile_mode(train, self.device, self.num_tasks)
        self.agent = MTSAC(
            obs_dim,
            self.action_dim,
            self.num_tasks,
            config.agent,
            self.device,
            train.seed,
            config.surgery,
            config.balancer,
            self.task_embeddings,
            cuda_graph=mode == "cudagraph",
            compiled=mode == "inductor",
        )
        self.replay = MultiTaskReplay(
            self.num_tasks,
            train.buffer_size // self.num_tasks,
            obs_dim,
            self.action_dim,
            self.device,
            stream_seed(train.seed, "replay.sampling"),
        )
        self.sample = self._sampler()
        self.action_rng = np.random.default_rng(stream_seed(train.seed, "warmup.actions"))
        self.checkpointer = Checkpointer(self.run_dir, config.checkpoint)
        self.episodes = EpisodeStats(self.num_tasks)
        self.step = 0
        self.last_success: float | None = None
        self.final_result: EvalResult | None = None
        """The evaluation marked final, once it happened (with ``train.eval_final`` false it
        comes before the end of training)."""
        self.interval = IntervalMetrics()
        self.signals = signals or PreemptionSignals()
        self.pending_updates = 0
        """Updates of the current vector step not run yet (nonzero only while it updates, or in
        a checkpoint taken when a signal stopped its updates)."""
        self.evaluation_pending = False
        """The evaluation due at ``step`` has not run yet: it is running, or a signal stopped the
        run before or during it (the updates and the log line of the step came before it)."""
        self.eval_envs_state: list[dict[str, Any]] | None = None
        """The evaluation envs' state from before the evaluation in progress (see
        :class:`mtrl.checkpoint.Run`)."""
        self.obs, _ = self.envs.reset()
        self.at_boundary = True
        """All envs start a new episode at the next step (checkpoints are exact only here)."""
        if resume is not None:
            try:
                restore_run(self, resume)
            except BaseException:
                self._close_envs()  # env workers are processes: never leave them behind
                raise
        # After the restore: a checkpoint that does not fit leaves the run folder untouched.
        self.logger = RunLogger(
            self.run_dir,
            None if resume is None else (resume.step, resume.state["logger"]["metrics_bytes"]),
            config.logger,
            {**asdict(config), "protocol": protocol(config)},
        )

    def _task_embeddings(self, resume: Checkpoint | None) -> torch.Tensor | None:
        """``agent.task_embeddings`` in this benchmark's task order; a resumed run takes the
        ones it started with from its checkpoint (the file is not needed again)."""
        if resume is not None:
            return resume.state.get("task_embeddings")
        path = self.config.agent.task_embeddings
        return None if path is None else load_task_embeddings(path, self.benchmark.task_names)

    # --------------------------------------------------------------------------- checkpoints
    def loop_state(self) -> dict[str, Any]:
        """The loop's own part of a checkpoint (see :class:`mtrl.checkpoint.Run`)."""
        final = None if self.final_result is None else asdict(self.final_result)
        return {
            "last_success": self.last_success,
            "final_result": final,
            "obs": self.obs,
            "episodes": self.episodes.state_dict(),
            "interval": self.interval.state_dict(),
            "pending_updates": self.pending_updates,
            "evaluation_pending": self.evaluation_pending,
        }

    def load_loop_state(self, state: dict[str, Any], obs: np.ndarray, restart: bool) -> None:
        self.last_success = state["last_success"]
        final = state.get("final_result")  # absent from checkpoints older than eval_final
        self.final_result = None if final is None else EvalResult(**final)
        self.interval.load_state_dict(state["interval"], self.device)
        # absent from checkpoints of earlier versions, which were all taken between vector steps
        self.pending_updates = state.get("pending_updates", 0)
        self.evaluation_pending = state.get("evaluation_pending", False)
        self.episodes.load_state_dict(state["episodes"])
        if restart:
            self.episodes.drop_unfinished()
        self.obs = obs
        self.at_boundary = True

    # --------------------------------------------------------------------------- main loop
    def run(self) -> EvalResult:
        train = self.config.train
        bar = tqdm(
            total=train.total_steps,
            initial=self.step,
            unit="step",
            unit_scale=True,
            dynamic_ncols=True,
            disable=not self.progress,
        )
        clock = _IntervalClock(self.step)
        owned = not self.signals.installed
        self.signals.install()
        final_step = final_evaluation_step(train)
        try:
            if self.signals.received is not None:
                self._preempt()  # came while the trainer was built: the run as it starts
            if self.pending_updates or self.evaluation_pending:
                self._finish_step(final_step, clock, bar)  # resumed inside the step it stopped in
            elif self.step == 0 and train.eval_at_start:
                self.evaluation_pending = True
                self._finish_step(final_step, clock, bar)
            while self.step < train.total_steps:
                self.train_step()
                bar.update(self.num_tasks)
                self._finish_step(final_step, clock, bar)
        except BaseException:
            bar.close()
            try:
                self._close_after_error()
            finally:
                if owned:
                    self.signals.uninstall()
            raise
        # The handlers stay until the run is closed: a second signal while the envs close must
        # not turn a complete run or a written checkpoint into a death by signal.
        bar.close()
        try:
            self.close()
        finally:
            if owned:
                self.signals.uninstall()
        assert self.final_result is not None  # validate() leaves at least one evaluation
        return self.final_result

    def _finish_step(self, final_step: int, clock: _IntervalClock, bar: tqdm) -> None:
        """What is due at ``step`` after its env step, in this order: its updates not run yet,
        its log line, its evaluation, its checkpoint (the final one at the end of training).

        A preemption signal stops it between two updates, before or during the evaluation, or
        at the checkpoint: a checkpoint records how far it got (``pending_updates``,
        ``evaluation_pending``), and a resumed run starts here with the rest.
        """
        train = self.config.train
        if not self.evaluation_pending:
            self._update()
            if self.pending_updates:
                self._preempt()  # stopped in the burst: the updates still due are checkpointed
            if self.step > 0 and _due(self.step, train.log_every):
                self._log_train(clock.rate(self.step))
            self.evaluation_pending = self._evaluation_due(self.step)
        if self.evaluation_pending:
            if self.signals.received is not None:
                self._preempt()  # before an evaluation, which runs after the resume
            with clock.paused():
                self._scheduled_evaluation(final_step)
            bar.set_postfix(success=f"{self.last_success:.2f}")
        if self.step < train.total_steps:
            self._checkpoint_if_due()
        else:
            self.checkpointer.save(self, finished=True)

    def _evaluation_due(self, step: int) -> bool:
        """Whether an evaluation follows the updates of ``step`` (see :func:`evaluation_steps`)."""
        train = self.config.train
        if step == 0:
            return train.eval_at_start
        if step == train.total_steps:
            return train.eval_final
        return _due(step, train.eval_every) and step < train.total_steps

    def _scheduled_evaluation(self, final_step: int) -> None:
        """An evaluation of [evaluation_steps][mtrl.train.evaluation_steps]; the last one is the
        final evaluation."""
        train = self.config.train
        final = self.step == final_step
        episodes = (train.final_eval_episodes or train.eval_episodes) if final else 0
        self.evaluate(episodes or train.eval_episodes, final=final)

    def _checkpoint_if_due(self) -> None:
        """Periodic checkpoints at episode boundaries; on a preemption signal (also one that
        came while the periodic checkpoint was written), one now and stop."""
        saved = self.checkpointer.due(self.step, self.at_boundary)
        if saved:
            self.checkpointer.save(self)
        if self.signals.received is not None:
            self._preempt(saved=saved)

    def _preempt(self, saved: bool = False) -> NoReturn:
        """Write a checkpoint of the run as it is now (unless ``saved``: just written) and stop."""
        assert self.signals.received is not None
        if not saved:
            self.checkpointer.save(self)
        path = self.checkpointer.path(self.step)
        raise Preempted(self.signals.received, self.step, path, self.run_dir)

    def _sampler(self) -> Callable[[], Batch]:
        """Draws one update's batch as ``train.replay_sampling`` says."""
        agent = self.config.agent
        if self.config.train.replay_sampling == "balanced":
            return lambda: self.replay.sample(agent.batch_per_task)
        total = agent.batch_size or self.num_tasks * agent.batch_per_task
        return lambda: self.replay.sample_uniform(total)

    def train_step(self) -> None:
        """One vector step (K transitions) and its update(s), scheduled by the collector."""
        if self.lagged:
            self.collect(meanwhile=self.learn)
        else:
            self.collect()
            self.learn()

    def collect(self, meanwhile: Callable[[], None] | None = None) -> None:
        """One vector step: one transition per task into the replay. ``meanwhile`` runs after
        the actions are chosen and before the transitions are stored, while env workers step."""
        if self.step < self.config.train.warmup_steps:
            action = self.action_rng.uniform(-1.0, 1.0, (self.num_tasks, self.action_dim))
        else:
            action = self.agent.act(self.obs)
        self.envs.step_async(action)
        if meanwhile is not None:
            meanwhile()
        self._store(action, self.envs.step_wait())

    def _store(self, action: np.ndarray, result: StepResult) -> None:
        self.replay.add(
            self.obs, action, result.reward, result.final_obs, result.terminated, result.truncated
        )
        done = result.terminated | result.truncated
        self.episodes.record(result.reward, result.success, done)
        self.obs = result.next_obs
        self.at_boundary = bool(done.all())
        self.step += self.num_tasks

    def learn(self) -> None:
        """The update(s) of one vector step, once the replay holds ``train.warmup_steps``
        transitions (and at least one per task). A preemption signal stops them between two
        updates; the rest stay in ``pending_updates``."""
        train = self.config.train
        if self.step >= max(train.warmup_steps, self.num_tasks):
            self.pending_updates = updates_due(self.agent.updates, train)
            self._update()

    def _update(self) -> None:
        """Run the ``pending_updates``, one by one, until none is left or a signal came."""
        while self.pending_updates > 0 and self.signals.received is None:
            self.interval.add(self.agent.update(self.sample(), self._probe_batch()))
            self.pending_updates -= 1

    def _probe_batch(self) -> Batch | None:
        """The diagnostics' own batch (``surgery.diagnostics_batch`` per task) when the next
        update computes them, drawn with the agent's probe stream: training's streams are
        untouched."""
        per_task = self.config.surgery.diagnostics_batch
        if per_task == 0 or not self.agent.diagnostics_due():
            return None
        return self.replay.sample(per_task, generator=self.agent.probe_generator)

    def evaluate(self, episodes: int, final: bool = False) -> EvalResult:
        """Evaluate, log and keep the best agent. A preemption signal stops it between two
        vector steps: a checkpoint taken then holds the evaluation envs' state from before it
        (and ``evaluation_pending``), so the resumed run evaluates again from the same start."""
        self.eval_envs_state = env_state(self.eval_envs)
        try:
            result = evaluate(
                self.agent,
                self.eval_envs,
                self.benchmark.task_names,
                episodes,
                stop=lambda: self.signals.received is not None,
            )
        except EvaluationStopped:
            result = None
        if result is None:
            self._preempt()
        self.eval_envs_state = None
        self.evaluation_pending = False
        self.last_success = result.mean_success
        if final:
            self.final_result = result
        extra = {"protocol": self.config.train.protocol, **({"final": True} if final else {})}
        self.logger.log(self.step, result.metrics(), **extra)
        self.checkpointer.on_evaluation(self, result)
        return result

    # --------------------------------------------------------------------------- logging
    def _log_train(self, steps_per_second: float) -> None:
        metrics = {
            "train/steps_per_s": steps_per_second,
            "train/updates": float(self.agent.updates),
        }
        metrics.update(self.episodes.pop())
        for key, value in self.interval.pop_means().items():
            metrics.update(self._interval_mean(key, value))
        metrics.update(shares_among_conflicts(metrics))
        self.logger.log(self.step, metrics)

    def _interval_mean(self, key: str, value: torch.Tensor) -> dict[str, float]:
        """Scalars as they are; per-pair gradient statistics pair by pair; per-task vectors as
        their mean over tasks, and task by task for the temperatures, the per-task gradient
        norms and the balancers' loss weights."""
        name = key if key.startswith("diag/") else f"train/{key}"
        if value.dim() == 0:
            return {name: float(value)}
        component, _, stat = name.rpartition("/")
        if stat.startswith("pair_"):
            pairs = combinations(self.benchmark.task_names, 2)  # the order of triu_indices
            stat = stat.removeprefix("pair_")
            return {
                f"{component}/pair/{a}|{b}/{stat}": v
                for (a, b), v in zip(pairs, value.tolist(), strict=True)
            }
        out = {name: float(value.mean())}
        if key == "alpha" or key.endswith(("/norms", "/weight")):
            tasks = self.benchmark.task_names
            out.update({f"{name}/{t}": v for t, v in zip(tasks, value.tolist(), strict=True)})
        return out

    def close(self) -> None:
        try:
            self.logger.close()
        finally:
            self._close_envs()

    def _close_after_error(self) -> None:
        """:meth:`close` without raising again: the error on its way is the one to report (after
        a full disk, closing the logs fails too)."""
        try:
            with suppress(WriteFailed, OSError):
                self.logger.close()
        finally:
            self._close_envs()

    def _close_envs(self) -> None:
        self.envs.close()
        self.eval_envs.close()


def shares_among_conflicts(metrics: dict[str, float]) -> dict[str, float]:
    """Of the conflicting (update, task pair)s of a log interval, the shares that meet condition
    (a) of the PCGrad paper's Theorem 2 and that have ξ <= 1 (its Figure 4, middle), from the
    interval means of the shares among all pairs (a ratio of means is a ratio of counts);
    none for an interval without a conflict."""
    out = {}
    for key, conflict in metrics.items():
        if key.startswith("diag/") and key.endswith("/conflict") and conflict > 0:
            component = key.removesuffix("conflict")
            for share in ("cond_a", "xi_le_1"):
                out[f"{component}{share}_given_conflict"] = metrics[component + share] / conflict
    return out


def _due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def updates_due(updates_done: int, train: TrainConfig) -> int:
    """Updates at an update step: ``train.warmup_updates`` at the first one (the burst that
    catches up with the warm-up, as the mtrl family's ``multitask.py`` does), if set, then
    ``train.updates_per_step``."""
    if updates_done == 0 and train.warmup_updates > 0:
        return train.warmup_updates
    return train.updates_per_step


def evaluation_steps(train: TrainConfig) -> list[int]:
    """The env steps after which a run evaluates, in order; the last is the final evaluation.

    Step 0 (before any transition) with ``train.eval_at_start``, every multiple of
    ``train.eval_every`` below ``train.total_steps``, and ``train.total_steps`` with
    ``train.eval_final``.
    """
    every, total = train.eval_every, train.total_steps
    periodic = list(range(every, total, every)) if every > 0 else []
    start = [0] if train.eval_at_start else []
    return [*start, *periodic, *([total] if train.eval_final else [])]


def final_evaluation_step(train: TrainConfig) -> int:
    """The step of the final evaluation: the end of training, or with ``train.eval_final`` false
    the last multiple of ``train.eval_every`` below it (step 0 when there is none)."""
    every, total = train.eval_every, train.total_steps
    if train.eval_final:
        return total
    return (total - 1) // every * every if 0 < every < total else 0


class _IntervalClock:
    """Env steps per second between log lines, not counting time spent evaluating."""

    def __init__(self, step: int):
        self.step, self.start, self.excluded = step, time.perf_counter(), 0.0

    def rate(self, step: int) -> float:
        now = time.perf_counter()
        elapsed = max(now - self.start - self.excluded, 1e-9)
        rate = (step - self.step) / elapsed
        self.step, self.start, self.excluded = step, now, 0.0
        return rate

    @contextmanager
    def paused(self) -> Iterator[None]:
        begin = time.perf_counter()
        try:
            yield
        finally:
            self.excluded += time.perf_counter() - begin
