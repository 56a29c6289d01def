import json

import pytest
import yaml
from helpers import MT10_TASKS, run_cli

from mtrl.cli import resolve_train_config, train_main, train_parser
from mtrl.config import available_presets, flatten, load_config, to_yaml


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
        (
            ["--benchmark", "mt20"],
            ["unknown benchmark 'mt20'", "allowed: mt10, mt25, mt50, a task set"],
        ),
        (["--benchmark", "mt1:fly-v3"], ["unknown Meta-World env 'fly-v3'", "reach-v3"]),
        (["--surgery", "magic"], ["unknown surgery 'magic'", "allowed: ", "none"]),
        (["--config", "nope"], ["unknown config preset 'nope'", "smoke"]),
        (["agent.width=3"], ["unknown config key 'agent.width'", "agent.hidden_dims"]),
        (["train.gamma=0.9"], ["unknown config key 'train.gamma'", "train.seed"]),
        (
            ["train.bach_size=64"],
            ["unknown config key 'train.bach_size' (did you mean agent.batch_size?)"],
        ),
        (["train.gamma=0.9"], ["(did you mean agent.gamma?)"]),
        (["trian.seed=1"], ["unknown config key 'trian' (did you mean train?)"]),
        (["--total-steps", "0"], ["train.total_steps must be > 0, got 0"]),
        (["--total-steps", "-100"], ["train.total_steps must be > 0, got -100"]),
        (["--seed", "abc"], ["argument --seed: invalid int value: 'abc'"]),
        (["--frobnicate"], ["unrecognized arguments: --frobnicate"]),
        (["--config", "smoke", "--total-steps", "105"], ["must be a multiple of the number"]),
        (["--protocol", "care"], ["unknown protocol 'care'", "allowed: none, mtrl, mwplus"]),
        (
            ["--benchmark", "mt1:reach-v3", "--protocol", "mwplus"],
            ["protocol 'mwplus' is defined for the suites (mt10, mt25, mt50) and task sets"],
        ),
        (["env.max_episode_steps=501"], ["env.max_episode_steps must be in 1..500"]),
        (
            ["--benchmark", "mt50:reach-v3,push-v3,reach-v3"],
            ["task(s) listed more than once: reach-v3"],
        ),
        (["--benchmark", "mt50:reach-v3,fly-v3"], ["unknown MT50 task(s) 'fly-v3'; MT50 tasks:"]),
        (["--balancer", "magic"], ["unknown balancer 'magic'", "allowed: none, famo, gradnorm"]),
        (
            ["--balancer", "famo", "balancer.options.beta=1"],
            ["unknown option(s) ['beta'] for balancer 'famo'", "gamma=0.001"],
        ),
        (["--balancer", "uw", "balancer.options.lr=-1"], ["option 'lr' must be a finite number"]),
        (
            ["--balancer", "uw", "balancer.components=[critic,actor]"],
            ["actor is refused", "positive losses"],
        ),
        (["--balancer", "famo", "balancer.components=[alpha]"], ["alpha is refused"]),
        (
            ["--balancer", "gradnorm", "--surgery", "nashmtl"],
            ["cannot both act on the critic", "ignores the scale of each task's gradient"],
        ),
        (["balancer.options.lr=1"], ["balancer.options are set but balancer.name is none"]),
        (
            ["train.compile=jit"],
            ["train.compile must be one of auto, none, inductor, cudagraph, got 'jit'"],
        ),
        (
            ["agent.model=transformer"],
            ["unknown model 'transformer' (agent.model)", "allowed: mlp, multihead, soft_mod"],
        ),
        (
            ["agent.model=care", "agent.model_options.experts=4"],
            ["agent.model_options: unknown option(s) ['experts'] for model 'care'", "num_exper"],
        ),
        (
            ["agent.model=moore", "agent.model_options.num_experts=0"],
            ["agent.model_options: option 'num_experts' must be an integer >= 1, got 0"],
        ),
        (
            ["agent.model=paco", "agent.multi_head=true"],
            ["agent.multi_head=true means agent.model=multihead and contradicts agent.model=paco"],
        ),
        (
            ["agent.task_embeddings=tasks.json"],
            ["agent.task_embeddings is set but agent.model=mlp does not read it"],
        ),
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
    flags = ("--benchmark", "--surgery", "--balancer", "--total-steps", "--device", "--out")
    for text in (*flags, "--config"):
        assert text in result.stdout
    for key in ("agent.hidden_dims", "agent.multi_head", "train.eval_every", "env.goal_mode"):
        assert key in result.stdout
    assert "presets (--config): " in result.stdout and "smoke" in result.stdout
    assert "famo (lr=0.025, gamma=0.001, min_loss=0.0)" in result.stdout
    assert "models (agent.model;" in result.stdout and "care (num_experts=4," in result.stdout


@pytest.mark.parametrize(
    "vectors,fragment",
    [
        ({"reach-v3": [0.5, 1.0]}, "has no vector for push-v3, pick-place-v3, door-open-v3"),
        (
            {task: [0.5] * (2 + (task == "push-v3")) for task in MT10_TASKS},
            "the vectors have different lengths (reach-v3: 2, push-v3: 3, pick-place-v3: 2",
        ),
    ],
)
def test_a_bad_task_embeddings_file_is_refused_before_training(vectors, fragment, tmp_path):
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(vectors))
    result = run_cli(
        "mtrl-train",
        "--config",
        "smoke",
        "agent.model=care",
        f"agent.task_embeddings={path}",
        "--out",
        str(tmp_path / "run"),
    )
    assert_usage_error(result, f"agent.task_embeddings '{path}'", fragment)
    assert not (tmp_path / "run").exists()


def _resolved(*argv: str):
    return resolve_train_config(train_parser().parse_intermixed_args(list(argv)))


def test_benchmark_spelling_chooses_the_preset_and_is_stored_lower_case():
    expected = _resolved("--benchmark", "mt50")
    assert expected.env.benchmark == "mt50" and expected.train.total_steps == 100_000_000
    for argv in (["--benchmark", "MT50"], ["env.benchmark=MT50"], ["env.benchmark=Mt50"]):
        assert _resolved(*argv) == expected, argv
    assert _resolved("--benchmark", "MT1:reach-v3").env.benchmark == "mt1:reach-v3"


def test_protocol_flag_sets_the_protocol():
    config = _resolved("--config", "mt10-pcgrad", "--protocol", "mwplus")
    assert config.train.protocol == "mwplus" and config.surgery.name == "pcgrad"
    assert (config.env.goal_mode, config.agent.grad_clip) == ("random", 1.0)


@pytest.mark.parametrize("preset", available_presets())
def test_print_config_resolves_every_preset_without_starting_a_run(
    preset, tmp_path, monkeypatch, capsys
):
    """``--print-config``: the config a run would start from, as YAML; nothing is written."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    assert train_main(["--config", preset, "--out", str(out), "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    expected = resolve_train_config(train_parser().parse_intermixed_args(["--config", preset]))
    assert flatten(printed) == flatten(yaml.safe_load(to_yaml(expected)))
    assert list(tmp_path.iterdir()) == []


def test_print_config_shows_flags_and_overrides(capsys):
    argv = ["--benchmark", "mt10", "--surgery", "pcgrad", "train.seed=7", "--print-config"]
    assert train_main(argv) == 0
    printed = flatten(yaml.safe_load(capsys.readouterr().out))
    assert printed["surgery.name"] == "pcgrad" and printed["train.seed"] == 7
    assert printed["agent.hidden_dims"] == load_config("mt10").agent.hidden_dims
