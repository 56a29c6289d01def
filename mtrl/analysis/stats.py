"""Few-seed statistics of success rates, the way Agarwal et al. (NeurIPS 2021) ask, via ``rliable``.

A **score** is the success rate of one task in one run (one seed). A method's scores form a
matrix ``[runs, tasks]`` (rliable's layout); learning curves add an evaluation axis,
``[runs, tasks, evaluations]``.

- **mean**: the mean of all scores (rliable's ``aggregate_mean``: the mean over tasks of each
  task's mean over runs, which is the mean over seeds of the success averaged over tasks).
- **IQM**: the interquartile mean of all ``runs x tasks`` scores pooled, the mean of the middle
  50% (rliable's ``aggregate_iqm``: 25% trimmed at each end).
- **probability of improvement** of X over Y: the probability that a run of X scores higher than a
  run of Y on the same task, ties counting one half, averaged over tasks (rliable's
  ``probability_of_improvement``, the Mann-Whitney U statistic over ``n_X * n_Y``).
- **95% intervals**: percentile intervals of rliable's stratified bootstrap: each replicate
  resamples the runs with replacement, independently within each task (the tasks are the
  strata, as rliable defines it; the tasks themselves are not resampled). For the probability of
  improvement the runs of both methods are resampled independently. With one run there is no
  interval (``nan``): resampling one run always gives it back.

Reproducibility: rliable 1.2 draws its resampling indices from numpy's *global* legacy RNG
(``np.random.choice`` in ``StratifiedBootstrap.update_indices``); the ``random_state`` it accepts
reaches only ``arch``'s base class, whose own draws rliable overrides. Each estimate here therefore
seeds that RNG with the bootstrap seed for the length of the call and restores its previous state
afterwards: the same scores, replicate count and seed give the same interval whatever ran before,
and the caller's global RNG is left as it was.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

CONFIDENCE = 0.95
DEFAULT_REPS = 2000
"""Bootstrap replicates by default: the endpoints of a 95% interval move by well under a percentage
point of success from one bootstrap seed to another. Use 50000 (rliable's default) for numbers
that get published."""
DEFAULT_SEED = 0
MIN_REPS = 100


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its 95% bootstrap interval (``nan`` bounds: no interval)."""

    value: float
    low: float = math.nan
    high: float = math.nan

    @property
    def has_interval(self) -> bool:
        return not math.isnan(self.low)


def _rliable() -> tuple[Any, Any]:
    """rliable's ``library`` and ``metrics`` (imported on use: they take seconds to import)."""
    from rliable import library, metrics

    return library, metrics


@contextmanager
def seeded_global_rng(seed: int) -> Iterator[None]:
    """numpy's global legacy RNG seeded with ``seed`` inside, restored to its state on exit."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _interval(
    data: np.ndarray | list[np.ndarray], func: Callable[..., Any], reps: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """rliable's point estimate and ``[2, k]`` stratified-bootstrap interval of ``func``."""
    library, _ = _rliable()
    with seeded_global_rng(seed):
        points, intervals = library.get_interval_estimates(
            {"x": data}, func, reps=reps, confidence_interval_size=CONFIDENCE
        )
    return np.atleast_1d(points["x"]), intervals["x"]


def _aggregates(scores: np.ndarray) -> np.ndarray:
    _, metrics = _rliable()
    return np.array([metrics.aggregate_mean(scores), metrics.aggregate_iqm(scores)])


def aggregates(scores: np.ndarray, reps: int, seed: int) -> dict[str, Estimate]:
    """The mean and the IQM of a ``[runs, tasks]`` score matrix, with their intervals (both from
    the same bootstrap replicates)."""
    scores = np.asarray(scores, dtype=float)
    if len(scores) < 2:
        mean, iqm = _aggregates(scores)
        return {"mean": Estimate(float(mean)), "iqm": Estimate(float(iqm))}
    points, interval = _interval(scores, _aggregates, reps, seed)
    return {
        name: Estimate(float(points[i]), float(interval[0, i]), float(interval[1, i]))
        for i, name in enumerate(("mean", "iqm"))
    }


def probability_of_improvement(scores_x: np.ndarray, scores_y: np.ndarray) -> float:
    """P(X > Y) per task (ties count 1/2), averaged over tasks; ``[runs, tasks]`` each.

    The same numbers as rliable's ``metrics.probability_of_improvement`` (a Mann-Whitney U per
    task; tested equal), counted over all run pairs at once instead of one scipy call per task:
    rliable's version spends about a millisecond per task and replicate, minutes per comparison
    on MT10 at 2000 replicates."""
    x = np.asarray(scores_x, dtype=float)[:, None, :]
    y = np.asarray(scores_y, dtype=float)[None, :, :]
    wins = (x > y).sum(axis=(0, 1)) + 0.5 * (x == y).sum(axis=(0, 1))
    return float(np.mean(wins / (x.shape[0] * y.shape[1])))


def improvement(scores_x: np.ndarray, scores_y: np.ndarray, reps: int, seed: int) -> Estimate:
    """The probability that X improves on Y with its interval (runs of X and of Y resampled
    independently, within each task). No interval unless both have two runs or more."""
    x, y = np.asarray(scores_x, dtype=float), np.asarray(scores_y, dtype=float)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"X has {x.shape[1]} tasks, Y {y.shape[1]}: compare the same tasks")
    if min(len(x), len(y)) < 2:
        return Estimate(probability_of_improvement(x, y))
    points, interval = _interval([x, y], probability_of_improvement, reps, seed)
    return Estimate(float(points[0]), float(interval[0, 0]), float(interval[1, 0]))


