"""The device solvers (torch ops, fixed iteration counts) against the exact numpy solvers, on CPU.

Tolerances are relative to the largest gradient norm |g|max (updates) or its square (objective
values). A Gram-space objective resolves an update only to about sqrt(float64 eps) |g|max ~ 1e-8
|g|max where it is near 0 (x^T G x rounds at 1e-16 |g|max^2), hence 1e-7 there.
"""

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import mtrl.surgery as surgery
from mtrl.surgery import _device, _solvers
from mtrl.surgery.methods import gradops_coefficients

SETTINGS = settings(max_examples=30, deadline=None)
SOLVED = ["cagrad", "cagrad_fast", "mgda", "gradops", "upgrad"]
"""Methods with a ``solver`` option."""


@st.composite
def problems(draw, k_max=8, degenerate=True):
    """[K, P] gradients with per-row scales over four decades; optionally a duplicated row, a
    zero row, or more tasks than dimensions (0 in the convex hull, singular Gram matrices)."""
    K = draw(st.integers(2, k_max))
    P = draw(st.integers(1, 12))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    g = torch.randn(K, P, generator=gen, dtype=torch.float64)
    g = g * 10 ** (torch.rand(K, 1, generator=gen, dtype=torch.float64) * 4 - 2)
    if degenerate:
        kind = draw(st.sampled_from(["none", "duplicate", "zero"]))
        if kind == "duplicate":
            g[1] = g[0]
        elif kind == "zero":
            g[K - 1] = 0
    return g


def both(name, g, **options):
    """(exact update, device update) with the same seed (the same random draws on the CPU)."""
    exact = surgery.make(name, seed=3, solver="exact", **options)(g)
    device = surgery.make(name, seed=3, solver="device", **options)(g)
    return exact, device


def top(g):
    return g.norm(dim=1).max()


# ------------------------------------------------------------------------------ MGDA
@SETTINGS
@given(problems())
def test_mgda_device_min_norm_point_equals_exact(g):
    exact, device = both("mgda", g)
    assert torch.isfinite(device).all()
    assert device.norm() <= exact.norm() + 1e-7 * top(g)
    torch.testing.assert_close(device, exact, rtol=0, atol=1e-7 * top(g))


@SETTINGS
@given(problems(k_max=12))
def test_mgda_device_weights_are_on_the_simplex(g):
    G = g @ g.T
    w = _device.min_norm_simplex(G)
    assert (w >= 0).all() and abs(w.sum() - 1) < 1e-12
    w_exact = torch.from_numpy(_solvers.min_norm_simplex(G.numpy()))
    assert w @ G @ w <= w_exact @ G @ w_exact + 1e-12 * G.diagonal().max()


# ---------------------------------------------------------------------------- CAGrad
def cagrad_value(g, d):
    """CAGrad's primal objective: the worst task's rate of decrease, min_i g_i . d."""
    return (g @ d).min()


@SETTINGS
@given(problems(), st.sampled_from([0.2, 0.5, 0.9]))
def test_cagrad_device_is_feasible_and_as_good_as_exact(g, c):
    exact, device = both("cagrad", g, c=c)
    g0 = g.mean(0)
    assert torch.isfinite(device).all()
    assert (device - g0).norm() <= c * g0.norm() * (1 + 1e-9) + 1e-15
    assert cagrad_value(g, device) >= cagrad_value(g, exact) - 1e-9 * top(g) ** 2


@SETTINGS
@given(problems(degenerate=False), st.sampled_from([0.2, 0.5, 0.9]))
def test_cagrad_device_update_equals_exact(g, c):
    """Where 0 is clearly outside the convex hull of the rows. Near it, g_w / |g_w| is ill
    conditioned and the exact solver is itself off (the test above: the device solver is then
    at least as good)."""
    G = (g @ g.T).numpy()
    w = _solvers.min_norm_simplex(G)
    assume(w @ G @ w > 1e-6 * G.diagonal().max())
    exact, device = both("cagrad", g, c=c)
    torch.testing.assert_close(device, exact, rtol=0, atol=1e-6 * top(g))


def test_cagrad_device_degenerate_case_is_the_projection_onto_the_dual_cone():
    """0 in the hull (g_3 = 0) with a nonzero mean: the optimal g_w is 0 and the update is the
    point of {d : g_i . d >= 0} closest to g_0; here g_0 itself conflicts with g_2."""
    g = torch.tensor([[1.0, 0.0], [-0.2, 1.0], [0.0, 0.0]], dtype=torch.float64)
    exact, device = both("cagrad", g)
    torch.testing.assert_close(device, exact, rtol=1e-9, atol=1e-12)
    assert (g @ device >= -1e-12).all()


