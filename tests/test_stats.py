"""mtrl.stats against rliable called directly on the same scores with the same seed."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mtrl.analysis import stats

library = pytest.importorskip("rliable.library")
metrics = pytest.importorskip("rliable.metrics")

REPS = 300


def _rliable(data, func, seed: int = 3, reps: int = REPS):
    """rliable as its README shows it, reproducible through numpy's global seed."""
    np.random.seed(seed)
    points, intervals = library.get_interval_estimates({"x": data}, func, reps=reps)
    return np.atleast_1d(points["x"]), intervals["x"]


def _mean_and_iqm(scores):
    return np.array([metrics.aggregate_mean(scores), metrics.aggregate_iqm(scores)])


def _success(runs: int, tasks: int, seed: int) -> np.ndarray:
    """Success rates of 10-episode evaluations: multiples of 0.1, so ties are common."""
    return np.random.default_rng(seed).integers(0, 11, (runs, tasks)) / 10


# Success rates from few values (many ties), at most 6 runs and 4 tasks.
score_matrices = st.tuples(st.integers(1, 6), st.integers(1, 4)).flatmap(
    lambda shape: arrays(np.float64, shape, elements=st.sampled_from([0.0, 0.2, 0.5, 0.9, 1.0]))
)


@settings(max_examples=8, deadline=None)
@given(scores=score_matrices.filter(lambda s: len(s) >= 2), seed=st.integers(0, 2**31 - 1))
def test_aggregates_are_rliables(scores, seed):
    points, interval = _rliable(scores, _mean_and_iqm, seed)
    found = stats.aggregates(scores, REPS, seed)
    assert [found["mean"].value, found["iqm"].value] == points.tolist()
    assert [found["mean"].low, found["iqm"].low] == interval[0].tolist()
    assert [found["mean"].high, found["iqm"].high] == interval[1].tolist()


def test_aggregates_by_hand():
    scores = np.array([[0.0, 1.0], [0.2, 0.4], [0.6, 0.8], [0.1, 0.9]])
    found = stats.aggregates(scores, REPS, 0)
    assert found["mean"].value == pytest.approx(scores.mean())
    # 8 scores, 25% cut at each end: 0.2, 0.4, 0.6, 0.8 remain.
    assert found["iqm"].value == pytest.approx(0.5)
    for estimate in found.values():
        assert estimate.low <= estimate.value <= estimate.high


def test_one_run_has_no_interval():
    found = stats.aggregates(np.array([[0.3, 0.7]]), REPS, 0)
    assert found["mean"].value == pytest.approx(0.5) and not found["mean"].has_interval
    assert not stats.improvement(np.array([[1.0]]), np.array([[0.0], [1.0]]), REPS, 0).has_interval


@settings(max_examples=60, deadline=None)
@given(x=score_matrices, y=score_matrices)
def test_probability_of_improvement_is_rliables(x, y):
    y = y[:, : x.shape[1]]
    x = x[:, : y.shape[1]]
    expected = metrics.probability_of_improvement(x, y)
    assert stats.probability_of_improvement(x, y) == expected  # the same float, ties included
    assert stats.probability_of_improvement(x, y) + stats.probability_of_improvement(
        y, x
    ) == pytest.approx(1.0)


def test_probability_of_improvement_with_ties_by_hand():
    x = np.array([[1.0, 0.0], [1.0, 1.0]])
    y = np.array([[1.0, 0.0], [0.0, 0.0]])
    # Task 0: pairs (1,1) tie, (1,0) win, (1,1) tie, (1,0) win -> 3/4.
    # Task 1: pairs (0,0) tie, (0,0) tie, (1,0) win, (1,0) win -> 3/4.
    assert stats.probability_of_improvement(x, y) == 0.75
    assert stats.probability_of_improvement(x, x) == 0.5
    assert stats.probability_of_improvement(np.ones((3, 2)), np.ones((2, 2))) == 0.5


