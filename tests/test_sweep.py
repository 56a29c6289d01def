"""mtrl-sweep: the grid, validation before submitting, SLURM batch scripts, real local jobs."""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import threading
import time
from pathlib import Path

import pytest

import mtrl.cli
from mtrl import sweep
from mtrl.analysis.cli import report_main
from mtrl.envs import parse_benchmark
from mtrl.logger import read_metrics
from mtrl.sweep import (
    PREEMPTED,
    RunJob,
    SweepError,
    build_plan,
    load_executor_options,
    parse_mem,
    parse_method,
    parse_seeds,
    parse_time,
    sweep_main,
)

# A run of a few seconds: one Meta-World task, tiny networks, 50-step episodes.
TINY = [
    "--config",
    "smoke",
    "train.total_steps=200",
    "train.warmup_steps=100",
    "train.eval_every=100",
    "train.eval_episodes=1",
    "train.final_eval_episodes=1",
    "train.log_every=100",
    "env.max_episode_steps=50",
]


@pytest.fixture
def three_methods(monkeypatch):
    """Pretend the surgery library offers pcgrad and cagrad (only `none` may exist yet)."""
    monkeypatch.setattr(mtrl.cli, "surgery_choices", lambda: ["none", "pcgrad", "cagrad"])
    monkeypatch.setattr(sweep, "surgery_choices", lambda: ["none", "pcgrad", "cagrad"])


# --------------------------------------------------------------------------- parsing
def test_method_specs():
    m = parse_method("cagrad:c=0.5,rescale=1")
    assert (m.name, m.options) == ("cagrad", (("c", "0.5"), ("rescale", "1")))
    assert m.parsed_options == {"c": 0.5, "rescale": 1}
    assert m.overrides == ["surgery.options.c=0.5", "surgery.options.rescale=1"]
    assert m.label == "cagrad-c0.5-rescale1"
    assert parse_method("none").overrides == []
    for bad in ("cagrad:c", ":c=1", "cagrad:c=1,c=2", "cagrad:1x=2"):
        with pytest.raises(SweepError):
            parse_method(bad)


def test_seeds_time_mem():
    assert parse_seeds(["0-3", "7,9", "2"]) == [0, 1, 2, 3, 7, 9]
    with pytest.raises(SweepError):
        parse_seeds(["3-1"])
    assert parse_time(90) == 90
    assert parse_time("1:30:00") == 90
    assert parse_time("2-00:00:00") == 2880
    assert parse_time("5:30") == 6  # Slurm's minutes:seconds, rounded up
    assert parse_mem("32G") == "32G"
    assert parse_mem("16gb") == "16G"
    assert parse_mem(8) == "8G"
    assert parse_mem("1.5G") == "1536M"
    for bad_time in ("soon", "0", "1:2:3:4"):
        with pytest.raises(SweepError):
            parse_time(bad_time)
    with pytest.raises(SweepError):
        parse_mem("lots")


# --------------------------------------------------------------------------- the plan
def test_plan_is_the_full_grid_with_validated_configs(tmp_path, three_methods):
    plan = build_plan(
        tmp_path,
        ["mt10", "mt1:reach-v3"],
        ["none", "pcgrad", "cagrad:c=0.5"],
        ["0-1"],
        overrides=["agent.batch_per_task=64"],
        vary=["agent.actor_lr=[0.001,0.0003]"],
    )
    assert len(plan) == 2 * 3 * 2 * 2
    names = [r.name for r in plan]
    assert len(set(names)) == len(names)
    run = next(r for r in plan if r.name == "mt10-cagrad-c0.5-actor_lr0.001-s1")
    assert run.config.surgery.name == "cagrad"
    assert run.config.surgery.options == {"c": 0.5}
    assert run.config.train.seed == 1
    assert run.config.agent.actor_lr == 0.001
    assert run.config.agent.batch_per_task == 64
    assert run.config.agent.hidden_dims == [400, 400, 400]  # the mt10 preset, as mtrl-train
    assert run.argv[run.argv.index("--out") + 1] == str(tmp_path.resolve() / run.name)


