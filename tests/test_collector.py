"""The overlapped collector: env worker processes against the envs stepped in this process,
failures (a killed or hung worker), and whole runs against the serial schedule with the same lag.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    TRAIN,
    assert_same_checkpoint,
    child_env,
    logged_after,
    run_module,
    start_module,
    tiny_mt1,
    wait_for,
    without_timing,
)
from hypothesis import given
from hypothesis import strategies as st

from mtrl import checkpoint as ckpt
from mtrl import collector
from mtrl.checkpoint import load_checkpoint, step_file, train_checkpoints
from mtrl.cli import ENV_WORKER_FAILED, PREEMPTED, USAGE_ERROR, train_main
from mtrl.collector import EnvWorkerError, EnvWorkers, step_envs
from mtrl.config import EnvConfig
from mtrl.envs import make_envs, parse_benchmark, rebuild_envs
from mtrl.logger import read_metrics

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")


# --------------------------------------------------------------------------------- processes
def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state, ppid, ...); None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def descendants(pid: int) -> dict[int, bytes]:
    """The processes below ``pid`` and their command lines."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            children.setdefault(int(stat[1]), []).append(int(entry.name))
    found, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            try:
                found[child] = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            todo.append(child)
    return found


def env_workers(processes: dict[int, bytes]) -> list[int]:
    """The spawned multiprocessing targets among ``processes`` (not the resource tracker)."""
    return sorted(pid for pid, command in processes.items() if b"spawn_main" in command)


def assert_all_gone(pids, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids):
        assert time.monotonic() < deadline, f"still running: {[p for p in pids if alive(p)]}"
        time.sleep(0.05)


def wait_watching(process, timeout: float = 600) -> dict[int, bytes]:
    """Wait for ``process`` to end; every descendant it had on the way."""
    seen: dict[int, bytes] = {}
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        assert time.monotonic() < deadline, "timed out"
        # an exiting process's command line reads empty: keep the one seen before
        seen.update({p: c for p, c in descendants(process.pid).items() if c or p not in seen})
        time.sleep(0.05)
    return seen


# --------------------------------------------------------------------------------- env workers
@pytest.fixture(scope="module")
def mt10():
    """MT10 with 4-step episodes, built in this process (the serial collector's envs)."""
    envs = make_envs(parse_benchmark("mt10"), EnvConfig(max_episode_steps=4), seed=2)
    yield envs
    envs.close()


def test_workers_step_the_same_envs_as_the_serial_collector(mt10):
    """Uneven slices (4, 3, 3 tasks): every field of every step across three episode ends,
    and the env state a checkpoint captures and restores, equal those of the envs stepped in
    this process."""
    workers = EnvWorkers(mt10.env_fns, "random", num_workers=3)
    try:
        assert workers.single_observation_space == mt10.single_observation_space
        np.testing.assert_array_equal(workers.reset()[0], mt10.reset()[0])
        rng, ends = np.random.default_rng(0), 0
        for _ in range(12):
            action = rng.uniform(-1, 1, (10, 4))
            workers.step_async(action)
            got, expected = workers.step_wait(), step_envs(mt10, action)
            for name, value in vars(expected).items():
                np.testing.assert_array_equal(getattr(got, name), value, err_msg=name)
            ends += expected.truncated.all()
        assert ends == 3  # and now at an episode boundary, where checkpoints are taken
        saved = ckpt._env_state(mt10)
        assert ckpt._env_state(workers) == saved
        np.testing.assert_array_equal(
            ckpt._restore_envs(workers, saved), ckpt._restore_envs(mt10, saved)
        )
    finally:
        workers.close()


