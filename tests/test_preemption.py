"""Preemption wherever the loop is (update burst, evaluations, checkpoint writes) and write
failures (a full disk): a checkpoint within one update or one evaluation step, exact resume.

The signals are sent by the process to itself from inside the loop (an update, a step of an
evaluation, a write of the checkpoint file), so each lands exactly where it is meant to; one
test sends a real SIGTERM to a separate process in its update burst.
"""

import errno
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import (
    TRAIN,
    assert_same_checkpoint,
    child_env,
    run_module,
    start_module,
    tiny_mt1,
    wait_for,
    without_timing,
)

import mtrl.train
from mtrl.agent import MTSAC
from mtrl.checkpoint import (
    BEST_FILE,
    WriteFailed,
    checkpoint_dir,
    load_checkpoint,
    step_file,
    train_checkpoints,
)
from mtrl.cli import PREEMPTED, WRITE_FAILED, train_main
from mtrl.logger import read_metrics

# One task, 20-step episodes (an episode boundary every 20 env steps): 40 steps of random
# actions, then a burst of 40 updates at step 40; evaluations of 3 episodes at 100 and 200 and
# a final one of 2 at 300; a checkpoint every 100 steps.
ARGS = (
    "checkpoint.every=100",
    "checkpoint.keep_last=5",
    "train.warmup_updates=40",
    "train.eval_episodes=3",
    "train.threads=1",
)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The run never interrupted."""
    run = tmp_path_factory.mktemp("straight") / "run"
    assert train_main(tiny_mt1(300, run, *ARGS)) == 0
    return run


def assert_resumes_as_the_uninterrupted_run(run, straight, capsys):
    """Resumed to the end, ``run`` ends bit for bit as ``straight``, with the same log lines
    (every evaluation once)."""
    capsys.readouterr()
    assert train_main(["--resume", str(run), "--no-progress"]) == 0, capsys.readouterr().err
    assert_same_checkpoint(step_file(straight, 300), step_file(run, 300))
    assert_same_checkpoint(checkpoint_dir(straight) / BEST_FILE, checkpoint_dir(run) / BEST_FILE)
    a, b = read_metrics(straight), read_metrics(run)
    assert [r["step"] for r in b if "eval/success" in r] == [100, 200, 300]
    assert without_timing(a) == without_timing(b)


def assert_one_line_preemption(err, signal_name, step):
    assert "Traceback" not in err
    assert err.strip().count("\n") == 0, err
    assert f"stopped by {signal_name} at step {step}" in err and "--resume" in err


def kill_self(signum=signal.SIGTERM):
    os.kill(os.getpid(), signum)


def test_a_signal_in_the_update_burst_stops_after_that_update(
    straight, tmp_path, monkeypatch, capsys
):
    run = tmp_path / "run"
    update, calls, signalled_at = MTSAC.update, [], []

    def update_and_signal(agent, *args):
        calls.append(agent.updates)
        if agent.updates == 10:  # the 11th update of the 40 of the burst
            kill_self()
            signalled_at.append(len(calls))
        return update(agent, *args)

    monkeypatch.setattr(MTSAC, "update", update_and_signal)
    assert train_main(tiny_mt1(300, run, *ARGS)) == PREEMPTED
    monkeypatch.setattr(MTSAC, "update", update)
    assert_one_line_preemption(capsys.readouterr().err, "SIGTERM", 40)

    assert len(calls) == signalled_at[0], "no update after the one the signal came in"
    (path,) = train_checkpoints(run)
    checkpoint = load_checkpoint(path)
    assert checkpoint.step == 40 and checkpoint.state["episode_boundary"]
    assert checkpoint.state["agent"]["updates"] == 11
    assert checkpoint.state["trainer"]["pending_updates"] == 29
    assert all(r["step"] < 40 for r in read_metrics(run)), "the step's log line comes later"
    assert_resumes_as_the_uninterrupted_run(run, straight, capsys)


@pytest.mark.parametrize("which", [2, 3], ids=["periodic-at-200", "final-at-300"])
def test_a_signal_in_an_evaluation_stops_it_within_one_step(
    straight, tmp_path, monkeypatch, capsys, which
):
    """The evaluation (the ``which``-th of the run) stops at its next vector step; it runs again,
    whole, on resume, and is logged once."""
    run, step = tmp_path / "run", which * 100
    evaluate, evaluations, acted_after = mtrl.train.evaluate, [], []

    class SignalOnFifthStep:
        def __init__(self, agent):
            self.agent, self.steps = agent, 0

        def act(self, obs, deterministic=False):
            self.steps += 1
            if self.steps == 5:
                kill_self()
            elif self.steps > 5:
                acted_after.append(self.steps)
            return self.agent.act(obs, deterministic)

    def evaluate_and_signal(agent, *args, **kwargs):
        evaluations.append(agent)
        policy = SignalOnFifthStep(agent) if len(evaluations) == which else agent
        return evaluate(policy, *args, **kwargs)

    monkeypatch.setattr(mtrl.train, "evaluate", evaluate_and_signal)
    assert train_main(tiny_mt1(300, run, *ARGS)) == PREEMPTED
    monkeypatch.setattr(mtrl.train, "evaluate", evaluate)
    assert_one_line_preemption(capsys.readouterr().err, "SIGTERM", step)

    assert acted_after == [], "the evaluation stopped at its next vector step"
    checkpoint = load_checkpoint(train_checkpoints(run)[-1])
    assert checkpoint.step == step and not checkpoint.state["finished"]
    assert checkpoint.state["trainer"]["evaluation_pending"]
    records = read_metrics(run)
    assert [r["step"] for r in records if "eval/success" in r] == list(range(100, step, 100))
    assert records[-1]["step"] == step and "train/updates" in records[-1], "logged before"
    assert_resumes_as_the_uninterrupted_run(run, straight, capsys)


def test_a_signal_in_the_last_update_before_an_evaluation_defers_the_evaluation(
    straight, tmp_path, monkeypatch, capsys
):
    """The signal comes in the update of step 100, after which an evaluation is due: the step's
    log line is written, the evaluation is not started, and runs after the resume."""
    run = tmp_path / "run"
    update, evaluations = MTSAC.update, []
    evaluate = mtrl.train.evaluate

    def update_and_signal(agent, *args):
        if agent.updates == 99:  # 40 in the burst at step 40, then one per step: step 100's
            kill_self()
        return update(agent, *args)

    def count_evaluations(*args, **kwargs):
        evaluations.append(args)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(MTSAC, "update", update_and_signal)
    monkeypatch.setattr(mtrl.train, "evaluate", count_evaluations)
    assert train_main(tiny_mt1(300, run, *ARGS)) == PREEMPTED
    monkeypatch.undo()
    assert_one_line_preemption(capsys.readouterr().err, "SIGTERM", 100)
    assert evaluations == []
    checkpoint = load_checkpoint(step_file(run, 100))
    assert checkpoint.state["trainer"]["evaluation_pending"]
    assert checkpoint.state["trainer"]["pending_updates"] == 0
    assert read_metrics(run)[-1]["step"] == 100
    assert_resumes_as_the_uninterrupted_run(run, straight, capsys)


class WriteThenSignal:
    """A checkpoint file that sends the process signals between its writes."""

    def __init__(self, file, signals):
        self.file, self.writes, self.signals = file, 0, dict(signals)

    def write(self, data):
        self.writes += 1
        if self.writes in self.signals:
            kill_self(self.signals[self.writes])
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)


@pytest.mark.parametrize("which", ["periodic", "preemption"])
def test_signals_during_the_checkpoint_write_leave_it_whole(
    straight, tmp_path, monkeypatch, capsys, which
):
    """Signals while a checkpoint file is written: the periodic one at 100 (the first signal
    comes in its write, then a second SIGTERM and a SIGUSR1), or the preemption checkpoint at 40
    after a SIGUSR1 in the burst (SIGTERM and SIGUSR1 in its write). The write completes, is not
    repeated, and the run stops on the first signal."""
    run = tmp_path / "run"
    if which == "periodic":
        step, first, in_write = 100, "SIGTERM", {2: signal.SIGTERM, 4: signal.SIGTERM}
        files = [BEST_FILE, "step-0000000100.pt"]
    else:
        step, first, in_write = 40, "SIGUSR1", {2: signal.SIGTERM}
        files = ["step-0000000040.pt"]
        update = MTSAC.update

        def update_and_signal(agent, *args):
            if agent.updates == 10:
                kill_self(signal.SIGUSR1)
            return update(agent, *args)

        monkeypatch.setattr(MTSAC, "update", update_and_signal)
    in_write[6] = signal.SIGUSR1
    save, written = torch.save, []

    def save_with_signals(payload, file):
        written.append(os.path.basename(file.name))
        if f"step-{step:010d}" in file.name:
            file = WriteThenSignal(file, in_write)
        return save(payload, file)

    monkeypatch.setattr(torch, "save", save_with_signals)
    assert train_main(tiny_mt1(300, run, *ARGS)) == PREEMPTED
    monkeypatch.undo()
    assert_one_line_preemption(capsys.readouterr().err, first, step)

    assert sum("step-" in name for name in written) == 1, "written once"
    assert sorted(p.name for p in checkpoint_dir(run).iterdir()) == files, "no temporary file"
    assert load_checkpoint(step_file(run, step)).step == step  # the checksum holds
    assert_resumes_as_the_uninterrupted_run(run, straight, capsys)


def test_a_signal_while_the_run_closes_keeps_exit_status_3(tmp_path, monkeypatch, capsys):
    """A second SIGTERM while the envs close after the preemption checkpoint (a cluster that
    signals again) does not kill the trainer: the handlers stay until everything is closed."""
    run = tmp_path / "run"
    update, close_envs = MTSAC.update, mtrl.train.Trainer._close_envs

    def update_and_signal(agent, *args):
        if agent.updates == 3:
            kill_self()
        return update(agent, *args)

    def close_envs_and_signal(trainer):
        kill_self()
        close_envs(trainer)

    monkeypatch.setattr(MTSAC, "update", update_and_signal)
    monkeypatch.setattr(mtrl.train.Trainer, "_close_envs", close_envs_and_signal)
    outside = []  # what reached the handler in place before the trainer's (not pytest's death)
    before = signal.signal(signal.SIGTERM, lambda *args: outside.append(args))
    try:
        assert train_main(tiny_mt1(300, run, *ARGS)) == PREEMPTED
    finally:
        signal.signal(signal.SIGTERM, before)
    assert outside == [], "the second SIGTERM came after the trainer's handler was removed"
    assert_one_line_preemption(capsys.readouterr().err, "SIGTERM", 40)


def test_a_signal_while_the_trainer_is_built_stops_the_run_at_its_start(
    straight, tmp_path, monkeypatch, capsys
):
    """A SIGTERM while the envs are built (before the loop) is recorded, not a death: the run
    stops at step 0 with a checkpoint and resumes as the uninterrupted run."""
    run, make_train_envs = tmp_path / "run", mtrl.train.make_train_envs

    def make_and_signal(*args, **kwargs):
        envs = make_train_envs(*args, **kwargs)
        kill_self()
        return envs

    monkeypatch.setattr(mtrl.train, "make_train_envs", make_and_signal)
    outside = []  # what reached the handler in place before train_main's (not pytest's death)

    def record(*args):
        outside.append(args)

    before = signal.signal(signal.SIGTERM, record)
    try:
        assert train_main(tiny_mt1(300, run, *ARGS)) == PREEMPTED
    finally:
        restored = signal.signal(signal.SIGTERM, before)
    monkeypatch.undo()
    assert outside == [], "the signal came before train_main's handler was installed"
    assert restored is record, "train_main left its handler installed"
    assert_one_line_preemption(capsys.readouterr().err, "SIGTERM", 0)
    checkpoint = load_checkpoint(step_file(run, 0))
    assert checkpoint.state["replay"]["size"] == 0 and checkpoint.state["episode_boundary"]
    assert read_metrics(run) == []
    assert_resumes_as_the_uninterrupted_run(run, straight, capsys)


def test_a_signal_in_the_evaluation_at_the_start(tmp_path, monkeypatch, capsys):
    """``train.eval_at_start``: stopped in the evaluation before the first step, the run has a
    checkpoint at step 0 and resumes as the uninterrupted run."""
    straight, run = tmp_path / "straight", tmp_path / "run"
    args = (*ARGS, "train.eval_at_start=true")
    assert train_main(tiny_mt1(300, straight, *args)) == 0
    evaluate = mtrl.train.evaluate

    def evaluate_and_signal(agent, *args, **kwargs):
        kill_self()
        return evaluate(agent, *args, **kwargs)

    monkeypatch.setattr(mtrl.train, "evaluate", evaluate_and_signal)
    assert train_main(tiny_mt1(300, run, *args)) == PREEMPTED
    monkeypatch.undo()
    assert_one_line_preemption(capsys.readouterr().err, "SIGTERM", 0)
    checkpoint = load_checkpoint(step_file(run, 0))
    assert checkpoint.state["trainer"]["evaluation_pending"]
    assert checkpoint.state["replay"]["size"] == 0
    assert read_metrics(run) == []
    assert train_main(["--resume", str(run), "--no-progress"]) == 0
    assert_same_checkpoint(step_file(straight, 300), step_file(run, 300))
    evals = [r["step"] for r in read_metrics(run) if "eval/success" in r]
    assert evals == [0, 100, 200, 300]
    assert without_timing(read_metrics(straight)) == without_timing(read_metrics(run))


class FullDisk:
    """A file on a disk with ``free`` bytes left: a write beyond fails as the kernel's would."""

    def __init__(self, file, free):
        self.file, self.free = file, free

    def write(self, data):
        size = len(data.encode()) if isinstance(data, str) else memoryview(data).nbytes
        if size > self.free:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.free -= size
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)


