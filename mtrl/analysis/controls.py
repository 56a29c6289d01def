"""Single-task controls: a task trained alone (``mt1:<task>`` or the one-task set
``mt50:<task>``) beside the same task inside a task set, method by method.

The two are different protocols (their benchmarks differ), so the report never pools them; here
they are compared task by task instead: the task's success in the task set's runs against the
control's, with the probability that a task-set run scores higher than a control run. A control
pairs with a task set when both follow the same paper protocol, goal mode, horizon and reward.
"""

from __future__ import annotations

from dataclasses import dataclass

from mtrl.analysis import stats
from mtrl.analysis.runs import KINDS, ProtocolKey, Row
from mtrl.analysis.stats import Estimate

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
    """``final``/``best`` -> the task's mean success over the task-set row's seeds."""
    control_success: dict[str, Estimate]
    improvement: dict[str, Estimate]
    """``final``/``best`` -> P(a task-set run > a control run) on the task."""

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

    scores = {k: row.scores(k, [task]) for k in KINDS}
    alone = {k: control.scores(k, [task]) for k in KINDS}
    return Control(
        key,
        control_key,
        task,
        row,
        control,
        {k: mean(scores[k]) for k in KINDS},
        {k: mean(alone[k]) for k in KINDS},
        {k: stats.improvement(scores[k], alone[k], reps, seed) for k in KINDS},
    )