def test_fixed_goals_in_workers(mt10):
    """goal_mode=fixed: each worker draws its envs' goals as the envs in this process do, and
    keeps them across episodes."""

    def goals(envs):
        return [goal.tolist() for goal in envs.get_attr("_last_rand_vec")]

    serial = rebuild_envs(mt10.env_fns, "fixed")
    workers = EnvWorkers(mt10.env_fns, "fixed", num_workers=2)
    try:
        assert goals(workers) == goals(serial)
        np.testing.assert_array_equal(workers.reset()[0], serial.reset()[0])
        for _ in range(5):  # past the end of the first 4-step episode
            workers.step_async(np.zeros((10, 4)))
            workers.step_wait()
        assert goals(workers) == goals(serial)
    finally:
        workers.close()
        serial.close()


def test_a_killed_worker_raises_at_once_and_close_leaves_no_process(mt10):
    workers = EnvWorkers(mt10.env_fns, "random", num_workers=2)
    pids = set(workers.pids)
    try:
        workers.reset()
        os.kill(workers.pids[1], signal.SIGKILL)
        start = time.monotonic()
        workers.step_async(np.zeros((10, 4)))
        with pytest.raises(EnvWorkerError, match=r"env worker 1 \(pid \d+, tasks 5-9\) was killed"):
            workers.step_wait()
        assert time.monotonic() - start < 5
    finally:
        workers.close()
    assert_all_gone(pids)


def test_a_hung_worker_times_out_and_is_killed_on_close(mt10):
    workers = EnvWorkers(mt10.env_fns, "random", num_workers=2)
    workers.timeout_s = 1  # once started (which takes seconds)
    pids = set(workers.pids)
    try:
        os.kill(workers.pids[0], signal.SIGSTOP)  # alive, never answers; ignores SIGTERM
        with pytest.raises(EnvWorkerError, match=r"env worker 0 .* did not answer within 1 s"):
            workers.reset()
    finally:
        workers.close(grace_s=0.5)
    assert_all_gone(pids)


def test_an_env_error_in_a_worker_is_reported(mt10, capfd):
    workers = EnvWorkers(mt10.env_fns, "random", num_workers=2)
    try:
        with pytest.raises(EnvWorkerError, match=r"env worker 0 .* failed: AttributeError"):
            workers.call("no_such_method")
    finally:
        workers.close()
    assert "Traceback" in capfd.readouterr().err  # the worker's own, for debugging


def test_a_program_that_never_closes_its_workers_still_exits():
    """Left to multiprocessing's exit handler, workers that ignore SIGTERM would hang it."""
    code = (
        "from mtrl.collector import EnvWorkers\n"
        "from mtrl.config import EnvConfig\n"
        "from mtrl.envs import make_envs, parse_benchmark\n"
        "envs = make_envs(parse_benchmark('mt1:reach-v3'), EnvConfig(), seed=0)\n"
        "workers = EnvWorkers(envs.env_fns, 'random', 1)\n"  # alive until the exit handlers
        "print(*workers.pids)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=child_env()
    )
    assert result.returncode == 0, result.stderr
    assert_all_gone([int(result.stdout)])


def test_a_main_module_that_starts_workers_on_import_fails_instead_of_hanging(tmp_path):
    """Spawned workers import the main module; one without a ``__main__`` guard starts workers
    again there, which multiprocessing refuses: the worker dies while it starts."""
    script = tmp_path / "unguarded.py"
    script.write_text(
        "from mtrl.collector import EnvWorkers\n"
        "from mtrl.config import EnvConfig\n"
        "from mtrl.envs import make_envs, parse_benchmark\n"
        "envs = make_envs(parse_benchmark('mt1:reach-v3'), EnvConfig(), seed=0)\n"
        "EnvWorkers(envs.env_fns, 'random', 1)\n"
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=child_env()
    )
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("mtrl.collector.EnvWorkerError: env worker 0 ")
    )


@given(n=st.integers(1, 60), data=st.data())
def test_split_gives_contiguous_balanced_slices(n, data):
    parts = data.draw(st.integers(1, n))
    slices = collector._split(n, parts)
    assert [i for s in slices for i in s] == list(range(n))
    assert len(slices) == parts
    assert max(map(len, slices)) - min(map(len, slices)) <= 1


