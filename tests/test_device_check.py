"""scripts/device_check.sh and its report, without a GPU: the plumbing (every step recorded, the
report written whatever fails) and the numbers the report derives from the steps' output."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import SOURCE_ROOT, child_env

SCRIPTS = SOURCE_ROOT / "scripts"
sys.path.insert(0, str(SCRIPTS))
import device_report  # noqa: E402


def write_step(work: Path, name: str, status: str, log: str = "") -> None:
    (work / f"{name}.status").write_text(status)
    (work / f"{name}.log").write_text(log)


JUNIT = """<testsuites><testsuite>
<testcase classname="tests.test_cuda" name="test_update_has_no_host_sync[none]"/>
<testcase classname="tests.test_cuda" name="test_replay_add_and_sample_have_no_host_sync">
  <failure message="boom"/></testcase>
<testcase classname="tests.test_cuda" name="{bitwise}"><skipped type="pytest.xfail"/></testcase>
<testcase classname="tests.test_api" name="test_cuda_matches_cpu[mgda]"><skipped/></testcase>
</testsuite></testsuites>"""


def test_report_from_the_steps_output(tmp_path, monkeypatch):
    write_step(tmp_path, "env", "0 3 30", '{"torch": "2.11.0", "gpu": "NVIDIA H200"}\n')
    write_step(tmp_path, "tests", "1 40 120")
    (tmp_path / "tests.xml").write_text(JUNIT.format(bitwise=device_report.BITWISE_TEST))
    write_step(tmp_path, "bench_update", "124 100 100", 'table\n{"mt10_plain_ms": 1.5}\nKilled')
    write_step(tmp_path, "train", "3 200 200")
    run = tmp_path / "train-run"
    run.mkdir()
    lines = [  # warm-up (no updates), then two intervals of 1000 env steps at 500 and 250 steps/s
        {"step": 1000, "train/steps_per_s": 900.0, "train/updates": 0.0},
        {"step": 2000, "train/steps_per_s": 800.0, "train/updates": 50.0},
        {"step": 2100, "eval/success": 0.0},
        {"step": 3000, "train/steps_per_s": 500.0, "train/updates": 150.0},
        {"step": 4000, "train/steps_per_s": 250.0, "train/updates": 250.0},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    report = tmp_path / "report.json"
    monkeypatch.setattr(sys, "argv", ["device_report.py", str(tmp_path), str(report), "321"])
    device_report.main()
    out = json.loads(report.read_text())
    assert out["elapsed_s"] == 321 and out["env"]["gpu"] == "NVIDIA H200"
    assert out["steps"]["env"]["ok"] and out["steps"]["train"]["ok"]  # SIGTERM: status 3
    assert out["steps"]["bench_update"]["timed_out"]
    assert out["steps"]["bench_update"]["log_tail"].endswith("Killed")
    assert out["bench_update"] == {"mt10_plain_ms": 1.5}
    tests = out["tests"]
    assert (tests["passed"], tests["failed"], tests["skipped"]) == (1, 1, 2)
    assert tests["failures"] == ["tests.test_cuda::test_replay_add_and_sample_have_no_host_sync"]
    assert tests["captured_update_bitwise_equal"] is False
    train = out["train"]
    assert train["measured_seconds"] == 6.0  # 1000 / 500 + 1000 / 250
    assert train["transitions_per_s"] == round(2000 / 6, 1)
    assert train["updates_per_s"] == round(200 / 6, 1)


@pytest.mark.skipif(sys.platform != "linux", reason="uses GNU timeout")
@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the steps run instead of failing")
def test_device_check_writes_its_report_when_the_steps_fail(tmp_path):
    """Without a GPU the benchmarks and the training fail fast and the CUDA tests skip: every
    step must still be recorded and the report written."""
    report = tmp_path / "out" / "report.json"
    env = child_env(DEVICE_CHECK_TRAIN_SECONDS="5", PYTHON=sys.executable)
    result = subprocess.run(
        ["bash", str(SCRIPTS / "device_check.sh"), str(report)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(report.read_text())
    assert {"env", "tests", "bench_update", "bench_surgery", "train"} <= set(out["steps"])
    assert out["env"]["cuda_available"] is False
    assert out["tests"]["failed"] == 0 and out["tests"]["skipped"] > 0
    assert not out["steps"]["train"]["ok"] and "CUDA" in out["steps"]["train"]["log_tail"]