def _per_evaluation(scores: np.ndarray) -> np.ndarray:
    """Mean and IQM at each evaluation of a ``[runs, tasks, evaluations]`` array, concatenated."""
    from scipy.stats import trim_mean

    flat = scores.reshape(-1, scores.shape[-1])
    return np.concatenate([flat.mean(axis=0), trim_mean(flat, 0.25, axis=0)])


def curve_bands(scores: np.ndarray, reps: int, seed: int) -> dict[str, np.ndarray]:
    """Mean and IQM over runs and tasks at each evaluation, as ``[3, evaluations]`` arrays (value,
    low, high), from ``[runs, tasks, evaluations]`` scores. Each evaluation is a stratum of its own
    too (rliable's resampling of a 3-d score array), so each band is that evaluation's interval."""
    scores = np.asarray(scores, dtype=float)
    n = scores.shape[-1]
    points = _per_evaluation(scores)
    if len(scores) < 2:
        interval = np.full((2, 2 * n), np.nan)
    else:
        points, interval = _interval(scores, _per_evaluation, reps, seed)
    bands = np.vstack([points, interval])
    return {"mean": bands[:, :n], "iqm": bands[:, n:]}


def task_means(scores: np.ndarray, reps: int, seed: int) -> np.ndarray:
    """Each task's mean over runs with its interval, ``[3, tasks]``, from ``[runs, tasks]``."""
    scores = np.asarray(scores, dtype=float)
    if len(scores) < 2:
        mean = scores.mean(axis=0)
        return np.vstack([mean, np.full((2, len(mean)), np.nan)])
    points, interval = _interval(scores, lambda s: s.mean(axis=0), reps, seed)
    return np.vstack([points, interval])


def mean_bands(values: np.ndarray, reps: int, seed: int) -> np.ndarray:
    """Mean over runs at each step with its interval, ``[3, steps]``, from ``[runs, steps]``
    values where ``nan`` marks a run without a value at that step.

    Each step uses the runs that have a value there; steps with the same runs present are
    bootstrapped together (one stratum per step). A step with one value has no interval, one
    without values is ``nan``."""
    values = np.asarray(values, dtype=float)
    present = ~np.isnan(values)
    count = present.sum(axis=0)
    out = np.full((3, values.shape[1]), np.nan)
    some = count > 0
    out[0, some] = np.where(present, values, 0.0)[:, some].sum(axis=0) / count[some]
    patterns: dict[bytes, list[int]] = {}
    for step in np.flatnonzero(count >= 2):
        patterns.setdefault(present[:, step].tobytes(), []).append(int(step))
    for steps in patterns.values():
        runs = present[:, steps[0]]
        sub = values[runs][:, steps][:, None, :]  # [runs, 1 stratum, steps]
        points, interval = _interval(sub, lambda s: s.mean(axis=(0, 1)), reps, seed)
        out[:, steps] = np.vstack([points, interval])
    return out