def test_improvement_interval_is_rliables():
    x, y = _success(4, 3, 0), _success(3, 3, 1)
    points, interval = _rliable([x, y], metrics.probability_of_improvement, seed=11)
    found = stats.improvement(x, y, REPS, 11)
    assert (found.value, found.low, found.high) == (points[0], interval[0, 0], interval[1, 0])
    with pytest.raises(ValueError, match="same tasks"):
        stats.improvement(x, y[:, :2], REPS, 11)


def test_reproducible_whatever_the_global_rng_and_left_as_it_was():
    scores = _success(5, 4, 2)
    np.random.seed(99)
    state = np.random.get_state()
    first = stats.aggregates(scores, REPS, 7)
    after = np.random.get_state()
    assert after[0] == state[0] and np.array_equal(after[1], state[1]) and after[2:] == state[2:]
    np.random.seed(12345)
    assert stats.aggregates(scores, REPS, 7) == first
    other = stats.aggregates(scores, REPS, 8)
    assert other["mean"].value == first["mean"].value
    assert (other["mean"].low, other["mean"].high) != (first["mean"].low, first["mean"].high)


def test_curve_bands_are_rliables_per_evaluation():
    scores = np.stack([_success(4, 3, seed) for seed in range(5)], axis=-1)  # [4, 3, 5]

    def per_frame(s):
        frames = range(s.shape[-1])
        return np.array(
            [metrics.aggregate_mean(s[..., k]) for k in frames]
            + [metrics.aggregate_iqm(s[..., k]) for k in frames]
        )

    points, interval = _rliable(scores, per_frame, seed=4)
    bands = stats.curve_bands(scores, REPS, 4)
    expected = np.vstack([points, interval])
    # The same resamples; vectorised over evaluations, so equal up to the order of summation.
    np.testing.assert_allclose(bands["mean"], expected[:, :5], rtol=0, atol=1e-12)
    np.testing.assert_allclose(bands["iqm"], expected[:, 5:], rtol=0, atol=1e-12)
    one = stats.curve_bands(scores[:1], REPS, 4)
    assert np.isnan(one["mean"][1:]).all()
    np.testing.assert_allclose(one["mean"][0], scores[0].mean(axis=0))


def test_task_means_are_rliables():
    scores = _success(5, 3, 6)
    points, interval = _rliable(scores, lambda s: s.mean(axis=0), seed=2)
    np.testing.assert_array_equal(stats.task_means(scores, REPS, 2), np.vstack([points, interval]))


def test_mean_bands_use_the_runs_present_at_each_step():
    values = np.array(
        [
            [0.1, 0.2, np.nan, 0.4, np.nan, np.nan],
            [0.3, 0.6, 0.5, np.nan, np.nan, 0.9],
            [0.8, 0.1, 0.7, 0.6, np.nan, np.nan],
        ]
    )
    bands = stats.mean_bands(values, REPS, 5)
    np.testing.assert_allclose(bands[0, :4], [0.4, 0.3, 0.6, 0.5])
    assert bands[0, 5] == 0.9 and np.isnan(bands[1:, 5]).all()  # one run: no interval
    assert np.isnan(bands[:, 4]).all()  # no run
    # Steps 0 and 1 (all runs) are bootstrapped together, as rliable would do it.
    _, full = _rliable(values[:, None, :2], lambda s: s.mean(axis=(0, 1)), seed=5)
    np.testing.assert_array_equal(bands[1:, :2], full)
    # Step 2 (runs 1, 2) and step 3 (runs 0, 2): each with its own runs.
    _, step2 = _rliable(values[1:, None, 2:3], lambda s: s.mean(axis=(0, 1)), seed=5)
    np.testing.assert_array_equal(bands[1:, 2:3], step2)
    for step in range(4):
        present = values[:, step][~np.isnan(values[:, step])]
        low, mean, high = bands[1, step], bands[0, step], bands[2, step]
        assert present.min() - 1e-12 <= low <= mean <= high <= present.max() + 1e-12
    assert not math.isnan(bands[1, 3])
