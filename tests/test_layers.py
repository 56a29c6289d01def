"""The import contracts in setup.cfg (``[importlinter]``): kept by the package, and broken by a
planted upward import or circle in a copy of it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter")

ROOT = Path(__file__).resolve().parent.parent
LINT = (
    "import sys; from importlinter.cli import lint_imports; "
    "sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True, no_logo=True))"
)


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """lint-imports on the ``mtrl`` package under ``root`` with this checkout's contracts."""
    return subprocess.run(
        [sys.executable, "-c", LINT, str(ROOT / "setup.cfg")],
        cwd=root,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
    )


def test_the_package_keeps_its_import_contracts():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    "module,planted,broken",
    [
        # upward, no circle: a service layer module importing the learner layer
        ("device.py", "import mtrl.staging", ["The layers of mtrl "]),
        # the circle issue 25 found: config -> protocols -> envs -> config
        ("benchmarks.py", "import mtrl.envs", ["No circle", "The layers of mtrl "]),
        # the other one: report <-> triad figure, here runs <-> tables
        (
            "analysis/runs.py",
            "import mtrl.analysis.tables",
            ["No circle", "The layers of mtrl.analysis"],
        ),
        # one command using another
        ("sweep.py", "import mtrl.analysis.report", ["The commands are independent"]),
    ],
)
def test_a_planted_import_breaks_a_contract(tmp_path, module, planted, broken):
    shutil.copytree(ROOT / "mtrl", tmp_path / "mtrl", ignore=shutil.ignore_patterns("__pycache__"))
    path = tmp_path / "mtrl" / module
    path.write_text(path.read_text() + f"\n{planted}  # noqa: E402\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    failed = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    for name in broken:
        assert any(line.startswith(name) for line in failed), result.stdout
