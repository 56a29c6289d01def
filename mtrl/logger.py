"""Metrics to tensorboard event files and ``metrics.jsonl`` (one JSON object a line), and
optionally to Weights & Biases. An ``OSError`` while writing them (a full disk) is raised as
:class:`mtrl.errors.WriteFailed`."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from mtrl.config import ConfigError, LoggerConfig
from mtrl.errors import WriteFailed

METRICS_FILE = "metrics.jsonl"


class RunLogger:
    """Appends to the run folder; every line carries the env ``step`` it describes."""

    def __init__(
        self,
        run_dir: Path,
        resume_at: tuple[int, int] | None = None,
        settings: LoggerConfig | None = None,
        config: dict[str, Any] | None = None,
    ):
        """``resume_at=(step, metrics_bytes)``: continue a run from a checkpoint taken at
        ``step``. What the interrupted process logged after it is dropped: metrics.jsonl is cut
        back to its size then, and tensorboard hides the later events (``purge_step``).
        ``settings.wandb``: also log to W&B, with ``config`` as the run's config."""
        self.run_dir = Path(run_dir)
        purge_step = None
        if resume_at is not None:
            step, metrics_bytes = resume_at
            with (self.run_dir / METRICS_FILE).open("ab") as file:
                file.truncate(metrics_bytes)
            purge_step = step + 1
        self.writer = SummaryWriter(log_dir=str(self.run_dir), purge_step=purge_step)
        self._jsonl = (self.run_dir / METRICS_FILE).open("a", encoding="utf-8")
        self._wandb = (
            _start_wandb(self.run_dir, settings, config or {})
            if settings is not None and settings.wandb
            else None
        )

    def log(self, step: int, metrics: dict[str, float], **extra: object) -> None:
        record = {"step": step, **extra, **{k: _json_number(v) for k, v in metrics.items()}}
        with self._writing():
            for key, value in metrics.items():
                self.writer.add_scalar(key, value, global_step=step)
            self._jsonl.write(json.dumps(record) + "\n")
            self._jsonl.flush()
        if self._wandb is not None:
            self._wandb.log(dict(metrics), step=step)

    def flush(self) -> None:
        with self._writing():
            self.writer.flush()
            self._jsonl.flush()

    def position(self) -> int:
        """Bytes of metrics.jsonl written so far, everything flushed to the files first."""
        self.flush()
        with self._writing():
            os.fsync(self._jsonl.fileno())
            return os.fstat(self._jsonl.fileno()).st_size

    def close(self) -> None:
        try:
            with self._writing():
                try:
                    self.writer.close()
                finally:
                    self._jsonl.close()
        finally:
            if self._wandb is not None:
                self._wandb.finish()
                self._wandb = None

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """An ``OSError`` of the metrics files (or of tensorboard's writer thread, which raises
        it at the next call) as a one-line :class:`mtrl.errors.WriteFailed`."""
        try:
            yield
        except OSError as exc:
            raise WriteFailed(exc.filename or self.run_dir / METRICS_FILE, exc) from None


def require_wandb(settings: LoggerConfig) -> None:
    """Refuse ``logger.wandb=true`` before a run starts when the package is missing."""
    if not settings.wandb:
        return
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise ConfigError(
            "logger.wandb=true needs the wandb package: pip install 'mtrl[wandb]'"
        ) from None


def wandb_run_id(run_dir: Path) -> str:
    """One W&B run per run folder, the same id when the run is resumed: the folder's name made
    safe for W&B ids, and a digest of its absolute path to keep equal names apart."""
    digest = hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:8]
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(run_dir).name)[:48]
    return f"{name}-{digest}"


def _start_wandb(run_dir: Path, settings: LoggerConfig, config: dict[str, Any]) -> Any:
    import wandb

    return wandb.init(
        project=settings.wandb_project,
        entity=settings.wandb_entity,
        mode=settings.wandb_mode,
        dir=str(run_dir),
        id=wandb_run_id(run_dir),
        name=Path(run_dir).name,
        config=config,
        resume="allow",
        settings=wandb.Settings(silent=True),
    )


def _json_number(value: float) -> float | None:
    """JSON has no NaN/Inf: write null rather than an invalid file."""
    value = float(value)
    return value if math.isfinite(value) else None


def read_metrics(run_dir: Path) -> list[dict]:
    """The records of a run's metrics.jsonl; a cut last line (a run killed mid-write) is skipped."""
    lines = (Path(run_dir) / METRICS_FILE).read_text(encoding="utf-8").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise ValueError(f"{run_dir}/{METRICS_FILE}: line {number} is not JSON") from None
    return records
