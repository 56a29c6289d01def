import pytest
from helpers import run_cli


def assert_usage_error(result, *fragments: str) -> None:
    """Exit 2, exactly one line on stderr naming the problem, nothing on stdout, no traceback."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mtrl-train: error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["--benchmark", "mt20"], ["unknown benchmark 'mt20'", "allowed: mt10, mt50, mt1:"]),
        (["--benchmark", "mt1:fly-v3"], ["unknown Meta-World env 'fly-v3'", "reach-v3"]),
        (["--surgery", "magic"], ["unknown surgery 'magic'", "allowed: ", "none"]),
        (["--config", "nope"], ["unknown config preset 'nope'", "smoke"]),
        (["agent.width=3"], ["unknown config key 'agent.width'", "agent.hidden_dims"]),
        (["train.gamma=0.9"], ["unknown config key 'train.gamma'", "train.seed"]),
        (["--total-steps", "0"], ["train.total_steps must be > 0, got 0"]),
        (["--total-steps", "-100"], ["train.total_steps must be > 0, got -100"]),
        (["--seed", "abc"], ["argument --seed: invalid int value: 'abc'"]),
        (["--frobnicate"], ["unrecognized arguments: --frobnicate"]),
        (["--config", "smoke", "--total-steps", "105"], ["must be a multiple of the number"]),
        (["train.compile=jit"], ["train.compile must be none or cudagraph, got 'jit'"]),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(args, fragments, tmp_path):
    result = run_cli("mtrl-train", *args, "--out", str(tmp_path / "run"))
    assert_usage_error(result, *fragments)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_unwritable_out_is_refused(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = run_cli("mtrl-train", "--config", "smoke", "--out", str(blocker / "run"))
    assert_usage_error(result, "cannot write to --out", str(blocker / "run"))


def test_existing_run_folder_is_never_overwritten(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 5}\n')
    result = run_cli("mtrl-train", "--config", "smoke", "--out", str(run))
    assert_usage_error(result, "already exists and is not empty")
    assert (run / "metrics.jsonl").read_text() == '{"step": 5}\n'
    assert sorted(p.name for p in run.iterdir()) == ["metrics.jsonl"]


def test_help_documents_flags_config_values_and_presets():
    result = run_cli("mtrl-train", "--help")
    assert result.returncode == 0
    for text in ("--benchmark", "--surgery", "--total-steps", "--device", "--out", "--config"):
        assert text in result.stdout
    for key in ("agent.hidden_dims", "agent.multi_head", "train.eval_every", "env.goal_mode"):
        assert key in result.stdout
    assert "presets (--config): " in result.stdout and "smoke" in result.stdout
