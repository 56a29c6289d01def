"""mtrl-train --surgery on real MT10 envs (smoke preset, a few hundred steps)."""

import math

import pytest
from helpers import MT10_TASKS, run_cli

from mtrl.config import load_config
from mtrl.logger import read_metrics

TOTAL, WARMUP = 400, 100


@pytest.mark.parametrize(
    "surgery,overrides,options",
    [
        ("pcgrad", [], {}),
        ("cagrad", ["surgery.options.c=0.9"], {"c": 0.9}),
        ("gradops", ["surgery.options.alpha=-1.0"], {"alpha": -1.0}),
    ],
)
def test_training_with_surgery_logs_sane_diagnostics(surgery, overrides, options, tmp_path):
    run = tmp_path / "run"
    result = run_cli(
        "mtrl-train",
        "--config",
        "smoke",
        "--surgery",
        surgery,
        "--total-steps",
        str(TOTAL),
        "--no-progress",
        "--out",
        str(run),
        f"train.warmup_steps={WARMUP}",
        "train.log_every=100",
        "train.eval_every=0",
        "train.final_eval_episodes=1",
        "surgery.diagnostics_every=5",
        *overrides,
    )
    assert result.returncode == 0, result.stderr
    config = load_config(str(run / "config.yaml"))
    assert (config.surgery.name, config.surgery.options) == (surgery, options)

    records = read_metrics(run)
    diagnosed = [r for r in records if "diag/critic/cos" in r]
    assert diagnosed, "diagnostics must reach metrics.jsonl"
    for r in diagnosed:
        for component in ("critic", "actor"):
            p = f"diag/{component}/"
            assert -1.0 <= r[p + "cos_min"] <= r[p + "cos"] <= 1.0
            assert 0.0 <= r[p + "cond_a"] <= r[p + "conflict"] <= 1.0
            assert 0.0 <= r[p + "gms_min"] <= r[p + "gms"] <= 1.0
            assert r[p + "update_norm_ratio"] > 0
            assert all(r[f"{p}norms/{task}"] >= 0 for task in MT10_TASKS)
            pair = f"{p}pair/{MT10_TASKS[0]}|{MT10_TASKS[9]}/"
            assert -1.0 <= r[pair + "cos"] <= 1.0 and r[pair + "xi"] >= 0
            assert math.isfinite(r[p + "curvature"])
        assert "diag/alpha/cos" not in r
    final = [r for r in records if r.get("final")]
    assert len(final) == 1 and 0.0 <= final[0]["eval/success"] <= 1.0
