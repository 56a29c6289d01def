"""The PCGrad paper's tragic-triad quantities (Definitions 1, 2, 5, Theorem 2, Section 5.3)
against hand-computed values and an independent per-pair formulation, and its ablations."""

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import mtrl.surgery as surgery

A = torch.tensor([4.0, 0.0])
B = torch.tensor([-1.0, 0.5])  # conflicts with A, meets (a) and xi <= 1
C = torch.tensor([3.0, 0.0])
D = torch.tensor([-1.0, 1.0])  # conflicts with C, meets neither


def test_two_tasks_meeting_both_conditions_by_hand():
    d = surgery.gram_diagnostics(torch.stack([A, B]).double())
    # cos = -4 / (4 * sqrt(1.25)); Phi = 2 * 4 * sqrt(1.25) / (16 + 1.25);
    # xi = (1 - cos^2) |(5, -0.5)|^2 / |(3, 0.5)|^2 = 0.2 * 25.25 / 9.25
    cos, phi, xi = -1 / math.sqrt(1.25), 8 * math.sqrt(1.25) / 17.25, 0.2 * 25.25 / 9.25
    assert d["pair_cos"].tolist() == pytest.approx([cos])
    assert d["pair_gms"].tolist() == pytest.approx([phi])
    assert d["pair_xi"].tolist() == pytest.approx([xi])
    assert cos <= -phi and xi <= 1
    assert (d["conflict"], d["cond_a"], d["xi_le_1"]) == (1, 1, 1)


def test_two_tasks_in_conflict_meeting_neither_condition_by_hand():
    d = surgery.gram_diagnostics(torch.stack([C, D]).double())
    # cos = -1/sqrt(2) > -Phi = -6 sqrt(2) / 11; xi = 0.5 * 17 / 5 = 1.7
    assert d["pair_cos"].item() == pytest.approx(-1 / math.sqrt(2))
    assert d["pair_gms"].item() == pytest.approx(6 * math.sqrt(2) / 11)
    assert d["pair_xi"].item() == pytest.approx(1.7)
    assert (d["conflict"], d["cond_a"], d["xi_le_1"]) == (1, 0, 0)


def test_three_tasks_with_a_zero_gradient_by_hand():
    """A zero gradient conflicts with nothing; its pairs have cos 0, Phi 0 and xi 1."""
    d = surgery.gram_diagnostics(torch.stack([A, B, torch.zeros(2)]).double())
    cos, phi, xi = -1 / math.sqrt(1.25), 8 * math.sqrt(1.25) / 17.25, 0.2 * 25.25 / 9.25
    assert d["pair_cos"].tolist() == pytest.approx([cos, 0, 0])  # pairs (0,1), (0,2), (1,2)
    assert d["pair_gms"].tolist() == pytest.approx([phi, 0, 0])
    assert d["pair_xi"].tolist() == pytest.approx([xi, 1, 1])
    for key in ("conflict", "cond_a", "xi_le_1"):
        assert d[key].item() == pytest.approx(1 / 3)
    assert d["cos"].item() == pytest.approx(cos / 3)
    assert d["xi"].item() == pytest.approx((xi + 2) / 3)
    assert d["gms_min"].item() == 0


def test_three_tasks_two_conflicts_neither_condition_by_hand():
    """(C, D) and (D, E) conflict, (C, E) is orthogonal: xi (C, D) 1.7, (C, E) 13/13 = 1,
    (D, E) 0.5 * 10 / 2 = 2.5; Phi (D, E) = 4 sqrt(2) / 6 > 1/sqrt(2)."""
    E = torch.tensor([0.0, -2.0])
    d = surgery.gram_diagnostics(torch.stack([C, D, E]).double())
    assert d["pair_xi"].tolist() == pytest.approx([1.7, 1.0, 2.5])
    assert d["pair_gms"].tolist() == pytest.approx([6 * math.sqrt(2) / 11, 12 / 13, 4 * 2**0.5 / 6])
    assert d["conflict"].item() == pytest.approx(2 / 3)
    assert d["cond_a"] == 0 and d["xi_le_1"] == 0


def test_both_rows_zero_and_one_task():
    d = surgery.gram_diagnostics(torch.zeros(2, 3))
    assert d["pair_cos"].tolist() == [0] and d["pair_gms"].tolist() == [1]
    assert d["pair_xi"].tolist() == [0] and d["conflict"] == 0
    d = surgery.gram_diagnostics(torch.ones(1, 3))
    assert d["pair_cos"].numel() == 0
    assert (d["cos"], d["gms"], d["xi"], d["conflict"], d["cond_a"]) == (1, 1, 0, 0, 0)


