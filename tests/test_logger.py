import hashlib
import sys

import pytest

from mtrl.config import ConfigError, LoggerConfig
from mtrl.logger import require_wandb, wandb_run_id


def test_wandb_without_the_package_is_refused_before_the_run(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ConfigError, match=r"pip install 'mtrl\[wandb\]'"):
        require_wandb(LoggerConfig(wandb=True))
    require_wandb(LoggerConfig(wandb=False))  # not asked for: no package needed


def test_wandb_run_id_is_stable_per_folder_and_safe(tmp_path):
    a, b = tmp_path / "x" / "mt10: pcgrad s0", tmp_path / "y" / "mt10: pcgrad s0"
    digest = hashlib.sha256(str(a.resolve()).encode()).hexdigest()[:8]
    assert wandb_run_id(a) == f"mt10-pcgrad-s0-{digest}"  # resumed runs find their W&B run
    assert wandb_run_id(a) != wandb_run_id(b)  # equal names, different runs
    assert set(wandb_run_id(a)) <= set("abcdefghijklmnopqrstuvwxyz0123456789.-_")
