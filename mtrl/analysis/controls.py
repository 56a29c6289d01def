"""Single-task controls: a task trained alone (``mt1:<task>`` or the one-task set
``mt50:<task>``) beside the same task inside a task set, method by method.

The two are different protocols (their benchmarks differ), so the report never pools them; here
they are compared task by task instead: the task's success in the task set's runs against the
control's, with the probability that a task-set run scores higher than a control run. A control
pairs with a task set when both follow the same paper protocol, goal mode, horizon and reward,
and it is compared at the task set's budget per task: a longer control is cut there. Each
single-task row also says, budget by budget, how many of its seeds hold the task
(:func:`held_by_budget`): how long the task needs alone, whatever task set it may join.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from mtrl.analysis import stats
from mtrl.analysis.runs import KINDS, TASK_PREFIX, ProtocolKey, Row, protocol_label
from mtrl.analysis.stats import Estimate

LATE = 10
"""``late``: a task's mean success over the last this many evaluations (whether it is held)."""
HELD = 0.8
"""A task is held at a budget B when its ``late`` success up to B (its mean success over the last
``LATE`` evaluations at steps <= B) is at least this: the rule by which the PCGrad study picks its
longer budget (docs/results/pcgrad.md, item c)."""
BUDGET_STEP = 50_000
"""The budgets of the held table: every multiple of this up to a single-task row's budget."""
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
    cut_at: float | None
    """The task set's budget per task where the control's runs were cut (a longer control, see
    :func:`cut_row`); None when the control ran that budget."""

    @property
    def transitions_per_task(self) -> tuple[float, float]:
        """The budget of one task: in the task set, and alone."""
        return _per_task(self.row), _per_task(self.control_row)


@dataclass
class Held:
    """A single-task row at one budget: how many of its seeds hold the task by then."""

    protocol: ProtocolKey
    row: Row
    budget: int
    held: int
    """Seeds whose ``late`` success up to ``budget`` is at least ``HELD``."""
    late: Estimate
    """That ``late`` success, mean over the seeds."""

    @property
    def task(self) -> str:
        return self.row.tasks[0]


def _per_task(row: Row) -> float:
    return float(row.runs[0].config.get("train.total_steps", float("nan"))) / len(row.tasks)


def _matches(task_set: ProtocolKey, control: ProtocolKey) -> bool:
    a, b = dict(task_set), dict(control)
    return all(a[k] == b[k] for k in MATCHED)


def _candidates(row: Row, rows: list[Row]) -> list[Row]:
    """The control rows of the same method (model, surgery, balancer; any config variant), else
    those without surgery and balancer of the same model (surgery on one task's gradient changes
    nothing)."""
    same = [r for r in rows if r.method == row.method]
    return same or [r for r in rows if r.is_plain() and r.method[0] == row.method[0]]


def _by_budget(candidates: list[Row], budget: float) -> tuple[Row, float | None] | None:
    """The first candidate whose budget per task is ``budget``, else the shortest longer one cut at
    ``budget`` (with the cut), else None: a control that stops earlier, or is not evaluated by
    ``budget``, cannot say how the task fares alone with the task set's budget."""
    exact = [r for r in candidates if _per_task(r) == budget]
    if exact:
        return exact[0], None
    longer = sorted((r for r in candidates if _per_task(r) > budget), key=_per_task)
    cut = cut_row(longer[0], budget) if longer else None
    return None if cut is None else (cut, budget)


def cut_row(row: Row, budget: float) -> Row | None:
    """A copy of ``row`` as if its runs had stopped at ``budget`` transitions: each keeps its
    evaluations at steps <= ``budget`` (the last of them its final, with the episodes of any
    evaluation rather than ``train.final_eval_episodes``) and has ``budget`` as its
    ``train.total_steps`` (what :func:`first_solved` counts where the task is unsolved). None
    when a run has no evaluation by then. ``row`` and its runs are left as they are."""
    runs = [
        replace(
            run,
            evals=[e for e in run.evals if e["step"] <= budget],
            config={**run.config, "train.total_steps": budget},
        )
        for run in row.runs
    ]
    if not all(run.evals for run in runs):
        return None
    return replace(row, runs=runs, stats=None)


def find_controls(
    grouped: dict[ProtocolKey, list[Row]], reps: int, seed: int, notes: list[str]
) -> list[Control]:
    """Every (task-set row, task) that has a single-task control among ``grouped``, at the task-set
    row's budget per task. A row whose controls all stop short of that budget is not compared; a
    note in ``notes`` says so."""
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
                candidates = _candidates(row, control_rows)
                if not candidates:
                    continue
                budget = _per_task(row)
                found = _by_budget(candidates, budget)
                if found is None:
                    theirs = ", ".join(
                        f"{b:.0f}" for b in sorted({_per_task(r) for r in candidates})
                    )
                    notes.append(
                        f"{row.label} under [{protocol_label(key)}]: no single-task control of "
                        f"{task} runs and is evaluated up to its {budget:.0f} transitions per "
                        f"task (the controls' budgets: {theirs}); not compared with one"
                    )
                    continue
                control, cut_at = found
                out.append(_compare(key, control_key, task, row, control, cut_at, reps, seed))
    return out


def budgets(total: int) -> list[int]:
    """Every multiple of ``BUDGET_STEP`` up to ``total``, and ``total`` where it is not one."""
    steps = list(range(BUDGET_STEP, total + 1, BUDGET_STEP))
    return steps if total % BUDGET_STEP == 0 else [*steps, total]


def held_by_budget(grouped: dict[ProtocolKey, list[Row]], reps: int, seed: int) -> list[Held]:
    """Every single-task row at each of its :func:`budgets`: whether it holds its task by then,
    with or without a task set beside it (how long the task needs alone: what a task set's
    budget can be chosen by). A budget before a run's first evaluation is left out."""
    out = []
    for key, rows in grouped.items():
        for row in rows:
            if len(row.tasks) != 1:
                continue
            for budget in budgets(int(row.runs[0].config["train.total_steps"])):
                cut = cut_row(row, budget)
                if cut is None:
                    continue
                late = task_scores(cut, "late", row.tasks[0])
                held = int(np.sum(late >= HELD - 1e-9))  # 8 of 10 is 0.8 up to rounding
                out.append(Held(key, row, budget, held, _mean(late, reps, seed)))
    return out


def _mean(scores: np.ndarray, reps: int, seed: int) -> Estimate:
    """The mean over runs of a ``[runs, 1]`` score, with its interval."""
    return Estimate(*map(float, stats.task_means(scores, reps, seed)[:, 0]))


def _compare(
    key: ProtocolKey,
    control_key: ProtocolKey,
    task: str,
    row: Row,
    control: Row,
    cut_at: float | None,
    reps: int,
    seed: int,
) -> Control:
    scores = {k: task_scores(row, k, task) for k in CONTROL_KINDS}
    alone = {k: task_scores(control, k, task) for k in CONTROL_KINDS}
    return Control(
        key,
        control_key,
        task,
        row,
        control,
        {k: _mean(scores[k], reps, seed) for k in CONTROL_KINDS},
        {k: _mean(alone[k], reps, seed) for k in CONTROL_KINDS},
        {k: stats.improvement(scores[k], alone[k], reps, seed) for k in CONTROL_KINDS},
        (
            _mean(first_solved(row, task), reps, seed),
            _mean(first_solved(control, task), reps, seed),
        ),
        cut_at,
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