@pytest.mark.parametrize(
    ("cores", "tasks", "workers"), [(1, 10, 1), (2, 10, 1), (8, 10, 7), (16, 10, 10), (16, 1, 1)]
)
def test_default_env_workers_leave_one_core_to_the_learner(monkeypatch, cores, tasks, workers):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert collector.default_env_workers(tasks) == workers


# --------------------------------------------------------------------------------- whole runs
# Real MT10, tiny networks, 50-step episodes: a boundary every 500 env steps, checkpoints and
# evaluations at 500 and 1000 (the end).
MT10_RUN = [
    "--config",
    "smoke",
    "--total-steps",
    "1000",
    "--no-progress",
    "env.max_episode_steps=50",
    "train.warmup_steps=200",
    "train.eval_every=500",
    "train.eval_episodes=1",
    "train.final_eval_episodes=1",
    "train.log_every=100",
    "checkpoint.every=500",
]


@pytest.fixture(scope="module")
def mt10_lagged(tmp_path_factory):
    """The same MT10 run with serial_lagged and with overlap (3 workers: 4, 3 and 3 tasks),
    side by side; the processes the overlap run started, watched while it ran."""
    root = tmp_path_factory.mktemp("mt10")
    serial = start_module(
        TRAIN, *MT10_RUN, "train.collector=serial_lagged", "--out", str(root / "serial"),
        log=root / "serial.log",
    )  # fmt: skip
    overlap = start_module(
        TRAIN, *MT10_RUN, "train.collector=overlap", "train.env_workers=3",
        "--out", str(root / "overlap"), log=root / "overlap.log",
    )  # fmt: skip
    processes = wait_watching(overlap)
    assert overlap.returncode == 0, (root / "overlap.log").read_text()
    assert serial.wait(timeout=600) == 0, (root / "serial.log").read_text()
    return root / "serial", root / "overlap", processes


@pytest.mark.slow
def test_overlap_equals_serial_with_the_same_lag_bit_for_bit(mt10_lagged):
    serial, overlap, _ = mt10_lagged
    assert_same_run(serial, overlap, 1000)
    # The lag: updates start once the replay holds warmup_steps transitions before a step, one
    # vector step later than in the serial schedule (which makes (1000 - 200) / 10 + 1).
    updates = [r["train/updates"] for r in read_metrics(overlap) if "train/updates" in r]
    assert updates[-1] == (1000 - 200) // 10


@pytest.mark.slow
def test_overlap_workers_end_with_the_run(mt10_lagged):
    _, _, processes = mt10_lagged
    assert len(env_workers(processes)) == 3
    assert_all_gone(processes)


def assert_same_run(a: Path, b: Path, final: int) -> None:
    """The same final checkpoint (every tensor, RNG and env state; the configs may differ in
    train.collector and train.env_workers) and the same metrics but for the timings."""
    assert_same_checkpoint(step_file(a, final), step_file(b, final), ignore=("config",))
    metrics_a, metrics_b = read_metrics(a), read_metrics(b)
    evals = [[r for r in m if "eval/success" in r] for m in (metrics_a, metrics_b)]
    assert evals[0] == evals[1] and len(evals[0]) >= 2
    assert without_timing(metrics_a) == without_timing(metrics_b)


# One Meta-World task (one env worker), 20-step episodes, a checkpoint every 100 steps.
def mt1_run(out: Path) -> list[str]:
    return tiny_mt1(400, out, "train.collector=overlap", "checkpoint.every=100")


@pytest.fixture(scope="module")
def mt1_reference(tmp_path_factory):
    """An overlapped run that nothing interrupts."""
    run = tmp_path_factory.mktemp("mt1") / "run"
    result = run_module(TRAIN, *mt1_run(run))
    assert result.returncode == 0, result.stderr
    return run


