"""Every file in scripts/ runs, in its quickest mode (issue 22: scripts cannot rot).

``QUICK`` maps each script to its quick command line and a check of what it printed; a script
without an entry fails ``test_every_script_has_a_quick_run``. Each runs as a subprocess (this
checkout's ``mtrl``, one thread) from a temporary folder. What CI cannot do (a GPU, the network)
gets the closest check it can: see the entries of device_check.sh, device_report.py and
device_wheels.sh.
"""

from __future__ import annotations

import configparser
import json
import re
import shlex
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import pytest
from helpers import SOURCE_ROOT, child_env

from mtrl import balancers
from mtrl.config import Config

SCRIPTS = SOURCE_ROOT / "scripts"
TESTS = Path(__file__).resolve().parent


class Quick(NamedTuple):
    args: list[str]
    """Arguments after the script; ``{tmp}`` is the test's temporary folder."""
    check: Callable[[str, Path], None]
    """Called with the script's stdout and the temporary folder."""


def last_json(out: str) -> dict:
    """The JSON object the script prints as its last line."""
    return json.loads(out.strip().splitlines()[-1])


def check_bench_update(out: str, tmp: Path) -> None:
    summary = last_json(out)
    assert summary["mt10_plain_ms"] > 0
    assert set(summary["mt10_ratio"]) == {"none", "pcgrad", "none+bf16", "pcgrad+bf16"}
    assert set(summary["mt10_models_ms"]) == {"mlp/none", "mlp/pcgrad"}
    assert summary["mt10_vmap_over_plain_backward"] > 0
    assert set(summary["mt10_adam_ms"]) == {
        "single-tensor",
        "foreach",
        "fused",
        "fused, denormals",
        "fused, flushed",
    }


def check_bench_balancers(out: str, tmp: Path) -> None:
    names = balancers.available()
    expected = {"plain", "pcgrad", *names, *(f"{name}+pcgrad" for name in names)}
    assert set(last_json(out)["mt10_ratio"]) == expected


def check_bench_diagnostics(out: str, tmp: Path) -> None:
    results = last_json(out)
    assert len(results) == 4  # two settings, none and pcgrad
    assert all(r["update_ms"] > 0 and r["diagnostic_update_ms"] > 0 for r in results.values())


def check_bench_envs(out: str, tmp: Path) -> None:
    summary = last_json(out)
    assert set(summary) == {"mt1:reach-v3_ms", "mt50:reach-v3,push-v3_ms", "ratio"}
    assert "(ideal for 2x the envs: 2x)" in out


def check_bench_loop(out: str, tmp: Path) -> None:
    summary = last_json(out)
    for collector in ("serial", "overlap"):
        assert summary[f"{collector} loop"] > 0 and summary[f"{collector} update"] > 0
    assert summary["overlap/serial"] > 0


def check_bench_surgery(out: str, tmp: Path) -> None:
    ratios = last_json(out)
    assert {"pcgrad@K10_P1e+05_ms", "per_task_helper_over_plain_backward"} <= set(ratios)
    assert set(ratios["goals"]) >= {"per_task_helper_le_1.3x"}


def check_bench_throughput(out: str, tmp: Path) -> None:
    summary = last_json(out)
    for phase in ("policy", "random"):  # the twin envs followed the collector's trajectory
        assert summary[f"{phase}_collector"] > 0 and summary[f"{phase}_bare"] > 0
    assert summary["update_ms_1_threads"] > 0


def check_bench_train(out: str, tmp: Path) -> None:
    row = last_json(out)["pcgrad-fig4/pcgrad"]
    assert row["compile=none"] > 0 and row["inductor"] > 0
    assert row["update_ms"] > 0 and row["floor_ms"] > 0


def check_cagrad_reference(out: str, tmp: Path) -> None:
    for solver in ("exact", "device"):
        assert f"{solver} solver, 2 problems [50, 1000], c = 0.5:" in out
    assert out.count("problems with a dual KKT residual > 1e-8: 0 []") == 2


