"""The PCGrad paper's claims, tested on finished runs: Figure 4 (Section 5.3, the tragic triad),
Figure 3 (the ordering of PCGrad, its ablations and GradNorm) and Section 5.2 (MT10).

Per run of a task set, from its gradient diagnostics (``diag/<component>/...``, see the surgery
docs) and its evaluations of the hard task:

- every log interval is weighted by the **diagnostic updates** it holds (:func:`diagnostic_counts`:
  the first interval after the warm-up holds fewer than the others), so a share or a mean over a
  window is one over updates, not over log lines;
- the curvature is given for the paper's L = Σᵢ Lᵢ: the agent computes H of the mean of the K
  losses, and with the same step H of the sum is K times that; H / ‖∇L‖² (the mean's logged
  ``curvature_rel`` divided by K) sits beside it, since H alone follows the scale of the loss
  (:func:`run_claims` also gives their correlation with the loss over the intervals);
- the windows: the paper's own, the start of training (the first 10k and 20k transitions), and
  before and after the hard task is first solved (the first evaluation with success 1).

Per method (a row of mtrl-report): means and IQMs over seeds with 95% stratified-bootstrap
intervals (:mod:`mtrl.analysis.stats`, rliable), probabilities of improvement, and a verdict per
claim: **reproduced** when the interval lies on the paper's side of the claim's threshold,
**contradicted** when it lies on the other side, **unresolved** when it contains the threshold
(or there are no runs to test it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from mtrl.analysis import stats
from mtrl.analysis.controls import LATE
from mtrl.analysis.runs import ProtocolKey, Row, protocol_label
from mtrl.analysis.stats import Estimate
from mtrl.logger import read_metrics

WINDOWS = {
    "10k": "the first 10k transitions",
    "20k": "the first 20k transitions",
    "before": "before the task is first solved",
    "after": "after it is first solved",
}
"""Where the shares are counted; ``10k`` and ``20k`` are the paper's window (early training)."""
PAPER_WINDOW = "20k"
EARLY = {"10k": 10_000, "20k": 20_000}
COMPONENTS = ("critic", "actor")
REPRODUCED, CONTRADICTED, UNRESOLVED = "reproduced", "contradicted", "unresolved"

FIGURE3_ORDER = (
    ("pcgrad", "pcgrad_direction"),
    ("pcgrad", "pcgrad_magnitude"),
    ("pcgrad", "none + gradnorm"),
    ("pcgrad_direction", "none"),
    ("pcgrad_magnitude", "none"),
)
"""The paper's Figure 3 (right): PCGrad above each of its halves and above GradNorm, each half
above plain SAC. Pairs of row labels, the first claimed better."""


