"""mtrl-train --resume: exact continuation after SIGKILL, preemption signals, refused inputs."""

import json
import shutil
import signal
import tarfile
from pathlib import Path

import pytest
import torch
from helpers import (
    TRAIN,
    assert_same_checkpoint,
    logged_after,
    run_module,
    snapshot,
    start_module,
    tiny_mt1,
    wait_for,
    without_timing,
)
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mtrl.checkpoint import BEST_FILE, load_checkpoint, step_file, train_checkpoints
from mtrl.cli import PREEMPTED, USAGE_ERROR, train_main
from mtrl.logger import read_metrics
from mtrl.rundir import processor_kind

# The smoke preset (real MT10), shrunk: 50-step episodes put an episode boundary every
# 10 x 50 = 500 env steps; a checkpoint at 1000, the run ends at 2000 (and checkpoints there).
SMOKE = [
    "--config",
    "smoke",
    "--total-steps",
    "2000",
    "--no-progress",
    "env.max_episode_steps=50",
    "train.warmup_steps=500",
    "train.eval_every=1000",
    "train.eval_episodes=1",
    "train.final_eval_episodes=1",
    "train.log_every=100",
    "checkpoint.every=1000",
]


@pytest.mark.slow
def test_sigkill_after_a_checkpoint_then_resume_equals_the_uninterrupted_run(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    reference = start_module(TRAIN, *SMOKE, "--out", str(straight), log=tmp_path / "a.log")
    victim = start_module(TRAIN, *SMOKE, "--out", str(killed), log=tmp_path / "b.log")
    first = step_file(killed, 1000)
    wait_for(lambda: first.exists() and logged_after(killed, 1000), victim, "the first checkpoint")
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    cut = read_metrics(killed)
    checkpointed = train_checkpoints(killed)[-1]
    assert cut[-1]["step"] > load_checkpoint(checkpointed).step, "lines to drop on resume"

    resumed = run_module(TRAIN, "--resume", str(killed), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert reference.wait(timeout=600) == 0, (tmp_path / "a.log").read_text()

    # Same parameters, optimizer moments, replay, RNG and env states, bit for bit.
    assert_same_checkpoint(step_file(straight, 2000), step_file(killed, 2000))
    assert_same_checkpoint(straight / "checkpoints" / BEST_FILE, killed / "checkpoints" / BEST_FILE)
    # The same metrics.jsonl: evaluation values exactly, no line of the killed run repeated.
    a, b = read_metrics(straight), read_metrics(killed)
    assert [r for r in a if "eval/success" in r] == [r for r in b if "eval/success" in r]
    assert without_timing(a) == without_timing(b)
    assert [r["step"] for r in b if "eval/success" in r] == [1000, 2000]
    meta = json.loads((killed / "meta.json").read_text())
    assert meta["resumed"][0]["from_step"] == load_checkpoint(checkpointed).step


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A complete tiny run: checkpoints at 100, 200 and the final 300; the last two kept."""
    run = tmp_path_factory.mktemp("tiny") / "run"
    result = run_module(
        TRAIN, *tiny_mt1(300, run, "checkpoint.every=100", "checkpoint.keep_last=2")
    )
    assert result.returncode == 0, result.stderr
    return run


@pytest.fixture
def resumable(finished_run, tmp_path):
    """The tiny run as if it had been killed after its checkpoint at step 200."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    step_file(run, 300).unlink()
    return run


def test_finished_run_keeps_the_last_checkpoints_and_the_best_agent(finished_run):
    steps = [load_checkpoint(p).step for p in train_checkpoints(finished_run)]
    assert steps == [200, 300], "keep_last=2 deleted the checkpoint at 100"
    assert load_checkpoint(step_file(finished_run, 300)).state["finished"]
    best = load_checkpoint(finished_run / "checkpoints" / BEST_FILE)
    evals = [r for r in read_metrics(finished_run) if "eval/success" in r]
    top = max(r["eval/success"] for r in evals)
    assert best.kind == "agent"
    assert best.step == next(r["step"] for r in evals if r["eval/success"] == top)


def test_resume_continues_to_the_end(resumable):
    result = run_module(TRAIN, "--resume", str(resumable), "--no-progress", "train.threads=1")
    assert result.returncode == 0, result.stderr
    assert "reach-v3" in result.stdout
    records = read_metrics(resumable)
    steps = [r["step"] for r in records if "train/updates" in r]
    assert steps == sorted(set(steps)), "no training line twice"
    assert records[-1]["step"] == 300 and records[-1]["final"] is True
    # tensorboard hides what the interrupted process logged after step 200 (purge_step)
    events = EventAccumulator(str(resumable))
    events.Reload()
    logged = [(e.step, e.value) for e in events.Scalars("train/critic_loss")]
    expected = [(r["step"], r["train/critic_loss"]) for r in records if "train/critic_loss" in r]
    assert [s for s, _ in logged] == [s for s, _ in expected]
    assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_preemption_signal_checkpoints_and_exits_3(tmp_path, signum):
    run = tmp_path / "run"
    process = start_module(TRAIN, *tiny_mt1(600, run, "checkpoint.every=0"), log=tmp_path / "log")
    wait_for(lambda: logged_after(run, 100), process, "training to start")
    process.send_signal(signum)
    assert process.wait(timeout=120) == PREEMPTED
    log = (tmp_path / "log").read_text()
    assert f"stopped by {signum.name}" in log and "--resume" in log
    assert "Traceback" not in log
    (latest,) = train_checkpoints(run)
    checkpoint = load_checkpoint(latest)
    assert not checkpoint.state["finished"] and checkpoint.step > 100
    assert all(r["step"] <= checkpoint.step for r in read_metrics(run))

    if signum == signal.SIGTERM:  # a mid-episode checkpoint resumes too (new episodes)
        result = run_module(TRAIN, "--resume", str(run), "--no-progress")
        assert result.returncode == 0, result.stderr
        assert read_metrics(run)[-1]["step"] == 600


def corrupt_truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def corrupt_flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def corrupt_foreign(path):
    torch.save({"model": torch.zeros(3)}, path)


def corrupt_newer(path):
    payload = torch.load(path, weights_only=True)
    torch.save({**payload, "version": 99}, path)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (corrupt_truncate, "truncated, corrupted or not a PyTorch file"),
        (corrupt_flip, "corrupted"),
        (corrupt_foreign, "not an mtrl checkpoint"),
        (corrupt_newer, "newer mtrl"),
    ],
    ids=["truncated", "flipped-bytes", "foreign", "newer-format"],
)
def test_damaged_latest_checkpoint_is_refused_and_nothing_changes(
    resumable, capsys, damage, message
):
    damage(step_file(resumable, 200))
    assert_refused(resumable, ["--resume", str(resumable)], message, capsys)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["train.seed=7"], "train.seed=7 (the run has 0) would change the experiment"),
        (["--total-steps", "600"], "train.total_steps=600"),
        (["--config", "smoke"], "--config cannot be given"),
        (["--out", "elsewhere"], "--out cannot be given"),
        (["train.nonsense=1"], "unknown config key"),
    ],
)
def test_overrides_that_change_the_experiment_are_refused(resumable, capsys, extra, message):
    assert_refused(resumable, ["--resume", str(resumable), *extra], message, capsys)


