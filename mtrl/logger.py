"""Metrics to two sinks: tensorboard event files and ``metrics.jsonl`` (one JSON object a line)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

METRICS_FILE = "metrics.jsonl"


class RunLogger:
    """Appends to the run folder; every line carries the env ``step`` it describes."""

    def __init__(self, run_dir: Path, resume_at: tuple[int, int] | None = None):
        """``resume_at=(step, metrics_bytes)``: continue a run from a checkpoint taken at
        ``step``. What the interrupted process logged after it is dropped: metrics.jsonl is cut
        back to its size then, and tensorboard hides the later events (``purge_step``)."""
        self.run_dir = Path(run_dir)
        purge_step = None
        if resume_at is not None:
            step, metrics_bytes = resume_at
            with (self.run_dir / METRICS_FILE).open("ab") as file:
                file.truncate(metrics_bytes)
            purge_step = step + 1
        self.writer = SummaryWriter(log_dir=str(self.run_dir), purge_step=purge_step)
        self._jsonl = (self.run_dir / METRICS_FILE).open("a", encoding="utf-8")

    def log(self, step: int, metrics: dict[str, float], **extra: object) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, global_step=step)
        record = {"step": step, **extra, **{k: _json_number(v) for k, v in metrics.items()}}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()

    def flush(self) -> None:
        self.writer.flush()
        self._jsonl.flush()

    def position(self) -> int:
        """Bytes of metrics.jsonl written so far, everything flushed to the files first."""
        self.flush()
        os.fsync(self._jsonl.fileno())
        return os.fstat(self._jsonl.fileno()).st_size

    def close(self) -> None:
        self.writer.close()
        self._jsonl.close()


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