def diagnostic_counts(updates: Sequence[float], every: int) -> list[int]:
    """The diagnostic updates in each log interval, from ``train/updates`` (the updates made so
    far) on the interval's log line and ``surgery.diagnostics_every``: update n (counted from 1)
    computes the diagnostics when n is a multiple of ``every`` (as the agent decides), so the
    interval (U₋, U] holds ⌊U/every⌋ − ⌊U₋/every⌋ of them."""
    ends = [int(u) for u in updates]
    return [e // every - s // every for s, e in zip([0, *ends[:-1]], ends, strict=True)]


@dataclass(frozen=True)
class Interval:
    """One log line with diagnostics: its step, its weight and the interval means."""

    step: int
    weight: int
    values: dict[str, float]


def diagnostic_intervals(
    records: list[dict[str, Any]], component: str, every: int
) -> list[Interval]:
    """The log intervals of a run that hold the component's diagnostics, each with its weight."""
    lines = [r for r in records if "train/updates" in r]
    counts = diagnostic_counts([r["train/updates"] for r in lines], every)
    prefix = f"diag/{component}/"
    out = []
    for record, weight in zip(lines, counts, strict=True):
        if prefix + "curvature" not in record or weight == 0:
            continue
        values = {
            k.removeprefix(prefix): float(v)
            for k, v in record.items()
            if k.startswith(prefix) and v is not None
        }
        values["loss"] = float(record.get(f"train/{component}_loss", math.nan))
        out.append(Interval(int(record["step"]), weight, values))
    return out


def weighted_mean(intervals: Sequence[Interval], value: Callable[[Interval], float]) -> float:
    total = sum(i.weight for i in intervals)
    return sum(i.weight * value(i) for i in intervals) / total if total else math.nan


def share_among_conflicts(intervals: Sequence[Interval], share: str) -> float:
    """Of the conflicting (update, task pair)s, the share meeting ``share`` (``cond_a``,
    ``xi_le_1``): a ratio of update-weighted interval means, i.e. a ratio of counts."""
    conflicts = sum(i.weight * i.values["conflict"] for i in intervals)
    met = sum(i.weight * i.values[share] for i in intervals)
    return met / conflicts if conflicts > 0 else math.nan


def run_claims(
    path: Path, task: str, component: str, every: int, num_tasks: int
) -> dict[str, float]:
    """One run's numbers for the claims (keys of :data:`QUANTITIES`); ``nan`` where a window
    holds no diagnostic update or no conflict. ValueError when the run has no diagnostics."""
    records = read_metrics(path)
    evals = [r for r in records if r.get(f"eval/success/{task}") is not None]
    if not evals:
        raise ValueError(f"{path}: no evaluation of the task '{task}'")
    success = [float(r[f"eval/success/{task}"]) for r in evals]
    solved = [int(r["step"]) for r, s in zip(evals, success, strict=True) if s >= 1.0]
    first = solved[0] if solved else math.inf
    intervals = diagnostic_intervals(records, component, every) if every > 0 else []
    if not intervals:
        raise ValueError(
            f"{path}: no diag/{component}/curvature lines (trained without diagnostics?)"
        )
    windows = {
        **{name: [i for i in intervals if i.step <= end] for name, end in EARLY.items()},
        "before": [i for i in intervals if i.step <= first],
        "after": [i for i in intervals if i.step > first],
    }
    out = {
        **_curvature(intervals, num_tasks),
        "conflict": weighted_mean(intervals, lambda i: i.values["conflict"]),
        "solved": float(bool(solved)),
        "first_solved": float(first if solved else evals[-1]["step"]),
        "final": success[-1],
        "best": max(success),
        "late": float(np.mean(success[-LATE:])),
    }
    for name, lines in windows.items():
        out[f"h_positive_{name}"] = weighted_mean(lines, _positive)
        out[f"cond_a_{name}"] = share_among_conflicts(lines, "cond_a")
        out[f"xi_{name}"] = share_among_conflicts(lines, "xi_le_1")
    out["cond_a_fall"] = out["cond_a_before"] - out["cond_a_after"]
    return out


def _positive(interval: Interval) -> float:
    return float(interval.values["curvature"] > 0)


def _curvature(intervals: list[Interval], num_tasks: int) -> dict[str, float]:
    """H and H / ‖∇L‖² of the paper's L = Σᵢ Lᵢ (from those of the mean, logged) in the first and
    the last third of the run, their growth, and H's correlation with the loss."""
    third = max(len(intervals) // 3, 1)
    early, late = intervals[:third], intervals[-third:]
    out = {"h_positive": weighted_mean(intervals, _positive)}
    for name, key, factor in (
        ("h", "curvature", num_tasks),
        ("rel", "curvature_rel", 1 / num_tasks),
    ):
        first = factor * weighted_mean(early, lambda i, key=key: i.values[key])
        last = factor * weighted_mean(late, lambda i, key=key: i.values[key])
        positive = first > 0 and last > 0
        out |= {f"{name}_early": first, f"{name}_late": last}
        out[f"{name}_growth"] = math.log(last / first) if positive else math.nan
    curvature = [i.values["curvature"] for i in intervals]
    out["h_loss_corr"] = _correlation(curvature, [i.values["loss"] for i in intervals])
    return out


def _correlation(x: list[float], y: list[float]) -> float:
    a, b = np.array(x), np.array(y)
    keep = ~(np.isnan(a) | np.isnan(b))
    if keep.sum() < 3 or a[keep].std() == 0 or b[keep].std() == 0:
        return math.nan
    return float(np.corrcoef(a[keep], b[keep])[0, 1])


QUANTITIES = {
    "h_positive": "log intervals with H > 0 (weighted by diagnostic updates)",
    **{f"h_positive_{w}": f"intervals with H > 0, {WINDOWS[w]}" for w in EARLY},
    "h_early": "mean H (L = Σ Lᵢ), first third of the run",
    "h_late": "mean H (L = Σ Lᵢ), last third",
    "h_growth": "log(H last third / first third)",
    "rel_early": "mean H / ‖∇L‖² (L = Σ Lᵢ), first third",
    "rel_late": "mean H / ‖∇L‖² (L = Σ Lᵢ), last third",
    "rel_growth": "log(H / ‖∇L‖², last third / first third)",
    "h_loss_corr": "correlation of H with the loss over the log intervals",
    **{f"cond_a_{w}": f"(a) among conflicts, {text}" for w, text in WINDOWS.items()},
    **{f"xi_{w}": f"ξ ≤ 1 among conflicts, {text}" for w, text in WINDOWS.items()},
    "cond_a_fall": "(a) among conflicts, before minus after",
    "conflict": "task pairs in conflict",
}  # fmt: skip
SUCCESS = {
    "solved": "seeds that solved it at least once",
    "first_solved": "first solved at (transitions; unsolved seeds: the budget)",
    "final": "final success",
    "best": "best success",
    "late": f"mean success, last {LATE} evaluations",
}
DIGITS = {"first_solved": 0, "h_early": 3, "h_late": 3, "rel_early": 6, "rel_late": 6}


def estimate(values: Sequence[float], reps: int, seed: int) -> dict[str, Estimate]:
    """Mean and IQM over the seeds that have a value, with their bootstrap intervals."""
    present = np.array([v for v in values if not math.isnan(v)])
    if len(present) == 0:
        return {"mean": Estimate(math.nan), "iqm": Estimate(math.nan)}
    return stats.aggregates(present[:, None], reps, seed)


@dataclass
class Verdict:
    claim: str
    method: str
    evidence: str
    verdict: str


def judge(estimate: Estimate, threshold: float) -> str:
    """Reproduced above the threshold, contradicted below, unresolved when the interval holds it
    (or there is no interval)."""
    if math.isnan(estimate.value) or not estimate.has_interval:
        return UNRESOLVED
    if estimate.low > threshold:
        return REPRODUCED
    if estimate.high < threshold:
        return CONTRADICTED
    return UNRESOLVED


def show(e: Estimate, digits: int = 2, n: int | None = None) -> str:
    if math.isnan(e.value):
        return "—"
    text = f"{e.value:.{digits}f}"
    if e.has_interval:
        text += f" [{e.low:.{digits}f}, {e.high:.{digits}f}]"
    return text if n is None else f"{text} (n={n})"


@dataclass
class TriadClaims:
    """The Figure 4 numbers of one protocol's rows: per component, row label -> per-seed dicts."""

    rows: list[Row]
    task: str
    per_component: dict[str, dict[str, list[dict[str, float]]]]

    def values(self, component: str, label: str, quantity: str) -> list[float]:
        return [s[quantity] for s in self.per_component[component][label]]


def probe_rows(rows: list[Row]) -> list[Row]:
    """The rows restricted to their runs with a probe batch (``surgery.diagnostics_batch``)."""
    probed = [
        replace(row, runs=[r for r in row.runs if r.config.get("surgery.diagnostics_batch")])
        for row in rows
    ]
    return [row for row in probed if row.runs]


def triad_claims(rows: list[Row], task: str, components: Sequence[str] = COMPONENTS) -> TriadClaims:
    """The per-run numbers of every row, per component (``<component>/probe``: on the probe
    batch); ValueError (one line) when a run lacks the task or the diagnostics."""
    per_component = {
        component: {
            row.label: [
                run_claims(
                    r.path,
                    task,
                    component,
                    int(r.config.get("surgery.diagnostics_every") or 0),
                    len(r.tasks),
                )
                for r in row.runs
            ]
            for row in rows
        }
        for component in components
    }
    return TriadClaims(rows, task, per_component)


def quantity_table(
    claims: TriadClaims, component: str, names: dict[str, str], reps: int, seed: int
) -> str:
    """Rows: the quantities; columns: the methods; cells: mean [95% interval] (n seeds)."""
    labels = [row.label for row in claims.rows]
    lines = ["| | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for key, name in names.items():
        cells = []
        for label in labels:
            values = claims.values(component, label, key)
            n = sum(not math.isnan(v) for v in values)
            cells.append(show(estimate(values, reps, seed)["mean"], DIGITS.get(key, 2), n))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure4_verdicts(claims: TriadClaims, reps: int, seed: int) -> list[Verdict]:
    """Per method, on the critic loss: the curvature (positive; growing, read both as H and as
    H / ‖∇L‖²), condition (a) and ξ ≤ 1 among conflicts in the paper's window and before the task
    is solved, the fall of (a) once it is; and the learning claim, PCGrad over none."""
    checks = (
        ("H > 0 (first 20k transitions)", f"h_positive_{PAPER_WINDOW}", 0.5),
        ("H grows (log ratio, last/first third)", "h_growth", 0.0),
        ("H / ‖∇L‖² grows (log ratio)", "rel_growth", 0.0),
        ("most conflicts meet (a), first 20k transitions", f"cond_a_{PAPER_WINDOW}", 0.5),
        ("most conflicts meet (a) before the task is solved", "cond_a_before", 0.5),
        ("most conflicts have ξ ≤ 1, first 20k transitions", f"xi_{PAPER_WINDOW}", 0.5),
        ("most conflicts have ξ ≤ 1 before the task is solved", "xi_before", 0.5),
        ("(a) falls once the task is solved", "cond_a_fall", 0.0),
    )
    out = []
    for claim, quantity, threshold in checks:
        for row in claims.rows:
            values = claims.values("critic", row.label, quantity)
            n = sum(not math.isnan(v) for v in values)
            agg = estimate(values, reps, seed)
            evidence = f"mean {show(agg['mean'], 3)}, IQM {show(agg['iqm'], 3)} (n={n})"
            out.append(Verdict(claim, row.label, evidence, judge(agg["mean"], threshold)))
    out += learning_verdicts(claims, reps, seed)
    return out


def learning_verdicts(claims: TriadClaims, reps: int, seed: int) -> list[Verdict]:
    """SAC with PCGrad learns the task where plain SAC does not: P(PCGrad > none) on the task's
    success (final, best, mean of the last 10 evaluations), each PCGrad row against the plain
    row of the same model and config variant (e.g. the same budget)."""
    plain = {(row.method[0], row.variant): row for row in claims.rows if row.is_plain()}
    out = []
    for row in claims.rows:
        base = plain.get((row.method[0], row.variant))
        if row.method[1:] != ("pcgrad", "none") or base is None:
            continue
        for quantity in ("final", "best", "late"):
            x = np.array(claims.values("critic", row.label, quantity))[:, None]
            y = np.array(claims.values("critic", base.label, quantity))[:, None]
            p = stats.improvement(x, y, reps, seed)
            claim = f"PCGrad learns the task ({SUCCESS[quantity]})"
            evidence = f"P({row.label} > {base.label}) {show(p)}"
            out.append(Verdict(claim, row.label, evidence, judge(p, 0.5)))
    return out or [Verdict("PCGrad learns the task, SAC does not", "pcgrad", "no runs", UNRESOLVED)]


def ordering_verdicts(
    grouped: dict[ProtocolKey, list[Row]],
    pairs: Sequence[tuple[str, str]],
    claim: str,
    reps: int,
    seed: int,
    benchmark: str | None = None,
) -> list[Verdict]:
    """For each (better, worse) pair of row labels: P(better > worse) on the rows' final and best
    success scores (seeds x tasks), in every protocol (or those of ``benchmark``) holding both."""
    out = []
    for key, rows in grouped.items():
        if benchmark is not None and dict(key)["benchmark"] != benchmark:
            continue
        by_label = {row.label: row for row in rows}
        for better, worse in pairs:
            if better not in by_label or worse not in by_label:
                continue
            x, y = by_label[better], by_label[worse]
            for kind in ("final", "best"):
                p = stats.improvement(x.scores(kind), y.scores(kind, x.tasks), reps, seed)
                evidence = f"{protocol_label(key)}: P({better} > {worse}, {kind}) {show(p)}"
                out.append(Verdict(f"{claim}: {better} > {worse}", better, evidence, judge(p, 0.5)))
    return out or [Verdict(claim, "—", "no runs of both methods", UNRESOLVED)]


def probe_sections(rows: list[Row], task: str, reps: int, seed: int) -> list[str]:
    """The triad on the probe batches, for the runs that have them, beside the same runs' triad
    on their update batches: whether conflicts and (a) belong to the gradients or to the
    minibatch."""
    probed = probe_rows(rows)
    if not probed:
        return []
    components = [*COMPONENTS, *(f"{c}/probe" for c in COMPONENTS)]
    claims = triad_claims(probed, task, components)
    sizes = sorted({int(r.config["surgery.diagnostics_batch"]) for row in probed for r in row.runs})
    names = {k: v for k, v in QUANTITIES.items() if k.startswith(("cond_a", "xi", "conflict"))}
    parts = []
    for component in COMPONENTS:
        for which, title in ((component, "update batch"), (f"{component}/probe", "probe batch")):
            parts += ["", f"### {component} loss, {title}: runs with a probe batch "]
            parts[-1] += f"({', '.join(map(str, sizes))} per task)"
            parts += ["", quantity_table(claims, which, names, reps, seed)]
    return parts


def verdict_table(verdicts: list[Verdict]) -> str:
    lines = ["| claim | method | here | verdict |", "|---|---|---|---|"]
    lines += [f"| {v.claim} | {v.method} | {v.evidence} | **{v.verdict}** |" for v in verdicts]
    return "\n".join(lines)


def claims_markdown(grouped: dict[ProtocolKey, list[Row]], task: str, reps: int, seed: int) -> str:
    """Every claims table: per protocol that evaluates ``task`` with diagnostics, the success and
    the triad per component and Figure 4's verdicts; then Figure 3's and Section 5.2's verdicts.
    ValueError (one line) when no protocol evaluates ``task``."""
    parts = [
        "# The PCGrad paper's claims",
        "",
        f"Intervals: 95% stratified bootstrap over seeds ({reps} replicates, seed {seed}). "
        "Log intervals weighted by their diagnostic updates. H and H / ‖∇L‖² for the paper's "
        "L = Σᵢ Lᵢ (K times, and 1/K times, the values logged for the mean of the K losses).",
    ]
    triads = [
        (key, rows)
        for key, rows in grouped.items()
        if task in rows[0].tasks and len(rows[0].tasks) > 1
    ]
    if not triads:
        raise ValueError(f"no runs of a task set with the task '{task}'")
    for key, rows in triads:
        claims = triad_claims(rows, task)
        parts += ["", f"## {protocol_label(key)}", "", f"### {task}: success per method", ""]
        parts.append(quantity_table(claims, "critic", SUCCESS, reps, seed))
        for component in COMPONENTS:
            parts += ["", f"### The tragic triad, {component} loss", ""]
            parts.append(quantity_table(claims, component, QUANTITIES, reps, seed))
        parts += ["", "### Figure 4: verdicts at this scale (critic loss)", ""]
        parts.append(verdict_table(figure4_verdicts(claims, reps, seed)))
        parts += probe_sections(rows, task, reps, seed)
    figure3 = ordering_verdicts(grouped, FIGURE3_ORDER, "Figure 3", reps, seed)
    mt10 = ordering_verdicts(grouped, [("pcgrad", "none")], "Section 5.2, MT10", reps, seed, "mt10")
    parts += ["", "## Figure 3: the ordering of methods", "", verdict_table(figure3)]
    parts += ["", "## Section 5.2: MT10", "", verdict_table(mt10)]
    return "\n".join(parts) + "\n"