def reference_pairs(g: np.ndarray) -> list[tuple[float, float, float]]:
    """cos, Phi and xi of every pair i < j straight from the definitions, in float64."""
    out = []
    for i, j in itertools.combinations(range(len(g)), 2):
        a, b = g[i], g[j]
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        cos = a @ b / (na * nb) if na * nb > 0 else 0.0
        phi = 2 * na * nb / (na**2 + nb**2) if na + nb > 0 else 1.0
        s = np.linalg.norm(a + b) ** 2
        xi = (1 - cos**2) * np.linalg.norm(a - b) ** 2 / s if s > 0 else 0.0
        out.append((cos, phi, xi))
    return out


@settings(max_examples=60, deadline=None)
@given(
    arrays(
        np.float64,
        st.tuples(st.integers(2, 5), st.integers(1, 6)),
        # exact zeros, or magnitudes whose squares do not underflow in the Gram matrix
        elements=st.floats(-10, 10).map(lambda x: 0.0 if abs(x) < 1e-3 else x),
    )
)
def test_pair_statistics_equal_the_definitions(g):
    d = surgery.gram_diagnostics(torch.from_numpy(g))
    ref = np.array(reference_pairs(g))
    for k, key in enumerate(("pair_cos", "pair_gms", "pair_xi")):
        np.testing.assert_allclose(d[key].numpy(), ref[:, k], rtol=1e-6, atol=1e-6)
    cos, phi, xi = ref.T
    dots = np.array([g[i] @ g[j] for i, j in itertools.combinations(range(len(g)), 2)])
    conflict = dots < 0
    assert d["conflict"].item() == pytest.approx(conflict.mean())
    assert d["cond_a"].item() == pytest.approx((conflict & (cos <= -phi + 1e-12)).mean())
    assert d["xi_le_1"].item() == pytest.approx((conflict & (xi <= 1 + 1e-12)).mean())


def test_curvature_of_a_step_on_a_quadratic_is_exact():
    """For L = x^T A x / 2 + b^T x, 2 [L(x + s) - L(x) - grad^T s] = s^T A s for every step."""
    gen = torch.Generator().manual_seed(0)
    M = torch.randn(6, 6, generator=gen, dtype=torch.float64)
    A, b = M @ M.T, torch.randn(6, generator=gen, dtype=torch.float64)

    def loss(x):
        return 0.5 * x @ A @ x + b @ x

    for _ in range(5):
        x, step = (torch.randn(6, generator=gen, dtype=torch.float64) for _ in range(2))
        grad = A @ x + b
        out = surgery.step_curvature(loss(x), loss(x + step), grad, step)
        torch.testing.assert_close(out["curvature"], step @ A @ step)
        torch.testing.assert_close(out["curvature_rel"], step @ A @ step / (grad @ grad))
    zero = torch.zeros(6, dtype=torch.float64)
    assert surgery.step_curvature(loss(zero), loss(zero), zero, zero)["curvature_rel"] == 0


# ------------------------------------------------------------------------- ablations
def test_ablations_by_hand():
    """g1 = (1, 0), g2 = (-1, 1): PCGrad's rows (0.5, 0.5) and (0, 1), update (0.25, 0.75) of
    norm sqrt(10)/4; the mean (0, 0.5) has norm 0.5."""
    g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    pc = surgery.make("pcgrad")(g)
    torch.testing.assert_close(pc, torch.tensor([0.25, 0.75], dtype=torch.float64))
    direction = surgery.make("pcgrad_direction")(g)
    torch.testing.assert_close(direction, pc * 0.5 / (math.sqrt(10) / 4))
    magnitude = surgery.make("pcgrad_magnitude")(g)
    torch.testing.assert_close(magnitude, torch.tensor([0.0, math.sqrt(10) / 4]).double())


def test_ablations_without_conflict_are_the_mean():
    g = torch.tensor([[1.0, 2.0], [3.0, 0.5]])
    for name in ("pcgrad_direction", "pcgrad_magnitude"):
        torch.testing.assert_close(surgery.make(name)(g), g.mean(0))


def test_ablations_of_opposite_gradients_are_zero():
    g = torch.tensor([[1.0, 2.0], [-1.0, -2.0]])
    for name in ("pcgrad", "pcgrad_direction", "pcgrad_magnitude"):
        assert torch.equal(surgery.make(name)(g), torch.zeros(2))


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 6), st.integers(0, 2**31 - 1))
def test_ablations_take_one_property_each_from_pcgrad_and_the_mean(K, seed):
    g = torch.randn(K, 7, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    pc = surgery.make("pcgrad", seed=3)(g)
    mean = g.mean(0)
    direction = surgery.make("pcgrad_direction", seed=3)(g)
    magnitude = surgery.make("pcgrad_magnitude", seed=3)(g)
    torch.testing.assert_close(direction.norm(), mean.norm())
    torch.testing.assert_close(direction / direction.norm(), pc / pc.norm())
    torch.testing.assert_close(magnitude.norm(), pc.norm())
    torch.testing.assert_close(magnitude / magnitude.norm(), mean / mean.norm())
