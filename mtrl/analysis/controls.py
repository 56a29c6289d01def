"""Single-task controls: a task trained alone (``mt1:<task>`` or the one-task set
``mt50:<task>``) beside the same task inside a task set, method by method.

The two are different protocols (their benchmarks differ), so the report never pools them; here
they are compared task by task instead: the task's success in the task set's runs against the
control's, with the probability that a task-set run scores higher than a control run. A control
pairs with a task set when both follow the same paper protocol, goal mode, horizon and reward.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtrl.analysis import stats
from mtrl.analysis.runs import KINDS, TASK_PREFIX, ProtocolKey, Row
from mtrl.analysis.stats import Estimate

LATE = 10
"""``late``: a task's mean success over the last this many evaluations (whether it is held)."""
CONTROL_KINDS = (*KINDS, "late")
"""The scores compared: the final and the best evaluation's, and the ``late`` mean."""

MATCHED = ("name", "goal_mode", "max_episode_steps", "reward_version")
"""What a control shares with the task set it controls (all protocol keys but the benchmark)."""


@dataclass
class Control:
    """One task of one task-set row against the single-task control of that task."""

    task_set: ProtocolKey
    control: ProtocolKey
    task: str
    row: Row
    control_row: Row
    success: dict[str, Estimate]
    """``final``/``best``/``late`` -> the task's mean success over the task-set row's seeds."""
    control_success: dict[str, Estimate]
    improvement: dict[str, Estimate]
    """``final``/``best``/``late`` -> P(a task-set run > a control run) on the task."""
    first_solved: tuple[Estimate, Estimate]
    """Transitions of the task (its own share of a task set's) until its first success, mean
    over seeds, in the task set and alone; an unsolved run counts its budget."""

    @property
    def transitions_per_task(self) -> tuple[float, float]:
        """The budget of one task: in the task set, and alone."""
        return _per_task(self.row), _per_task(self.control_row)


def _per_task(row: Row) -> float:
    return float(row.runs[0].config.get("train.total_steps", float("nan"))) / len(row.tasks)


def _matches(task_set: ProtocolKey, control: ProtocolKey) -> bool:
    a, b = dict(task_set), dict(control)
    return all(a[k] == b[k] for k in MATCHED)


def _control_row(row: Row, rows: list[Row]) -> Row | None:
    """The control row of the same method, else the control without surgery and balancer of the
    same model (surgery on one task's gradient changes nothing)."""
    same = [r for r in rows if r.label == row.label]
    plain = [r for r in rows if r.is_plain() and r.method[0] == row.method[0]]
    return (same or plain or [None])[0]


def find_controls(grouped: dict[ProtocolKey, list[Row]], reps: int, seed: int) -> list[Control]:
    """Every (task-set row, task) that has a single-task control among ``grouped``."""
    singles = {k: rows for k, rows in grouped.items() if len(rows[0].tasks) == 1}
    out = []
    for key, rows in grouped.items():
        if len(rows[0].tasks) < 2:
            continue
        for control_key, control_rows in singles.items():
            task = control_rows[0].tasks[0]
            if task not in rows[0].tasks or not _matches(key, control_key):
                continue
            for row in rows:
                control = _control_row(row, control_rows)
                if control is not None:
                    out.append(_compare(key, control_key, task, row, control, reps, seed))
    return out


def _compare(
    key: ProtocolKey,
    control_key: ProtocolKey,
    task: str,
    row: Row,
    control: Row,
    reps: int,
    seed: int,
) -> Control:
    def mean(scores) -> Estimate:
        return Estimate(*map(float, stats.task_means(scores, reps, seed)[:, 0]))

    scores = {k: task_scores(row, k, task) for k in CONTROL_KINDS}
    alone = {k: task_scores(control, k, task) for k in CONTROL_KINDS}
    return Control(
        key,
        control_key,
        task,
        row,
        control,
        {k: mean(scores[k]) for k in CONTROL_KINDS},
        {k: mean(alone[k]) for k in CONTROL_KINDS},
        {k: stats.improvement(scores[k], alone[k], reps, seed) for k in CONTROL_KINDS},
        (mean(first_solved(row, task)), mean(first_solved(control, task))),
    )


def task_scores(row: Row, kind: str, task: str) -> np.ndarray:
    """``[seeds, 1]``: the task's ``final``, ``best`` or ``late`` success in each run."""
    if kind in KINDS:
        return row.scores(kind, [task])
    return np.array([[np.mean(_successes(run, task)[-LATE:])] for run in row.runs])


def first_solved(row: Row, task: str) -> np.ndarray:
    """``[seeds, 1]``: the task's transitions until its first success in each run (the run's
    step over its number of tasks), the run's budget where it was never solved."""
    out = []
    for run in row.runs:
        key = TASK_PREFIX + task
        solved = [e["step"] for e in run.evals if e.get(key) is not None and e[key] >= 1.0]
        step = solved[0] if solved else run.config["train.total_steps"]
        out.append([step / len(row.tasks)])
    return np.array(out, dtype=float)


def _successes(run, task: str) -> list[float]:
    key = TASK_PREFIX + task
    return [float(e[key]) for e in run.evals if e.get(key) is not None]
