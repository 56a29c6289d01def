"""mtrl-eval: the success table of a saved agent, its JSON, videos, and refused inputs."""

import json

import pytest
import torch
from helpers import EVAL, TRAIN, run_module, snapshot, tiny_mt1

from mtrl.checkpoint import BEST_FILE, step_file
from mtrl.cli import USAGE_ERROR
from mtrl.eval_cli import eval_main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval") / "run"
    result = run_module(TRAIN, *tiny_mt1(200, folder, "checkpoint.every=100"))
    assert result.returncode == 0, result.stderr
    return folder


def test_prints_a_table_and_writes_json_deterministically(run, tmp_path, capsys):
    outputs = []
    for name in ("a.json", "b.json"):
        assert (
            eval_main([str(run), "--episodes", "3", "--seed", "4", "--json", str(tmp_path / name)])
            == 0
        )
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    lines = outputs[0].splitlines()
    assert lines[0].startswith(f"checkpoint: {step_file(run, 200)} (step 200")
    assert "seed 4, 3 episodes per task" in lines[1]
    assert lines[2].split() == ["task", "success", "return", "episodes"]
    assert lines[3].split()[0] == "reach-v3" and lines[3].split()[-1] == "3"
    assert lines[4].split()[0] == "mean"
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert a == b
    assert a["episodes"] == 3 and a["seed"] == 4 and a["step"] == 200
    assert set(a["success"]) == {"reach-v3"} and 0.0 <= a["mean_success"] <= 1.0


def test_best_agent_checkpoint_and_another_benchmark(run, capsys):
    best = run / "checkpoints" / BEST_FILE
    assert eval_main([str(best), "--episodes", "1", "--benchmark", "mt1:push-v3"]) == 0
    out = capsys.readouterr().out
    assert "evaluation: mt1:push-v3" in out and "push-v3" in out.splitlines()[3]


def damaged(run, tmp_path, how):
    path = tmp_path / "damaged.pt"
    data = bytearray(step_file(run, 200).read_bytes())
    if how == "truncated":
        data = data[: len(data) // 3]
    elif how == "flipped":
        for offset in range(len(data) // 2, len(data) // 2 + 4):
            data[offset] ^= 0x5A
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda run, tmp: [str(tmp / "missing.pt")], "does not exist"),
        (lambda run, tmp: [str(damaged(run, tmp, "truncated"))], "truncated"),
        (lambda run, tmp: [str(damaged(run, tmp, "flipped"))], "corrupted"),
        (lambda run, tmp: [str(tmp)], "holds no checkpoint"),
        (lambda run, tmp: [str(run), "--benchmark", "mt99"], "unknown benchmark"),
        (lambda run, tmp: [str(run), "--benchmark", "mt10"], "another observation layout"),
        (lambda run, tmp: [str(run), "--json", str(tmp)], "is a folder"),
    ],
    ids=["missing", "truncated", "flipped-bytes", "no-checkpoint", "benchmark", "layout", "json"],
)
def test_bad_input_is_one_line_and_exit_2(run, tmp_path, capsys, make_args, message):
    args = make_args(run, tmp_path)
    before = snapshot(run), snapshot(tmp_path)
    assert eval_main(args) == USAGE_ERROR
    err = capsys.readouterr().err
    assert err.startswith("mtrl-eval: error: ") and err.count("\n") == 1, err
    assert message in err
    assert (snapshot(run), snapshot(tmp_path)) == before


def test_foreign_and_newer_files_are_refused(run, tmp_path, capsys):
    foreign = tmp_path / "foreign.pt"
    torch.save({"actor": {"weight": torch.zeros(2)}}, foreign)
    newer = tmp_path / "newer.pt"
    torch.save({**torch.load(step_file(run, 200), weights_only=True), "version": 2}, newer)
    for path, message in ((foreign, "not an mtrl checkpoint"), (newer, "newer mtrl")):
        assert eval_main([str(path)]) == USAGE_ERROR
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


@pytest.mark.parametrize("episodes", ["0", "-3", "many"])
def test_episodes_must_be_positive(run, capsys, episodes):
    with pytest.raises(SystemExit) as exit_info:
        eval_main([str(run), "--episodes", episodes])
    assert exit_info.value.code == USAGE_ERROR
    err = capsys.readouterr().err
    assert err.startswith("mtrl-eval: error: argument --episodes") and err.count("\n") == 1


def test_video_of_one_episode_per_task(run, tmp_path):
    """In a subprocess: MUJOCO_GL must be chosen before MuJoCo is first imported."""
    videos = tmp_path / "videos"
    result = run_module(
        EVAL, str(run), "--episodes", "1", "--video", str(videos), "--video-size", "48"
    )
    if result.returncode == 1 and "cannot render" in result.stderr:
        pytest.skip(f"no offscreen OpenGL here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    (video,) = videos.iterdir()
    assert video.name in ("reach-v3.mp4", "reach-v3.gif")
    assert f"video: {video}" in result.stdout
    if video.suffix == ".gif":
        from PIL import Image

        with Image.open(video) as image:
            assert image.size == (48, 48) and image.n_frames > 1
