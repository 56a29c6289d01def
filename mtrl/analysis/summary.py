"""The statistics of table rows (:mod:`mtrl.analysis.stats`, through ``rliable``).

A row's **scores** are the success rates of its runs (seeds) on its tasks, a ``[seeds, tasks]``
matrix taken at the final evaluation (**final**) or at each run's best evaluation (**best**). Each
row gets the mean and the IQM of its scores with 95% stratified-bootstrap intervals, and the
probability of improvement over its **baseline**: the row of the same protocol with no surgery
and no loss balancer and otherwise the same config, or the row that ``--baseline`` names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtrl.analysis import stats
from mtrl.analysis.runs import KINDS, TASK_PREFIX, ProtocolKey, Row, protocol_label
from mtrl.analysis.stats import Estimate


@dataclass
class RowStats:
    """A row's statistics (:mod:`mtrl.analysis.stats`) for the report's bootstrap settings."""

    aggregates: dict[str, dict[str, Estimate]]
    """``final``/``best`` -> ``mean``/``iqm`` of the row's score matrix."""
    baseline: Row | None
    """The row this one is compared with; the row itself when it is the baseline."""
    improvement: dict[str, Estimate]
    """``final``/``best`` -> P(this row > baseline); empty without another row as baseline."""


def find_baseline(row: Row, rows: list[Row], label: str | None = None) -> Row | None:
    """The row of ``rows`` (one protocol) that ``row`` is compared with: the one labelled
    ``label`` when given, else the row without surgery and balancer whose model and
    result-relevant config are those of ``row``. ``None`` when there is no such row."""
    if label is not None:
        found = [r for r in rows if r.label == label]
    else:
        setting = row.setting()
        found = [
            r
            for r in rows
            if r.is_plain() and r.method[0] == row.method[0] and r.setting() == setting
        ]
    return found[0] if found else None


def check_baseline(grouped: dict[ProtocolKey, list[Row]], label: str, notes: list[str]) -> str:
    """An error message when no row is labelled ``label``; notes the protocols without it."""
    labels = sorted({row.label for rows in grouped.values() for row in rows})
    if label not in labels:
        return f"--baseline '{label}' names no row; the rows are: {'; '.join(labels)}"
    for key, rows in grouped.items():
        if all(row.label != label for row in rows):
            notes.append(f"[{protocol_label(key)}] has no row '{label}': no baseline there")
    return ""


def summarize(
    grouped: dict[ProtocolKey, list[Row]], reps: int, seed: int, baseline: str | None = None
) -> None:
    """Fill in every row's :class:`RowStats` (each estimate seeded on its own: a row's numbers do
    not depend on which other rows are in the report)."""
    for rows in grouped.values():
        for row in rows:
            base = find_baseline(row, rows, baseline)
            improvement = {}
            if base is not None and base is not row:
                improvement = {
                    k: stats.improvement(row.scores(k), base.scores(k, row.tasks), reps, seed)
                    for k in KINDS
                }
            row.stats = RowStats(
                {k: stats.aggregates(row.scores(k), reps, seed) for k in KINDS}, base, improvement
            )


def learning_curve(row: Row, reps: int, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The evaluation steps that all the row's seeds share, and the mean and IQM of the success
    scores (seeds x tasks) at each, ``[3, steps]`` (value, low, high) with 95% intervals."""
    by_step = [{int(e["step"]): e for e in run.evals} for run in row.runs]
    steps = sorted(set.intersection(*(set(s) for s in by_step)))
    scores = np.array(
        [[[float(s[step][TASK_PREFIX + t]) for step in steps] for t in row.tasks] for s in by_step]
    )
    return np.array(steps), stats.curve_bands(scores, reps, seed)


def per_task(row: Row, kind: str, reps: int, seed: int) -> dict[str, Estimate]:
    """Each task's mean success over the row's seeds with its interval, tasks in one-hot order."""
    means = stats.task_means(row.scores(kind), reps, seed)
    return {t: Estimate(*map(float, means[:, i])) for i, t in enumerate(row.tasks)}