def test_finished_run_is_not_resumed(finished_run, capsys):
    assert_refused(finished_run, ["--resume", str(finished_run)], "already complete", capsys)


def test_folders_that_are_not_resumable_runs_are_refused(resumable, tmp_path, capsys):
    assert_refused(tmp_path, ["--resume", str(tmp_path / "nope")], "does not exist", capsys)
    (tmp_path / "empty").mkdir()
    assert_refused(tmp_path, ["--resume", str(tmp_path / "empty")], "not an mtrl run", capsys)
    shutil.rmtree(resumable / "checkpoints")
    assert_refused(resumable, ["--resume", str(resumable)], "no checkpoint to resume", capsys)


def assert_refused(folder, argv, message, capsys):
    before = snapshot(folder)
    assert train_main(argv) == USAGE_ERROR
    err = capsys.readouterr().err
    assert err.startswith("mtrl-train: error: ") and err.count("\n") == 1, err
    assert message in err
    assert snapshot(folder) == before, "a refused resume must not modify the run folder"


PAPER_SETTINGS = (
    "train.replay_sampling=uniform",
    "agent.batch_size=12",
    "agent.temperature=shared",
    "agent.task_input=false",
    "agent.model=multihead",
    "agent.model_options.head_hidden=8",
    "agent.init=xavier",
    "agent.log_std_squash=true",
    "agent.critic_reduction=mean",
    "agent.adam_eps=1e-5",
    "surgery.name=pcgrad",
    "train.warmup_updates=40",
    "train.eval_at_start=true",
    "train.eval_final=false",
)
"""The settings the paper presets add, on the tiny run: uniform draws, one temperature through
surgery, hidden heads, the update burst and an evaluation schedule whose final evaluation (at
200) comes before the end (300)."""