def check_table_row(preset: str, cells: int) -> Callable[[str, Path], None]:
    """A markdown table with one row for ``preset``, of ``cells`` cells."""

    def check(out: str, tmp: Path) -> None:
        rows = [line for line in out.splitlines() if line.startswith(f"| {preset}")]
        assert len(rows) == 1, out
        assert rows[0].count("|") == cells + 1

    return check


def check_toy_2d(out: str, tmp: Path) -> None:
    assert (tmp / "toy.png").stat().st_size > 0
    assert len(re.findall(r"^gradops alpha=", out, re.MULTILINE)) == 9  # 3 alphas x 3 starts


def run_script(name: str, args: list[str], tmp: Path) -> str:
    """Its stdout, run from ``tmp`` with ``OUT`` set to ``tmp/out``; a non-zero exit fails."""
    program = [sys.executable] if name.endswith(".py") else ["bash"]
    result = subprocess.run(
        [*program, str(SCRIPTS / name), *args],
        capture_output=True,
        text=True,
        cwd=tmp,
        env=child_env(OUT=str(tmp / "out"), PYTHON=sys.executable),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def planned_runs(out: str) -> dict[str, Config]:
    """``study_pcgrad.sh plan``'s lines as run name -> the config mtrl-train would resolve."""
    from mtrl.cli import resolve_train_config, train_parser

    runs = {}
    for line in out.splitlines():
        name, *args = shlex.split(line)
        runs[name] = resolve_train_config(train_parser().parse_intermixed_args(args))
    return runs


def check_study_plan(out: str, tmp: Path) -> None:
    """The plan: 75 runs, each resolving to a valid config; the controls get the pair's budget
    per task, the long controls the same settings for longer, the pair at item c's budget
    otherwise as Figure 4; Figure 3's ablations are MT10's runs with another surgery or the
    balancer; the archived runs are the planned ones (the study is complete: on a fresh checkout
    `all` restores them and starts nothing). The compile check, planned only when named, is the
    archived seed 0's config without the probe batch. Nothing started or written."""
    runs = planned_runs(out)
    assert len(runs) == len(out.splitlines()) == 10 + 20 + 5 + 10 + 15 + 15
    pair, alone = runs["fig4-none-s0"].train, runs["ctl-reach-s0"].train
    for key in ("total_steps", "warmup_steps", "buffer_size", "eval_every"):
        assert getattr(alone, key) * 2 == getattr(pair, key), key
    long = runs["long-button-press-topdown-s0"]
    assert long.train.total_steps == 5 * alone.total_steps
    assert replace(long.train, total_steps=alone.total_steps) == alone
    archive = SOURCE_ROOT / "docs/results/pcgrad-study-runs.tar.gz"
    with tarfile.open(archive) as tar:
        archived = {Path(name).parts[0] for name in tar.getnames()}
    assert archived == set(runs)
    (check,) = planned_runs(run_script("study_pcgrad.sh", ["plan", "check"], tmp)).values()
    seed0 = runs["fig4-none-s0"]
    assert check.surgery.diagnostics_batch == 0 and seed0.surgery.diagnostics_batch == 512
    assert replace(check, surgery=seed0.surgery) == seed0
    longpair, fig4 = runs["longpair-pcgrad-s0"], runs["fig4-pcgrad-s0"]
    assert longpair.train.total_steps == 2 * 200_000
    assert replace(longpair.train, total_steps=fig4.train.total_steps) == fig4.train
    assert replace(longpair.surgery, diagnostics_batch=512) == fig4.surgery
    mt10 = runs["mt10-none-s0"]
    for ablation in ("pcgrad_direction", "pcgrad_magnitude"):
        fig3 = runs[f"fig3-{ablation}-s0"]
        assert fig3.surgery.name == ablation
        assert replace(fig3, surgery=mt10.surgery) == mt10
    gradnorm = runs["fig3-gradnorm-s0"]
    assert replace(gradnorm, balancer=mt10.balancer) == mt10 != gradnorm
    assert not (tmp / "out").exists()


IMAGE = {"torch", "numpy", "scipy", "pyyaml", "tqdm", "tensorboard"}
"""What the GPU node's image holds of mtrl's requirements (scripts/device_wheels.sh)."""


def check_wheels(out: str, tmp: Path) -> None:
    """The download command, and a wheel for each of mtrl's requirements the node lacks."""
    words = out.split()
    assert words[1:4] == ["-m", "pip", "download"]
    wheels = {w.split("==")[0].lower() for w in words if "==" in w}
    setup = configparser.ConfigParser()
    setup.read(SOURCE_ROOT / "setup.cfg")
    requires = setup["options"]["install_requires"].split()
    names = {re.split(r"[\[<>=!~; ]", r)[0].lower() for r in requires}
    assert names - IMAGE <= wheels


QUICK: dict[str, Quick | str] = {
    "bench_balancers.py": Quick(["--quick"], check_bench_balancers),
    "bench_diagnostics.py": Quick(["--quick"], check_bench_diagnostics),
    # building MT50's 50 envs takes a minute: a one-task and a two-task set instead
    "bench_envs.py": Quick(
        ["--quick", "--benchmarks", "mt1:reach-v3", "mt50:reach-v3,push-v3"], check_bench_envs
    ),
    "bench_loop.py": Quick(["--quick", "--config", "pcgrad-fig4"], check_bench_loop),
    "bench_surgery.py": Quick(["--quick"], check_bench_surgery),
    "bench_throughput.py": Quick(["--quick", "--config", "pcgrad-fig4"], check_bench_throughput),
    "bench_train.py": Quick(["--quick"], check_bench_train),
    "bench_update.py": Quick(
        ["--quick", "--benchmarks", "mt10", "--methods", "pcgrad", "--models", "mlp", "--bf16"],
        check_bench_update,
    ),
    "cagrad_reference.py": Quick(["--problems", "2"], check_cagrad_reference),
    "checkpoint_size.py": Quick(
        ["--quick", "--presets", "pcgrad-fig4", "--dir", "{tmp}"], check_table_row("pcgrad-fig4", 8)
    ),
    # needs a GPU: run without one (the steps fail fast, the report is still written)
    "device_check.sh": (
        "test_device_check.py::test_device_check_writes_its_report_when_the_steps_fail"
    ),
    # its CPU part (the report from the steps' output), in-process
    "device_report.py": "test_device_check.py::test_report_from_the_steps_output",
    # downloads from the network: the command it would run, checked against setup.cfg
    "device_wheels.sh": Quick(["--dry-run"], check_wheels),
    "preemption_latency.py": Quick(
        ["--quick", "--presets", "pcgrad-fig4"], check_table_row("`pcgrad-fig4`", 8)
    ),
    # starts 75 training runs: its plan only (``OUT`` set to a folder that must stay absent)
    "study_pcgrad.sh": Quick(["plan", "all"], check_study_plan),
    "toy_2d.py": Quick(["--steps", "50", "--out", "{tmp}/toy.png"], check_toy_2d),
}
"""Script -> its quick run; or, for a script another test runs, ``FILE::TEST``."""


def test_every_script_has_a_quick_run():
    assert set(QUICK) == {path.name for path in SCRIPTS.iterdir() if path.is_file()}


@pytest.mark.parametrize("name", sorted(QUICK))
def test_script_runs_in_its_quick_mode(name, tmp_path):
    quick = QUICK[name]
    if isinstance(quick, str):  # run by another test: that test must exist
        file, test = quick.split("::")
        assert re.search(rf"^def {test}\(", (TESTS / file).read_text(), re.MULTILINE)
        return
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in quick.args]
    quick.check(run_script(name, args, tmp_path), tmp_path)