def test_task_sets_sweep_like_suites_with_safe_folder_names(tmp_path):
    many = ",".join(parse_benchmark("mt10").task_names)
    plan = build_plan(
        tmp_path, ["mt50:reach-v3,push-v3", f"mt50:{many}"], ["none"], ["0"], config="smoke"
    )
    names = [r.name for r in plan]
    assert names[0] == "mt50-reach-v3-push-v3-none-s0"
    assert len(names[1]) < 80 and names[1].startswith("mt50-reach-v3-push-v3-pick-place-v3")
    assert plan[0].config.env.benchmark == "mt50:reach-v3,push-v3"
    assert plan[1].argv[plan[1].argv.index("--benchmark") + 1] == f"mt50:{many}"


def test_bad_grid_fails_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "sweep"
    rc = sweep_main(
        ["--out", str(out), "--benchmarks", "mt10", "mt7", "--methods", "none", "nosuch",
         "--executor", "local", "train.seed=3"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2
    assert "unknown benchmark 'mt7'" in err
    assert "unknown surgery method 'nosuch'" in err
    assert "train.seed is set by the sweep grid" in err
    assert "nothing submitted" in err
    assert not out.exists()


def test_step_counts_are_checked_per_benchmark(tmp_path):
    with pytest.raises(SweepError, match="multiple of the number of tasks"):
        build_plan(tmp_path, ["mt10"], ["none"], ["0"], overrides=["train.total_steps=105"])


def test_dry_run_prints_the_plan_and_submits_nothing(tmp_path, capsys, three_methods):
    out = tmp_path / "sweep"
    rc = sweep_main(
        ["--out", str(out), "--benchmarks", "mt10", "--methods", "none", "pcgrad",
         "cagrad:c=0.5", "--seeds", "0-9", "--partition", "gpu", "--gpus", "1", "--time",
         "24:00:00", "--dry-run"]
    )  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0
    assert "30 runs" in text
    assert "mt10-cagrad-c0.5-s9" in text
    assert "30 to submit" in text and "nothing submitted" in text
    assert not out.exists()


def test_executor_options_from_file_and_flags(tmp_path):
    config = tmp_path / "cluster.yaml"
    config.write_text(
        "partition: gpu\ngpus: 1\ntime: '12:00:00'\nmem: 32G\naccount: proj\n"
        "setup: [module load apptainer]\ncontainer: {image: /img/mtrl.sif, binds: [/data]}\n"
    )
    opts = load_executor_options(config, {"partition": "long", "cpus": 8})
    assert (opts.partition, opts.cpus, opts.time, opts.mem) == ("long", 8, 720, "32G")
    python = opts.python_command(Path("/sweep"))
    assert python == (
        "apptainer exec --nv --bind /sweep --bind /data /img/mtrl.sif /opt/venv/bin/python"
    )
    config.write_text("partiton: gpu\ntime: 60\n")
    with pytest.raises(SweepError, match="unknown keys partiton"):
        load_executor_options(config, {})
    with pytest.raises(SweepError, match="time limit"):
        load_executor_options(None, {"executor": "slurm"})


# --------------------------------------------------------------------------- SLURM, faked
def _fake_slurm(bin_dir: Path, job_id: int, sacct_states: dict[str, str] | None = None) -> None:
    """sbatch that accepts any script and answers like SLURM; srun so submitit sees a cluster."""
    bin_dir.mkdir(exist_ok=True)
    scripts = {
        "sbatch": f'#!/bin/sh\necho "Submitted batch job {job_id}"\n',
        "srun": "#!/bin/sh\nexit 1\n",
    }
    if sacct_states is not None:
        rows = "\\n".join(f"{k}|{v}|node1" for k, v in sacct_states.items())
        scripts["sacct"] = f'#!/bin/sh\nprintf "JobID|State|NodeList\\n{rows}\\n"\n'
    for name, text in scripts.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_slurm_job_array_with_container(tmp_path, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    _fake_slurm(bin_dir, 4242)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "sweep"
    args = ["--out", str(out), "--benchmarks", "mt1:reach-v3", "--methods", "none", "--seeds",
            "0-1", "--partition", "gpu", "--gpus", "1", "--cpus", "4", "--time", "1:30:00",
            "--mem", "16G", "--account", "proj", "--max-parallel", "2",
            "--container-image", "/img/mtrl.sif", "--container-bind", "/data", *TINY]  # fmt: skip
    assert sweep_main(args) == 0
    assert "submitted SLURM job 4242" in capsys.readouterr().out

    manifest = json.loads((out / "manifest.json").read_text())
    ids = sorted(r["submissions"][-1]["job_id"] for r in manifest["runs"].values())
    assert ids == ["4242_0", "4242_1"]
    (script,) = (out / "submitit").rglob("*_submission.sh")
    text = script.read_text()
    for line in ("--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=4", "--time=90",
                 "--mem=16G", "--account=proj", "--array=0-1%2", "--signal=USR2@90"):  # fmt: skip
        assert f"#SBATCH {line}" in text, line
    wrapper = f"apptainer exec --nv --bind {out} --bind /data /img/mtrl.sif /opt/venv/bin/python"
    assert f"{wrapper} -u -m submitit.core._submit" in text

    # Re-running while SLURM still has the jobs: nothing is submitted twice.
    _fake_slurm(bin_dir, 4343, {"4242_0": "RUNNING", "4242_1": "PENDING"})
    assert sweep_main([*args, "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert text.count("skip: queued or running") == 2 and "0 to submit" in text
    # ... and a queued job with other arguments is an error, not a silent double.
    assert sweep_main([*args, "train.log_every=50"]) == 2
    assert "still queued or running with other arguments" in capsys.readouterr().err


def test_without_slurm_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun
    rc = sweep_main(["--out", str(tmp_path / "s"), "--benchmarks", "mt10", "--methods", "none",
                     "--time", "60"])  # fmt: skip
    assert rc == 2
    assert "--executor local" in capsys.readouterr().err


def test_without_submitit_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)
    rc = sweep_main(["--out", str(tmp_path / "s"), "--benchmarks", "mt1:reach-v3", "--methods",
                     "none", "--executor", "local", *TINY])  # fmt: skip
    assert rc == 2
    assert "pip install 'mtrl[cluster]'" in capsys.readouterr().err


# --------------------------------------------------------------------------- the job
def test_job_requeues_on_the_trainers_preemption_status(tmp_path, monkeypatch):
    """Exit status PREEMPTED -> submitit's handler (checkpoint + requeue) is invoked."""
    calls = []
    monkeypatch.setattr(mtrl.cli, "train_main", lambda argv: calls.append(argv) or PREEMPTED)
    requeued = []
    previous = signal.signal(signal.SIGUSR2, lambda *a: requeued.append(a))
    try:
        job = RunJob(str(tmp_path / "run"), ["--out", str(tmp_path / "run")])
        assert job() == PREEMPTED
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert requeued and calls == [["--out", str(tmp_path / "run")]]
    again = job.checkpoint().function
    assert isinstance(again, RunJob) and again.argv == job.argv


def test_job_resumes_an_unfinished_run(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("partial attempt\n")
    calls = []
    monkeypatch.setattr(mtrl.cli, "train_main", lambda argv: calls.append(argv) or 0)
    assert RunJob(str(run), ["--out", str(run)])() == 0
    assert calls == [["--resume", str(run)]]

    # No checkpoint to resume from (a usage error): restart from scratch, the attempt kept aside.
    calls.clear()
    statuses = iter([mtrl.cli.USAGE_ERROR, 0])
    monkeypatch.setattr(mtrl.cli, "train_main", lambda argv: calls.append(argv) or next(statuses))
    assert RunJob(str(run), ["--out", str(run)])() == 0
    assert calls == [["--resume", str(run)], ["--out", str(run)]]
    (aside,) = (tmp_path / ".incomplete").iterdir()
    assert (aside / "config.yaml").read_text() == "partial attempt\n"


def test_preemption_signal_goes_to_the_trainer_when_it_has_a_handler(tmp_path, monkeypatch):
    """While training, submitit's USR2 reaches the trainer's SIGTERM handler (a clean stop)."""
    seen = []

    def trainer(argv):
        before = signal.signal(signal.SIGTERM, lambda *a: seen.append("trainer"))
        try:
            signal.raise_signal(signal.SIGUSR2)  # what SLURM sends before the time limit
        finally:
            signal.signal(signal.SIGTERM, before)
        return 0

    monkeypatch.setattr(mtrl.cli, "train_main", trainer)
    previous = signal.signal(signal.SIGUSR2, lambda *a: seen.append("submitit"))
    try:
        assert RunJob(str(tmp_path / "run"), [])() == 0
        signal.raise_signal(signal.SIGUSR2)  # after training: submitit's handler again
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert seen == ["trainer", "submitit"]


def test_job_failure_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(mtrl.cli, "train_main", lambda argv: 2)
    with pytest.raises(RuntimeError, match="exited with status 2"):
        RunJob(str(tmp_path / "run"), [])()


# --------------------------------------------------------------------------- real local jobs
def _task_pid(controller_pid: int) -> int | None:
    """The job process started by submitit's local controller (its child)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == controller_pid:
                return int(entry.name)
    return None


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the job's process in /proc")
def _logged(run: Path) -> bool:
    return (run / "metrics.jsonl").exists() and bool(read_metrics(run))


def test_local_executor_two_real_runs_one_preempted(tmp_path, monkeypatch, capsys):
    """Two tiny runs through submitit's local executor; one is preempted (USR2) mid-run: it
    checkpoints, is requeued and resumes; both finish; a second sweep skips them; mtrl-report
    reads them."""
    # The jobs must import this checkout's mtrl, also where the venv's mtrl is another one.
    root = str(Path(mtrl.cli.__file__).resolve().parent.parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "sweep"
    # 600 steps (500 updates): a few seconds in which to preempt one run, even on a fast machine.
    longer = [a if a != "train.total_steps=200" else "train.total_steps=600" for a in TINY]
    args = ["--out", str(out), "--benchmarks", "mt1:reach-v3", "--methods", "none", "--seeds",
            "0-1", "--executor", "local", "--max-parallel", "2", *longer]  # fmt: skip
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("rc", sweep_main(args)), daemon=True)
    thread.start()

    victim = out / "mt1-reach-v3-none-s1"
    deadline = time.monotonic() + 240
    # A first log line: the loop runs, so its preemption handlers are installed (a signal that
    # comes while the trainer is still being built ends the process, as before the loop).
    while not _logged(victim) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _logged(victim), "the run never started"
    manifest = json.loads((out / "manifest.json").read_text())
    controller = int(manifest["runs"][victim.name]["submissions"][-1]["job_id"])
    task = _task_pid(controller)
    assert task is not None and not sweep.is_finished(victim), "too late to preempt"
    os.kill(task, signal.SIGUSR2)  # what SLURM sends before the time limit

    thread.join(timeout=300)
    assert not thread.is_alive(), "the sweep did not end"
    text = capsys.readouterr().out
    assert result["rc"] == 0, text
    assert sweep.is_finished(out / "mt1-reach-v3-none-s0")
    assert sweep.is_finished(victim)
    assert not (out / ".incomplete").exists(), "resumed, not restarted"
    assert "resumed" in json.loads((victim / "meta.json").read_text())
    log = "".join(p.read_text() for p in (out / "submitit").rglob("*_log.*"))
    assert "Requeued" in log and f"resuming {victim}" in log

    assert sweep_main([*args, "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert text.count("skip: finished") == 2 and "0 to submit" in text

    # The report takes the sweep folder: two seeds of one method.
    assert report_main([str(out), "--out", str(tmp_path / "report"), "--no-plots"]) == 0
    rows = (tmp_path / "report" / "results.csv").read_text().splitlines()
    assert len(rows) == 2 and ",2,0 1," in rows[1]