def test_two_overlapped_runs_with_the_same_seed_are_identical(mt1_reference, tmp_path):
    result = run_module(TRAIN, *mt1_run(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    assert_same_run(mt1_reference, tmp_path / "run", 400)


def test_sigkill_then_resume_with_overlap_equals_the_uninterrupted_run(mt1_reference, tmp_path):
    run = tmp_path / "run"
    victim = start_module(TRAIN, *mt1_run(run), log=tmp_path / "log")
    wait_for(lambda: logged_after(run, 100), victim, "the checkpoint at 100")
    spawned = descendants(victim.pid)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    assert len(env_workers(spawned)) == 1
    assert_all_gone(spawned)  # the worker noticed that the trainer is gone

    resumed = run_module(TRAIN, "--resume", str(run), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(mt1_reference, run, 400)


def test_a_killed_env_worker_stops_the_run_with_one_line_and_it_resumes(mt1_reference, tmp_path):
    run = tmp_path / "run"
    trainer = start_module(TRAIN, *mt1_run(run), log=tmp_path / "log")
    wait_for(lambda: logged_after(run, 100), trainer, "the checkpoint at 100")
    spawned = descendants(trainer.pid)
    (worker,) = env_workers(spawned)
    os.kill(worker, signal.SIGKILL)
    assert trainer.wait(timeout=60) == ENV_WORKER_FAILED
    assert_all_gone(spawned)
    lines = (tmp_path / "log").read_text().strip().splitlines()
    assert len(lines) == 1, lines
    latest = train_checkpoints(run)[-1]
    assert lines[0].startswith(
        f"mtrl-train: error: env worker 0 (pid {worker}, task 0) was killed by SIGKILL at step "
    )
    assert lines[0].endswith(f"'mtrl-train --resume {run}' continues from {latest.name}")
    checkpoint = load_checkpoint(latest)  # intact: it verifies
    assert checkpoint.state["episode_boundary"] and not checkpoint.state["finished"]

    resumed = run_module(TRAIN, "--resume", str(run), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(mt1_reference, run, 400)


def test_sigterm_to_the_process_group_checkpoints_through_the_workers(tmp_path):
    """A preemption signal that reaches every process (a batch system, a terminal): the workers
    ignore it, the trainer checkpoints their envs and exits 3, and the run resumes."""
    run = tmp_path / "run"
    args = [*mt1_run(run), "checkpoint.every=0"]
    trainer = start_module(TRAIN, *args, log=tmp_path / "log", start_new_session=True)
    wait_for(lambda: logged_after(run, 100), trainer, "training")
    spawned = descendants(trainer.pid)
    os.killpg(trainer.pid, signal.SIGTERM)
    assert trainer.wait(timeout=60) == PREEMPTED, (tmp_path / "log").read_text()
    assert_all_gone(spawned)
    (latest,) = train_checkpoints(run)
    assert load_checkpoint(latest).step > 100
    resumed = run_module(TRAIN, "--resume", str(run), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert read_metrics(run)[-1]["step"] == 400


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            ["train.collector=threads"],
            "must be one of serial, overlap, serial_lagged, got 'threads'",
        ),
        (["train.env_workers=-1"], "train.env_workers must be >= 0"),
        (["train.env_workers=two"], "bad value for 'train.env_workers'"),
        (
            ["--benchmark", "mt1:reach-v3", "train.env_workers=2"],
            "must not exceed the number of tasks (1)",
        ),
    ],
)
def test_bad_collector_values_end_with_one_line(tmp_path, capsys, override, message):
    assert train_main(["--out", str(tmp_path / "run"), *override]) == USAGE_ERROR
    err = capsys.readouterr().err
    assert err.startswith("mtrl-train: error: ") and err.count("\n") == 1, err
    assert message in err
    assert not (tmp_path / "run").exists()