def test_a_full_disk_while_writing_a_checkpoint_is_one_line_and_resumes_exactly(
    straight, tmp_path, monkeypatch, capsys
):
    run = tmp_path / "run"
    save = torch.save

    def save_on_a_full_disk(payload, file):
        if "step-0000000200" in file.name:
            file = FullDisk(file, free=20_000)
        return save(payload, file)

    monkeypatch.setattr(torch, "save", save_on_a_full_disk)
    assert train_main(tiny_mt1(300, run, *ARGS)) == WRITE_FAILED
    monkeypatch.setattr(torch, "save", save)
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().count("\n") == 0, err
    assert err.strip() == (
        f"mtrl-train: error: cannot write '{step_file(run, 200)}': No space left on device "
        f"[errno 28] at step 200; the last intact checkpoint is {step_file(run, 100)}; once "
        f"there is space, continue with: mtrl-train --resume {run}"
    )
    assert sorted(p.name for p in checkpoint_dir(run).iterdir()) == [
        BEST_FILE,
        "step-0000000100.pt",
    ], "no partial or temporary file"
    assert load_checkpoint(step_file(run, 100)).step == 100
    assert_resumes_as_the_uninterrupted_run(run, straight, capsys)


def test_a_full_disk_while_logging_is_one_line(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    logger_init = mtrl.train.RunLogger.__init__

    def init_on_a_full_disk(self, *args, **kwargs):
        logger_init(self, *args, **kwargs)
        self._jsonl = FullDisk(self._jsonl, free=3_000)

    monkeypatch.setattr(mtrl.train.RunLogger, "__init__", init_on_a_full_disk)
    assert train_main(tiny_mt1(300, run, *ARGS)) == WRITE_FAILED
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.count("\n") == 0, err
    assert err.startswith(f"mtrl-train: error: cannot write '{run / 'metrics.jsonl'}': No space")
    assert "--resume" in err or "start the run again" in err


def test_write_failed_names_the_os_error_behind_torchs_runtime_error(tmp_path):
    """torch reports a failed write of its file as a RuntimeError raised from the OSError."""
    from mtrl.checkpoint import KIND_AGENT, save_checkpoint

    path = tmp_path / "c.pt"
    real = torch.save
    try:
        torch.save = lambda payload, file: real(payload, FullDisk(file, free=10))
        with pytest.raises(WriteFailed, match=r"No space left on device \[errno 28\]") as info:
            save_checkpoint(path, KIND_AGENT, {"w": torch.zeros(10_000)})
    finally:
        torch.save = real
    assert info.value.path == path and info.value.error.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_sigterm_in_a_long_update_burst_exits_within_seconds(tmp_path):
    """A real SIGTERM to a separate process in a burst of 20000 updates (tens of seconds):
    a checkpoint and exit status 3 within a few seconds, most of the burst still due."""
    run = tmp_path / "run"
    burst = 20_000
    # eager: the burst's 20,000 updates would make train.compile=auto compile at the first one
    args = tiny_mt1(
        300, run, "checkpoint.every=0", f"train.warmup_updates={burst}", "train.compile=none"
    )
    process = start_module(TRAIN, *args, log=tmp_path / "log")
    try:
        # the log line at step 20 comes before the burst at step 40 (40 steps take milliseconds)
        wait_for(lambda: (run / "metrics.jsonl").exists() and read_metrics(run), process, "20")
        time.sleep(1.0)
        start = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == PREEMPTED
        latency = time.monotonic() - start
    finally:
        if process.poll() is None:
            process.kill()
    assert "Traceback" not in (tmp_path / "log").read_text()
    checkpoint = load_checkpoint(train_checkpoints(run)[-1])
    pending = checkpoint.state["trainer"]["pending_updates"]
    assert checkpoint.step == 40 and burst // 2 < pending < burst, pending
    print(f"SIGTERM to exit: {latency:.2f} s, {pending} of {burst} updates still due")
    assert latency < 15, f"{latency:.1f} s from SIGTERM to exit"


def test_preempted_twice_in_a_row_still_ends_as_the_uninterrupted_run(
    straight, tmp_path, monkeypatch, capsys
):
    """A run stopped in its burst, resumed and stopped again in the evaluation at 100: still
    the uninterrupted run in the end (two preemption checkpoints in a row)."""
    run = tmp_path / "run"
    update, evaluate = MTSAC.update, mtrl.train.evaluate

    def update_and_signal(agent, *args):
        if agent.updates == 5:
            kill_self(signal.SIGUSR1)
        return update(agent, *args)

    monkeypatch.setattr(MTSAC, "update", update_and_signal)
    assert train_main(tiny_mt1(300, run, *ARGS)) == PREEMPTED
    monkeypatch.setattr(MTSAC, "update", update)
    assert load_checkpoint(step_file(run, 40)).state["trainer"]["pending_updates"] == 34

    def evaluate_and_signal(agent, *args, **kwargs):
        kill_self()
        return evaluate(agent, *args, **kwargs)

    monkeypatch.setattr(mtrl.train, "evaluate", evaluate_and_signal)
    assert train_main(["--resume", str(run), "--no-progress"]) == PREEMPTED
    monkeypatch.setattr(mtrl.train, "evaluate", evaluate)
    assert load_checkpoint(step_file(run, 100)).state["trainer"]["evaluation_pending"]
    assert_resumes_as_the_uninterrupted_run(run, straight, capsys)


def test_a_signal_in_the_burst_of_the_overlapped_collector(tmp_path, monkeypatch, capsys):
    """Under ``train.collector=overlap`` the burst runs while the env workers step: it stops after
    the update the signal came in, the workers' step is stored, and the checkpoint holds the
    updates still due (mid-episode: the resumed run starts new episodes, deterministically)."""
    run = tmp_path / "run"
    args = (*ARGS, "train.collector=overlap", "train.env_workers=1")
    update, calls = MTSAC.update, []

    def update_and_signal(agent, *args):
        calls.append(agent.updates)
        if agent.updates == 10:
            kill_self()
        return update(agent, *args)

    monkeypatch.setattr(MTSAC, "update", update_and_signal)
    assert train_main(tiny_mt1(300, run, *args)) == PREEMPTED
    monkeypatch.setattr(MTSAC, "update", update)
    assert_one_line_preemption(capsys.readouterr().err, "SIGTERM", 41)
    assert len(calls) == 11
    checkpoint = load_checkpoint(step_file(run, 41))
    assert checkpoint.state["trainer"]["pending_updates"] == 29
    assert not checkpoint.state["episode_boundary"]

    shutil.copytree(run, tmp_path / "again")
    for folder in (run, tmp_path / "again"):
        assert train_main(["--resume", str(folder), "--no-progress"]) == 0
    assert_same_checkpoint(step_file(run, 300), step_file(tmp_path / "again", 300))
    assert load_checkpoint(step_file(run, 300)).state["agent"]["updates"] == 40 + 300 - 41


def test_a_real_write_failure_of_the_os_is_one_line_and_resumes_exactly(straight, tmp_path):
    """The kernel refuses the write (a file size limit, ``RLIMIT_FSIZE``: EFBIG, as a full disk
    refuses with ENOSPC) in a separate process: torch's own error path, one line, status 5."""
    resource = pytest.importorskip("resource")
    run = tmp_path / "run"
    limit = 280_000  # the checkpoint at 100 (~264 kB) fits, the one at 200 (~298 kB) does not

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = subprocess.run(
        [sys.executable, "-m", TRAIN, *tiny_mt1(300, run, *ARGS)],
        capture_output=True,
        text=True,
        timeout=300,
        env=child_env(),
        preexec_fn=limit_file_size,
    )
    assert result.returncode == WRITE_FAILED, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"mtrl-train: error: cannot write '{step_file(run, 200)}': File too large [errno 27] "
        f"at step 200; the last intact checkpoint is {step_file(run, 100)}; once there is "
        f"space, continue with: mtrl-train --resume {run}"
    )
    assert sorted(p.name for p in checkpoint_dir(run).iterdir()) == [
        BEST_FILE,
        "step-0000000100.pt",
    ]
    resumed = run_module(TRAIN, "--resume", str(run), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_checkpoint(step_file(straight, 300), step_file(run, 300))
    assert without_timing(read_metrics(straight)) == without_timing(read_metrics(run))
