"""CAGrad (both solvers) against an independent solve of the paper's primal problem (Liu et al.
2021, Eq. 3), written here in parameter space and solved by a generic conic solver (Clarabel
through cvxpy, float64):

    max_d min_i g_i . d   subject to   |d - g_0| <= c |g_0|,   g_0 = mean of the rows,

on K = 50 problems with strong conflicts and row norms three decades apart. The KKT conditions
are checked on the method's own weights: d - g_0 = c |g_0| g_lam / |g_lam| for a lam on the
simplex that puts weight only on the tasks that attain min_i g_i . d.
"""

import functools
import warnings

import cvxpy as cp
import numpy as np
import pytest
import torch

import mtrl.surgery as surgery
from mtrl.surgery import _device, _solvers, methods

K, P, C = 50, 1000, 0.5
SEEDS = [56, 0, 1, 2]
"""Seed 56: the former exact solver (a barrier method refined on a support guess) returned
weights on all 50 tasks there, 2e-3 |g_0| off the KKT conditions; the optimum has 5."""
TOLERANCE = {"exact": 1e-9, "device": 1e-7}
"""On values and KKT residuals, relative to max_i |g_i| |g_0|."""


def conflicting(seed: int) -> np.ndarray:
    """[K, P]: the second half of the rows nearly opposite to the first (cos about -0.96),
    every row scaled by 10^U(0, 3)."""
    rng = np.random.default_rng(seed)
    J = rng.standard_normal((K, P))
    J[K // 2 :] = -J[: K // 2] + 0.3 * rng.standard_normal((K - K // 2, P))
    return J * 10 ** rng.uniform(0, 3, size=(K, 1))


@functools.cache
def reference(seed: int) -> tuple[np.ndarray, float]:
    """The paper's primal problem for ``conflicting(seed)``: (d, min_i g_i . d)."""
    J = conflicting(seed)
    scale = np.linalg.norm(J, axis=1).max()
    A = J / scale
    g0 = A.mean(0)
    d, worst = cp.Variable(P), cp.Variable()
    problem = cp.Problem(
        cp.Maximize(worst), [A @ d >= worst, cp.norm(d - g0) <= C * np.linalg.norm(g0)]
    )
    problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    assert problem.status == cp.OPTIMAL
    return d.value * scale, problem.value * scale**2


def weights(J: np.ndarray, solver: str) -> np.ndarray:
    """The method's weights on the rows (d = weights @ J), from the chosen solver."""
    G, m = J @ J.T, np.full(K, 1.0 / K)
    if solver == "exact":
        return methods.cagrad_weights(G, m, np.eye(K), C)
    t = torch.from_numpy
    return _device.cagrad_weights(t(G), t(m), torch.eye(K, dtype=torch.float64), C).numpy()


@pytest.mark.parametrize("solver", ["exact", "device"])
@pytest.mark.parametrize("seed", SEEDS)
def test_cagrad_solves_the_papers_problem(seed, solver):
    J = conflicting(seed)
    d_ref, value_ref = reference(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("error", surgery.SolverWarning)
        w = weights(J, solver)
        update = surgery.make("cagrad", c=C, solver=solver)(torch.from_numpy(J)).numpy()
    d = w @ J
    tol = TOLERANCE[solver]
    np.testing.assert_allclose(update, d, rtol=0, atol=10 * tol * np.abs(d).max())

    g0 = J.mean(0)
    radius = C * np.linalg.norm(g0)
    unit = np.linalg.norm(J, axis=1).max() * np.linalg.norm(g0)
    products = J @ d
    # Feasible, as good as the independent solve, and the same point (the optimum is unique).
    assert np.linalg.norm(d - g0) <= radius * (1 + 1e-9)
    assert abs(products.min() - value_ref) <= tol * unit
    np.testing.assert_allclose(d, d_ref, rtol=0, atol=1e-4 * np.linalg.norm(d_ref))
    # KKT: lam on the simplex, d - g_0 along g_lam at the full radius, lam only on worst tasks.
    lam = w - 1.0 / K
    lam = lam / lam.sum()
    assert lam.min() >= -1e-12
    g_lam = lam @ J
    np.testing.assert_allclose(d - g0, radius * g_lam / np.linalg.norm(g_lam), atol=tol * radius)
    assert lam @ (products - products.min()) <= tol * unit
    assert (lam > 1e-6).sum() < K  # the former solver's failure: weight on every task


def test_exact_solvers_never_stop_early_silently():
    """A solver that runs out of steps says so (``SolverWarning``) instead of returning the
    unfinished point as if it were the answer."""
    J = conflicting(56)
    G, m = J @ J.T, np.full(K, 1.0 / K)
    with pytest.warns(surgery.SolverWarning, match="CAGrad"):
        _solvers.cagrad_dual(G, m, C, max_steps=1)
    with pytest.warns(surgery.SolverWarning, match="Wolfe"):
        _solvers.min_norm_simplex(G, max_iter=2)
    N, norms, _ = _solvers.cosine_matrix(G)
    with pytest.warns(surgery.SolverWarning, match="non-negative QP"):
        _solvers.nnqp(N, (G @ m) / norms, max_iter=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", surgery.SolverWarning)
        _solvers.cagrad_dual(G, m, C)
        _solvers.min_norm_simplex(G)
        _solvers.nnqp(N, (G @ m) / norms)
