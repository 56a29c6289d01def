"""``mtrl-eval``: success rates of a saved agent, from a checkpoint file or a run folder.

The policy is deterministic (the mean action) and the envs are built with ``--seed``, so the
same checkpoint, seed and episode count always print the same table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from mtrl.agent import MTSAC
    from mtrl.checkpoint import Checkpoint
    from mtrl.envs import Benchmark

# GIF frame delays under 20 ms are slowed down to 100 ms by most viewers; 25 fps is safe.
GIF_FRAME_MS = 40
MP4_FPS = 30


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    from mtrl.cli import USAGE_ERROR, OneLineParser

    parser = OneLineParser(
        prog="mtrl-eval",
        description="Evaluate a saved agent: deterministic actions, N episodes per task; prints "
        "the success rate and mean return of every task and their means.",
        epilog=f"exit status: 0 done; {USAGE_ERROR} bad command line or checkpoint (one line on "
        "stderr, nothing written); 1 anything else (e.g. rendering failed).",
    )
    parser.add_argument(
        "target",
        metavar="CHECKPOINT_OR_RUN_DIR",
        type=Path,
        help="a checkpoint file (a run's checkpoints/step-*.pt or checkpoints/best.pt) or a run "
        "folder (its latest checkpoint)",
    )
    parser.add_argument(
        "--episodes", type=_positive_int, default=50, help="episodes per task (default 50)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        help="env seed: the 50 goals of every task and the order they are drawn in (default: the "
        "run's train.seed, i.e. the training goals)",
    )
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    parser.add_argument("--threads", type=_positive_int, default=1, help="torch CPU threads")
    parser.add_argument(
        "--benchmark",
        help="evaluate on another benchmark with the same observation layout (e.g. an agent "
        "trained on mt1:reach-v3 on mt1:push-v3); default: the one it was trained on",
    )
    parser.add_argument(
        "--video",
        metavar="DIR",
        type=Path,
        help="also record one episode per task into DIR/<task>.mp4 (with imageio-ffmpeg) or "
        ".gif (with pillow): pip install 'mtrl[video]'. Uses MUJOCO_GL=egl without a display",
    )
    parser.add_argument(
        "--video-size", type=_positive_int, default=256, help="video width and height in pixels"
    )
    parser.add_argument(
        "--camera", help="Meta-World camera name for --video (default: the env's default view)"
    )
    parser.add_argument("--json", metavar="FILE", type=Path, help="also write the results as JSON")
    return parser


def eval_main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.video is not None:
        _prefer_headless_gl()  # before mujoco is first imported

    from mtrl.benchmarks import parse_benchmark
    from mtrl.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
    from mtrl.cli import fail
    from mtrl.config import ConfigError
    from mtrl.device import resolve_device

    try:
        path = args.target
        if path.is_dir():
            path = latest_checkpoint(path)
            if path is None:
                raise CheckpointError(f"'{args.target}' holds no checkpoint (no checkpoints/)")
        checkpoint = load_checkpoint(path)
        config = checkpoint.config
        benchmark = parse_benchmark(args.benchmark or checkpoint.state["benchmark"])
        trained_tasks = len(checkpoint.state["task_names"])
        if benchmark.num_tasks != trained_tasks:
            raise ValueError(
                f"--benchmark {benchmark.name} has {benchmark.num_tasks} tasks, so another "
                f"observation layout (the one-hot); the agent was trained on "
                f"{checkpoint.state['benchmark']} ({trained_tasks} tasks)"
            )
        video_format = _video_format() if args.video is not None else None
        _check_output(args.json, "--json", is_dir=False)
        _check_output(args.video, "--video", is_dir=True)
        device = resolve_device(args.device)
    except (ConfigError, CheckpointError, ValueError) as exc:
        return fail("mtrl-eval", exc)

    import torch

    torch.set_num_threads(args.threads)
    from mtrl.envs import make_envs
    from mtrl.evaluation import evaluate

    seed = config.train.seed if args.seed is None else args.seed
    envs = make_envs(benchmark, config.env, seed)
    try:
        layout = (envs.single_observation_space.shape[0], envs.single_action_space.shape[0])
        trained = (checkpoint.state["obs_dim"], checkpoint.state["action_dim"])
        if layout != trained:
            return fail(
                "mtrl-eval",
                ValueError(
                    f"--benchmark {benchmark.name} has observations/actions of {layout[0]}/"
                    f"{layout[1]} dims; the agent was trained with {trained[0]}/{trained[1]} "
                    f"({checkpoint.state['benchmark']})"
                ),
            )
        agent = _load_agent(checkpoint, device)
        video_envs = None
        if args.video is not None:
            video_envs = _video_envs(benchmark, config.env, seed, args.video_size, args.camera)
            if isinstance(video_envs, str):
                print(f"mtrl-eval: error: --video: {video_envs}", file=sys.stderr)
                return 1
        result = evaluate(agent, envs, benchmark.task_names, args.episodes)
    finally:
        envs.close()

    from mtrl.cli import format_success_table

    goals = config.env.goal_mode
    print(
        f"checkpoint: {checkpoint.path} (step {checkpoint.step}, trained on "
        f"{checkpoint.state['benchmark']}, {goals} goals)"
    )
    print(
        f"evaluation: {benchmark.name}, seed {seed}, {args.episodes} episodes per task, "
        f"deterministic policy, {device}"
    )
    print(format_success_table(result.success, result.mean_return, result.episodes))
    if args.json is not None:
        record = {
            "checkpoint": str(checkpoint.path),
            "step": checkpoint.step,
            "trained_on": checkpoint.state["benchmark"],
            "benchmark": benchmark.name,
            "goal_mode": goals,
            "seed": seed,
            "episodes": args.episodes,
            "device": str(device),
            "mean_success": result.mean_success,
            "mean_return": sum(result.mean_return.values()) / len(result.mean_return),
            "success": result.success,
            "return": result.mean_return,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    if video_envs is not None:
        assert video_format is not None
        try:
            for line in _record_videos(agent, video_envs, benchmark, args.video, video_format):
                print(line)
        finally:
            video_envs.close()
    return 0


def _check_output(path: Path | None, flag: str, is_dir: bool) -> None:
    from mtrl.config import ConfigError

    if path is None:
        return
    if is_dir and path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} '{path}' exists and is not a folder")
    if not is_dir and path.is_dir():
        raise ConfigError(f"{flag} '{path}' is a folder")
    parent = path if is_dir and path.exists() else path.parent
    existing = next((p for p in (parent, *parent.parents) if p.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise ConfigError(f"{flag} '{path}': cannot write to '{existing}'")


def _load_agent(checkpoint: Checkpoint, device: Any) -> MTSAC:
    from mtrl.agent import MTSAC
    from mtrl.checkpoint import load_agent_networks

    state = checkpoint.state
    config = checkpoint.config
    agent = MTSAC(
        state["obs_dim"],
        state["action_dim"],
        len(state["task_names"]),
        config.agent,
        device,
        config.train.seed,
        task_embeddings=state.get("task_embeddings"),
    )
    load_agent_networks(agent, state["agent"]["networks"])
    return agent


# ------------------------------------------------------------------------------------ video
def _prefer_headless_gl() -> None:
    """Without a display MuJoCo needs an offscreen GL: EGL (GPU or Mesa's software one)."""
    if "MUJOCO_GL" not in os.environ and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        os.environ["MUJOCO_GL"] = "egl"


def _video_format() -> str:
    from mtrl.config import ConfigError

    try:
        import imageio_ffmpeg  # noqa: F401

        return "mp4"
    except ImportError:
        pass
    try:
        import PIL  # noqa: F401

        return "gif"
    except ImportError:
        raise ConfigError(
            "--video needs imageio-ffmpeg (MP4) or pillow (GIF): pip install 'mtrl[video]'"
        ) from None


def _video_envs(
    benchmark: Benchmark, env_config: Any, seed: int, size: int, camera: str | None
) -> Any:
    """Rendering envs (always stepped in this process), or why rendering does not work here."""
    from mtrl.envs import make_envs

    try:
        envs = make_envs(
            benchmark,
            replace(env_config, vector_strategy="sync"),
            seed,
            render_mode="rgb_array",
            width=size,
            height=size,
            camera_name=camera,
        )
    except Exception as exc:  # an unknown camera name, ...
        return f"cannot build rendering envs: {_first_line(exc)}"
    try:
        envs.envs[0].reset()
        frame = envs.envs[0].render()
        if frame is None:
            raise RuntimeError("the env rendered nothing")
    except Exception as exc:  # no usable GL: MuJoCo and PyOpenGL raise many types
        envs.close()
        backend = os.environ.get("MUJOCO_GL", "default")
        return f"cannot render (MUJOCO_GL={backend}): {_first_line(exc)}"
    return envs


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _record_videos(
    agent: MTSAC, envs: Any, benchmark: Benchmark, directory: Path, video_format: str
) -> list[str]:
    """One deterministic episode per task, ending at success like an evaluation episode."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = []
    for task, env in zip(benchmark.task_names, envs.envs, strict=True):
        env.get_wrapper_attr("toggle_terminate_on_success")(True)
        obs, _ = env.reset()
        frames, success, done = [env.render()], False, False
        while not done:
            action = agent.act(obs[None], deterministic=True)[0]
            obs, _, terminated, truncated, info = env.step(action)
            frames.append(env.render())
            success = success or bool(info.get("success", 0.0))
            done = bool(terminated or truncated)
        path = directory / f"{task}.{video_format}"
        _write_video(path, frames, video_format)
        outcome = "success" if success else "failure"
        lines.append(f"video: {path} ({len(frames)} frames, {outcome})")
    return lines


def _write_video(path: Path, frames: list[np.ndarray], video_format: str) -> None:
    import numpy as np

    tmp = path.with_name(f".{path.name}.tmp")
    if video_format == "mp4":
        import imageio_ffmpeg

        height, width = frames[0].shape[:2]
        writer = imageio_ffmpeg.write_frames(
            str(tmp),
            (width, height),
            fps=MP4_FPS,
            codec="libx264",
            pix_fmt_out="yuv420p",
            output_params=["-f", "mp4"],
            macro_block_size=2,
        )
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
    else:
        from PIL import Image

        images = [Image.fromarray(frame) for frame in frames]
        images[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=GIF_FRAME_MS,
            loop=0,
        )
    os.replace(tmp, path)


if __name__ == "__main__":
    raise SystemExit(eval_main())