def test_resume_with_the_paper_settings_is_exact(tmp_path, capsys):
    """Killed after the checkpoint at 200, which follows the final evaluation: the resumed run
    ends as the uninterrupted one, bit for bit, and reports that evaluation's success."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    args = ("checkpoint.every=100", "checkpoint.keep_last=3", *PAPER_SETTINGS)
    assert train_main(tiny_mt1(300, straight, *args)) == 0
    table = capsys.readouterr().out.split("run folder:")[1].splitlines()[1:]
    shutil.copytree(straight, resumed)
    step_file(resumed, 300).unlink()  # resumes from 200 (what was logged later is dropped)
    assert train_main(["--resume", str(resumed), "--no-progress"]) == 0
    assert capsys.readouterr().out.split("run folder:")[1].splitlines()[1:] == table
    assert_same_checkpoint(step_file(straight, 300), step_file(resumed, 300))
    evals = [r for r in read_metrics(resumed) if "eval/success" in r]
    assert [(r["step"], bool(r.get("final"))) for r in evals] == [
        (0, False),
        (100, False),
        (200, True),
    ]
    assert without_timing(read_metrics(straight)) == without_timing(read_metrics(resumed))


LOSSES = ("train/critic_loss", "train/actor_loss", "train/alpha_loss", "train/q_target")
DATA = Path(__file__).parent / "data"


def mtrl_0_3_lines(tmp_path: Path) -> tuple[list[dict], bool]:
    """The lines 0.3.0 logged after the archived step-300 checkpoint, and whether they were
    logged on this kind of processor. ``expected.jsonl`` in the archive: 0.3.0's uninterrupted
    run on the machine that wrote it, whose kind was not recorded (taken to be
    GenuineIntel-AVX512: that machine had AMX units); ``mtrl-0.3.0-run-<kind>.jsonl``: 0.3.0
    (3c5a50e, the same packages) resumed from that checkpoint on another kind."""
    here = DATA / f"mtrl-0.3.0-run-{processor_kind()}.jsonl"
    if here.is_file():
        return [json.loads(line) for line in here.read_text().splitlines()], True
    expected = (tmp_path / "expected.jsonl").read_text().splitlines()
    return [json.loads(line) for line in expected], processor_kind() == "GenuineIntel-AVX512"


@pytest.mark.parametrize("compile_mode", ["none", "inductor"])
def test_a_run_stopped_under_mtrl_0_3_goes_on_as_it_did_there(tmp_path, compile_mode):
    """tests/data/mtrl-0.3.0-run.tar.gz: a run of mtrl 0.3.0 (two tasks, PCGrad with the
    diagnostics, 16 x 16 networks; written by the 0.3.0 release, commit 3c5a50e) as it stood at
    its step-300 checkpoint, and the lines 0.3.0 logged when that run went on to 600
    uninterrupted. Resumed by this version, the eager path continues it bit for bit as 0.3.0
    did on the same kind of processor (:func:`mtrl_0_3_lines`); the compiled path, and the
    eager one on a kind without 0.3.0's lines, load it too and continue within rounding (the
    losses within 1e-4 relative of 0.3.0's; about 1e-7 measured)."""
    with tarfile.open(DATA / "mtrl-0.3.0-run.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    run = tmp_path / "run"
    expected, same_kind = mtrl_0_3_lines(tmp_path)
    argv = ["--resume", str(run), "--no-progress", f"train.compile={compile_mode}"]
    assert train_main(argv) == 0
    resumed = [record for record in read_metrics(run) if record["step"] > 300]
    if compile_mode == "none" and same_kind:
        assert without_timing(resumed) == without_timing(expected)
        return
    assert [(r["step"], r.keys()) for r in resumed] == [(r["step"], r.keys()) for r in expected]
    pairs = zip(resumed, expected, strict=True)
    trained = [(got, want) for got, want in pairs if LOSSES[0] in want]
    assert trained
    for got, want in trained:
        for key in LOSSES:
            assert got[key] == pytest.approx(want[key], rel=1e-4), (want["step"], key)