@pytest.mark.parametrize("c", [1.5, 2.0, 10.0])
def test_cagrad_c_above_one_with_0_inside_the_hull_is_degenerate_on_both_solvers(c):
    """With c > 1 and 0 inside the hull, F >= (c - 1) |g_0| |g_w| > 0 for g_w != 0: the optimal
    g_w is 0, and as no direction avoids every conflict among 12 rows around 0 in 3 dimensions
    the update is 0. (The device solver used to call its near-0 g_w regular and return
    g_0 + rho times a direction of rounding noise.)"""
    g = torch.randn(12, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    closest = torch.from_numpy(_solvers.min_norm_simplex((g @ g.T).numpy())) @ g
    assert closest.norm() <= 1e-12 * top(g)  # 0 is in the hull
    exact, device = both("cagrad", g, c=c)
    torch.testing.assert_close(exact, torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(device, exact, rtol=0, atol=1e-9 * top(g))


@SETTINGS
@given(problems(k_max=8), st.integers(1, 8))
def test_cagrad_fast_device_equals_exact_with_the_same_groups(g, k):
    exact, device = both("cagrad_fast", g, k=k)
    assert torch.isfinite(device).all()
    groups = surgery.make("cagrad_fast", seed=3, k=k)
    groups(g)
    g0 = g.mean(0)
    assert (device - g0).norm() <= 0.5 * g0.norm() * (1 + 1e-9) + 1e-15
    grouped = groups.last_partition @ g  # CAGrad's objective on the group gradients
    assert cagrad_value(grouped, device) >= cagrad_value(grouped, exact) - 1e-9 * top(g) ** 2


# ---------------------------------------------------------------------------- GradOPS
@SETTINGS
@given(problems(), st.sampled_from([-2.0, 0.0, 1.5]))
def test_gradops_device_equals_exact(g, alpha):
    exact, device = both("gradops", g, alpha=alpha)
    torch.testing.assert_close(device, exact, rtol=0, atol=1e-7 * top(g))


@SETTINGS
@given(problems(k_max=10))
def test_gradops_gram_schmidt_coefficients_equal_the_pseudo_inverse(g):
    G = g @ g.T
    exact = torch.from_numpy(gradops_coefficients(G.numpy(), 2.2e-16))
    device = _device.gradops_coefficients(G, 2.2e-16)
    torch.testing.assert_close(device @ g, exact @ g, rtol=0, atol=1e-7 * top(g))


# ----------------------------------------------------------------------------- UPGrad
@SETTINGS
@given(problems())
def test_upgrad_device_equals_exact_and_conflicts_with_no_task(g):
    exact, device = both("upgrad", g)
    torch.testing.assert_close(device, exact, rtol=0, atol=1e-7 * top(g))
    norms = g.norm(dim=1)
    assert ((g @ device) >= -1e-9 * norms * norms.max()).all()


# ---------------------------------------------------------------- the shared interior point
@SETTINGS
@given(problems(k_max=10))
def test_dual_cone_projection_equals_the_active_set_solution(g):
    """The orthant problems: min 1/2 z^T N z + q.z over z >= 0 (CAGrad's degenerate case)."""
    N, _, active = _solvers.cosine_matrix((g @ g.T).numpy())
    q = -N[:, 0] + 0.1  # project -u_0 + a bit: conflicts with most rows
    q = np.where(active, q, 0.0)
    z_exact = _solvers.nnqp(N, q)
    Nt = torch.from_numpy(N)
    ridge = torch.diag(torch.where(torch.from_numpy(active), _device.NNQP_RIDGE, 1.0))
    zeros = torch.zeros_like(Nt)
    z = _device.solve(_device._batch((zeros, torch.from_numpy(q), 0.0, Nt + ridge, False)))[0]
    assert (z >= 0).all()
    value = 0.5 * z @ Nt @ z + torch.from_numpy(q) @ z
    exact_value = 0.5 * z_exact @ N @ z_exact + q @ z_exact
    assert value <= exact_value + 1e-9


def test_batched_problems_are_solved_independently():
    g = torch.randn(5, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    G = g @ g.T
    Q = G / G.diagonal().max()
    zeros = torch.zeros_like(Q)
    one = _device.solve(_device._batch((Q, zeros[0], 1.0, zeros, True)))
    two = _device.solve(
        _device._batch((Q, Q[1], 0.3, zeros, True), (Q, zeros[0], 1.0, zeros, True))
    )
    torch.testing.assert_close(two[1], one[0], rtol=0, atol=1e-12)


# ------------------------------------------------------------------------- options, API
@pytest.mark.parametrize("name", SOLVED)
def test_auto_means_exact_on_cpu_and_device_elsewhere(name):
    s = surgery.make(name)
    assert s.options["solver"] == "auto"
    assert not s.syncs(torch.device("cpu"))
    assert not s.syncs(torch.device("cuda"))
    assert surgery.make(name, solver="exact").syncs(torch.device("cuda"))
    g = torch.randn(4, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(s(g), surgery.make(name, solver="exact")(g), rtol=0, atol=0)


def test_host_solvers_and_randomised_methods_report_their_syncs():
    cuda = torch.device("cuda")
    for name in ("imtlg", "nashmtl", "alignedmtl"):
        assert surgery.make(name).syncs(cuda)
    for name in ("mean", "sum", "pcgrad", "gradvac", "graddrop"):
        assert not surgery.make(name).syncs(cuda)
    pytest.importorskip("torchjd")
    assert surgery.make("torchjd:MGDA").syncs(cuda)  # TorchJD's aggregators may synchronise


def test_bad_solver_is_refused():
    with pytest.raises(ValueError, match="auto"):
        surgery.make("cagrad", solver="gpu")


def test_state_saved_before_the_solver_option_existed_still_loads():
    s = surgery.make("cagrad", seed=2)
    state = s.state_dict()
    del state["options"]["solver"]
    surgery.make("cagrad", seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="options"):
        surgery.make("cagrad", seed=2, solver="device").load_state_dict(state)
