"""The surgery methods.  Each works in Gram space: G = J J^T once (input precision), a small
K x K problem in float64, then one product ``w^T J`` (GradDrop is element-wise instead).

Scale convention: the update is on the scale of the mean gradient unless a docstring says
otherwise (``sum`` by definition, Nash-MTL normalises).  ``J`` below is the ``[K, P]`` input.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from . import _device as dev
from . import _solvers as solv
from ._base import (
    SEED,
    SOLVER,
    Option,
    Surgery,
    check_bool,
    check_choice,
    check_float,
    check_int,
    combine,
    dtype_eps,
    gram,
    to_numpy64,
)


class Mean(Surgery):
    """Average of the rows (the reference scale)."""

    name = "mean"

    def _aggregate(self, grads: Tensor) -> Tensor:
        return grads.mean(dim=0)


class Sum(Surgery):
    """Sum of the rows: K times the mean scale, by definition (the only method not on it)."""

    name = "sum"

    def _aggregate(self, grads: Tensor) -> Tensor:
        return grads.sum(dim=0)


# --------------------------------------------------------------------------------- PCGrad
def pcgrad_coefficients(G: Tensor, orders: Tensor) -> Tensor:
    """C with g_i^PC = sum_k C[i, k] g_k (PCGrad, Algorithm 1 of Yu et al. 2020).

    Round r projects, for every task i at once, the current g_i^PC off the *original* g_j with
    j = orders[i, r] when g_i^PC . g_j < 0.  No host sync: K-1 rounds of K x K tensor ops.
    """
    K = G.shape[0]
    C = torch.eye(K, dtype=G.dtype, device=G.device)
    diag = G.diagonal()
    safe = torch.where(diag > 0, diag, torch.ones_like(diag))
    rows = torch.arange(K, device=G.device)
    for r in range(K - 1):
        j = orders[:, r]
        dots = (C * G[j]).sum(dim=1)  # g_i^PC . g_j  (G symmetric)
        coef = torch.where(dots < 0, dots / safe[j], torch.zeros_like(dots))
        C[rows, j] -= coef
    return C


class PCGrad(Surgery):
    """PCGrad (Yu et al., NeurIPS 2020), computed in Gram space.

    Follows Algorithm 1: each task's gradient is projected, in a random order of the other
    tasks drawn afresh for every task on every call, onto the normal plane of each *original*
    gradient g_j it conflicts with (g_i^PC . g_j < 0); never onto itself.  Rounds are batched
    over tasks.  Scale: the *mean* of the modified rows (the paper sums them).  Zero rows are
    never projected onto (and stay zero).  Randomness: ``seed``; the [K, K-1] orders are drawn on
    the gradients' device.  No host sync.
    """

    name = "pcgrad"
    last_orders: Tensor | None = None

    def _aggregate(self, grads: Tensor) -> Tensor:
        K = grads.shape[0]
        G = gram(grads)
        orders = self._random_orders(K, G.device)
        self.last_orders = orders
        C = pcgrad_coefficients(G, orders)
        return combine(C.sum(dim=0) / K, grads)


class PCGradDirection(PCGrad):
    """Ablation (1) of the PCGrad paper (Section 5.2, Figure 3 right): PCGrad's update
    rescaled to the norm of the plain update, the mean gradient; PCGrad's direction with the
    magnitude plain MT-SAC would step. Zero when either is zero. Same random orders as
    ``pcgrad`` for the same seed."""

    name = "pcgrad_direction"

    def _aggregate(self, grads: Tensor) -> Tensor:
        return _with_norm(super()._aggregate(grads), grads.mean(dim=0).norm())


class PCGradMagnitude(PCGrad):
    """Ablation (2) of the PCGrad paper (Section 5.2, Figure 3 right): the plain update, the
    mean gradient, rescaled to the norm of PCGrad's update; the plain direction with PCGrad's
    magnitude. Zero when either is zero."""

    name = "pcgrad_magnitude"

    def _aggregate(self, grads: Tensor) -> Tensor:
        pcgrad = super()._aggregate(grads)
        return _with_norm(grads.mean(dim=0).to(pcgrad.dtype), pcgrad.norm())


def _with_norm(vector: Tensor, norm: Tensor) -> Tensor:
    """``vector`` scaled to length ``norm`` (zero if it is zero); no host sync."""
    length = vector.norm()
    scale = torch.where(length > 0, norm / torch.where(length > 0, length, 1.0), 0.0)
    return vector * scale


# -------------------------------------------------------------------------------- GradVac
class GradVac(Surgery):
    """Gradient Vaccine (Wang et al., ICLR 2021), whole-model granularity, in Gram space.

    Like PCGrad (same random orders, original g_j), but when cos(g_i^PC, g_j) < phi_hat_ij the
    row is moved so that the cosine reaches the target:
    g_i += |g_i| (phi_hat sqrt(1-phi^2) - phi sqrt(1-phi_hat^2)) / (|g_j| sqrt(1-phi_hat^2)) g_j,
    and phi_hat_ij <- (1-beta) phi_hat_ij + beta phi_ij (EMA state, starts at 0, kept in the
    object on the gradients' device, saved by ``state_dict``).  With beta = 0 this is PCGrad.
    Scale: mean of the modified rows (the paper sums).  Pairs with a zero gradient are skipped
    and their target is not updated.  The paper's per-layer granularity is not implemented.
    """

    name = "gradvac"
    options_spec: ClassVar[dict[str, Option]] = {
        "beta": Option(0.01, check_float(0.0, 1.0), "EMA rate of the cosine targets"),
        "seed": SEED,
    }

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._phi_hat: Tensor | None = None

    def _aggregate(self, grads: Tensor) -> Tensor:
        K = grads.shape[0]
        G = gram(grads)
        dev = G.device
        if self._phi_hat is None or self._phi_hat.shape != (K, K):
            self._phi_hat = torch.zeros(K, K, dtype=torch.float64, device=dev)
        elif self._phi_hat.device != dev:
            self._phi_hat = self._phi_hat.to(dev)
        phi_hat = self._phi_hat
        beta = self._options["beta"]
        orders = self._random_orders(K, dev)
        diag = G.diagonal().clamp(min=0)
        C = torch.eye(K, dtype=G.dtype, device=dev)
        CG = G.clone()
        n2 = diag.clone()
        rows = torch.arange(K, device=dev)
        zero = torch.zeros(K, dtype=G.dtype, device=dev)
        for r in range(K - 1):
            j = orders[:, r]
            dots = CG[rows, j]
            gjj = diag[j]
            denom = (n2.clamp(min=0) * gjj).sqrt()
            valid = denom > 0
            phi = torch.where(valid, dots / torch.where(valid, denom, 1.0), zero).clamp(-1, 1)
            target = phi_hat[rows, j]
            s_phi = (1 - phi * phi).clamp(min=0).sqrt()
            s_tgt = (1 - target * target).clamp(min=0).sqrt()
            den = gjj.sqrt() * s_tgt
            ok = valid & (phi < target) & (den > 0)
            a = n2.clamp(min=0).sqrt() * (target * s_phi - phi * s_tgt)
            a = torch.where(ok, a / torch.where(ok, den, 1.0), zero)
            C[rows, j] += a
            n2 = n2 + 2 * a * dots + a * a * gjj
            CG = CG + a[:, None] * G[j]
            phi_hat[rows, j] = torch.where(valid, (1 - beta) * target + beta * phi, target)
        return combine(C.sum(dim=0) / K, grads)

    def _method_state(self) -> dict[str, Any]:
        return {} if self._phi_hat is None else {"phi_hat": self._phi_hat.detach().cpu().clone()}

    def _load_method_state(self, state: dict[str, Any]) -> None:
        self._phi_hat = state["phi_hat"].clone() if "phi_hat" in state else None


# -------------------------------------------------------------------------------- GradOPS
def gradops_coefficients(G: np.ndarray, eps: float) -> np.ndarray:
    """C with g'_i = sum_k C[i, k] g_k (GradOPS step (i)-(ii), Eq. 1-2 of the paper).

    Rows that conflict with some other row are projected onto the orthogonal complement of the
    span of all other rows; the projection is computed with a pseudo-inverse of the others'
    cosine matrix (eigenvalues below ``10 K eps`` of the largest dropped), which is
    Gram-Schmidt done exactly and independent of the task order.
    """
    K = G.shape[0]
    N, norms, active = solv.cosine_matrix(G)
    C = np.eye(K)
    conflict = ((G < 0) & ~np.eye(K, dtype=bool)).any(axis=1) & active
    if K == 1 or not conflict.any():
        return C
    idx = np.flatnonzero(conflict)
    Ns = np.repeat(N[None], len(idx), axis=0)
    Ns[np.arange(len(idx)), idx, :] = 0.0
    Ns[np.arange(len(idx)), :, idx] = 0.0
    rhs = N[:, idx].T.copy()  # [n, K]: cosines of u_i with the others
    rhs[np.arange(len(idx)), idx] = 0.0
    coef = (solv.pinv_psd(Ns, 10 * K * eps) @ rhs[..., None])[..., 0]  # u_i ~ sum_k coef u_k
    inv = np.where(active, 1.0 / np.where(active, norms, 1.0), 0.0)
    for row, i in enumerate(idx):
        cu = -coef[row]
        cu[i] = 1.0  # residual of u_i in terms of the unit rows
        if float(cu @ N @ cu) <= 10 * K * eps:  # u_i lies in the others' span numerically
            C[i] = 0.0
            continue
        c = cu * norms[i] * inv  # in terms of the original g_k
        c[i] = 1.0
        C[i] = c
    return C


def gradops_weights(C: Tensor, G: Tensor, alpha: float) -> Tensor:
    """Weights on the original rows of (1/K) sum_i w_i g'_i, g' = C J (GradOPS Eq. 3-5).

    R_i = G'.g_i / |g_i|, w_i = r_i^alpha / mean(r^alpha) over the tasks with R_i > 0 (in log
    space); tasks with R_i = 0 (then g'_i = 0) get weight 0.
    """
    K = G.shape[0]
    norms = G.diagonal().clamp(min=0).sqrt()
    nonzero = norms > 0
    R = torch.where(nonzero, (C.sum(dim=0) @ G) / torch.where(nonzero, norms, 1.0), 0.0)
    act = 1e-12 * R.amax().clamp(min=1e-300) < R
    logit = torch.where(act, alpha * torch.where(act, R, 1.0).log(), -torch.inf)
    e = torch.where(act, (logit - logit.amax()).exp(), 0.0)
    w = torch.where(act.any(), act.sum() * e / e.sum().clamp(min=1e-300), 0.0)
    return (w @ C) / K


class GradOPS(Surgery):
    """GradOPS (Gradient deconfliction via Orthogonal Projections onto Subspaces), in Gram space.

    g'_i = g_i if g_i conflicts with no other task, else its projection onto the orthogonal
    complement of span{g_j, j != i}; then R_i = G'.g_i / |g_i| with G' = sum g'_i,
    r_i = R_i / mean(R), w_i = r_i^alpha / mean(r^alpha) (Eq. 3-5) and the update is
    ``(1/K) sum_i w_i g'_i`` (the paper sums; alpha = 0 gives the mean of the g'_i).
    Deviations: tasks with R_i = 0 (then g'_i = 0, their weight is irrelevant) are left out of
    the normalisation of w, so alpha < 0 cannot divide by zero; w is computed in log space.
    Invariant to the task order (no randomness).  Solver: exact (pseudo-inverse, numpy) or
    device (Gram-Schmidt in coefficient space, as in the paper).
    """

    name = "gradops"
    options_spec: ClassVar[dict[str, Option]] = {
        "alpha": Option(0.0, check_float(), "trade-off exponent (paper Eq. 5)"),
        "solver": SOLVER,
        "seed": SEED,
    }

    def _aggregate(self, grads: Tensor) -> Tensor:
        G = gram(grads)
        if self._solves_on_host(G.device):
            C = gradops_coefficients(to_numpy64(G), dtype_eps(grads))
            C = torch.from_numpy(C).to(G.device, non_blocking=True)
        else:
            C = dev.gradops_coefficients(G, dtype_eps(grads))
        return combine(gradops_weights(C, G, self._options["alpha"]), grads)


# -------------------------------------------------------------------------------- CAGrad
def cagrad_weights(G: np.ndarray, m: np.ndarray, M: np.ndarray, c: float) -> np.ndarray:
    """Weights on the original rows of d = g_0 + rho g_w / |g_w| for rows ``M J`` (CAGrad).

    ``G`` is the Gram of the (grouped) rows ``M J``, ``m`` the weights with g_0 = m^T M J.
    """
    top = float(np.max(np.diag(G))) if G.size else 0.0
    mean_w = m @ M
    if not top > 0.0 or c == 0.0:
        return mean_w
    g0sq = float(m @ G @ m) / top
    if not g0sq > 1e-30:
        return mean_w  # mean gradient is zero: the ball has radius 0
    w, gw, rho = solv.cagrad_dual(G, m, c)
    if gw > 0.0:
        return mean_w + (rho / gw) * (w @ M)
    # Degenerate (0 in the hull and the optimal g_w = 0): every optimal d has min_i g_i.d = 0;
    # return the one closest to g_0, the projection of g_0 onto {d : g_i . d >= 0} (rows M J).
    N, norms, active = solv.cosine_matrix(G)
    q = (G @ m) / np.where(active, norms, 1.0) * active
    z = solv.project_dual_cone(N, q)
    return mean_w + (z / np.where(active, norms, 1.0) * active) @ M


class CAGrad(Surgery):
    """CAGrad (Liu et al., NeurIPS 2021), exact dual solve in Gram space.

    Solves min_{w in simplex} g_w.g_0 + c|g_0| |g_w| (g_0 = mean, g_w = sum w_i g_i) and returns
    d = g_0 + c|g_0| g_w/|g_w| (Algorithm 1).  Scale: paper's d, i.e. |d - g_0| <= c|g_0|
    (between (1-c) and (1+c) times the mean's norm); ``rescale=True`` divides by (1 + c^2) like
    the official code's default.  c = 0 gives the mean; K = 1 gives (1 + c) g.
    Exact solver: see ``_solvers.cagrad_dual`` (normalised problem; follows the piecewise-linear
    path of projections of -t g_0 onto the rows' hull to the optimum, which it returns meeting
    the KKT conditions to 1e-10 |g_0|, or warns), so it has not the official SLSQP recipe's trap
    of returning its uniform start on a tiny raw Gram; one K x K device-to-host copy per call.
    Device solver: ``_device.cagrad_weights`` (interior point and a Newton polish, fixed
    iteration counts, no host sync).  When 0 is in the convex hull and the optimal g_w = 0, the
    update is the projection of g_0 onto the cone of directions that conflict with no task (the
    optimal d closest to g_0).
    """

    name = "cagrad"
    options_spec: ClassVar[dict[str, Option]] = {
        "c": Option(0.5, check_float(0.0), "radius of the ball around the mean, c |g_0|"),
        "rescale": Option(False, check_bool, "divide by 1 + c^2 like the official code"),
        "solver": SOLVER,
        "seed": SEED,
    }

    def _aggregate(self, grads: Tensor) -> Tensor:
        w = self._weights(gram(grads))
        if self._options["rescale"]:
            w = w / (1.0 + self._options["c"] ** 2)
        return combine(w, grads)

    def _weights(self, G: Tensor) -> Tensor | np.ndarray:
        K = G.shape[0]
        return self._cagrad(G, torch.full((K,), 1.0 / K, dtype=G.dtype, device=G.device), None)

    def _cagrad(self, G: Tensor, m: Tensor, M: Tensor | None) -> Tensor | np.ndarray:
        """CAGrad's weights for rows ``M J`` (``None``: the rows of J) of Gram ``G``."""
        M = torch.eye(G.shape[0], dtype=G.dtype, device=G.device) if M is None else M
        c = self._options["c"]
        if self._solves_on_host(G.device):
            return cagrad_weights(to_numpy64(G), m.cpu().numpy(), M.cpu().numpy(), c)
        return dev.cagrad_weights(G, m, M, c)


def task_groups(perm: Tensor, k: int) -> Tensor:
    """[k, K] averaging matrix of k near-equal groups of consecutive entries of ``perm``.

    The first K mod k groups have one task more (like ``numpy.array_split``); row g has
    1 / |group g| at the tasks of group g.  Built with device ops (no host round trip);
    1 <= k <= K.
    """
    K = perm.shape[0]
    base, extra = divmod(K, k)
    position = torch.arange(K, device=perm.device)
    long = extra * (base + 1)  # positions in the larger groups
    group = torch.where(position < long, position // (base + 1), extra + (position - long) // base)
    size = torch.where(group < extra, base + 1, base).to(torch.float64)
    M = torch.zeros(k, K, dtype=torch.float64, device=perm.device)
    M[group, perm] = 1.0 / size
    return M


class CAGradFast(CAGrad):
    """CAGrad on k random groups (CAGrad-Fast): every call draws a fresh random partition of
    the K tasks into min(k, K) groups of near-equal size (every task in exactly one group),
    averages the rows of each group and runs CAGrad on those group gradients, with g_0 kept
    equal to the true mean (groups weighted by their size).  k = 1 gives (1 + c) * mean; k >= K
    gives CAGrad (the groups are single tasks).  Scale as CAGrad.  The partition comes from
    ``seed`` and is drawn on the gradients' device; the Gram of the groups is M G M^T, so it
    costs the same K x K Gram.
    """

    name = "cagrad_fast"
    options_spec: ClassVar[dict[str, Option]] = {
        "c": Option(0.5, check_float(0.0), "radius of the ball around the mean, c |g_0|"),
        "k": Option(4, check_int(1), "number of task groups"),
        "rescale": Option(False, check_bool, "divide by 1 + c^2 like the official code"),
        "solver": SOLVER,
        "seed": SEED,
    }
    last_partition: Tensor | None = None
    """The [k, K] averaging matrix of the last call."""

    @property
    def last_groups(self) -> list[list[int]] | None:
        """The tasks of each group of the last call (reads the device)."""
        if self.last_partition is None:
            return None
        return [row.nonzero().flatten().tolist() for row in self.last_partition.cpu()]

    def _weights(self, G: Tensor) -> Tensor | np.ndarray:
        K = G.shape[0]
        k = min(self._options["k"], K)
        M = task_groups(self._random_keys((K,), G.device).argsort(), k)
        self.last_partition = M
        return self._cagrad(M @ G @ M.T, (M > 0).sum(dim=1).to(M.dtype) / K, M)


# ---------------------------------------------------------------------------------- MGDA
class MGDA(Surgery):
    """MGDA (Desideri 2012; Sener & Koltun 2018): the minimum-norm point of the convex hull of
    the rows, not by Frank-Wolfe.  Exact solver: Wolfe's algorithm (finite, exact up to a 1e-10
    relative KKT tolerance), one K x K device-to-host copy per call.  Device solver:
    ``_device.min_norm_simplex`` (interior point and a Newton polish, no host sync).  Scale:
    convex weights (sum to one).  Zero update when 0 is in the hull (a zero row, or a
    Pareto-stationary point).  Invariant to the overall scale; not to per-task scales (by design
    of MGDA).
    """

    name = "mgda"
    options_spec: ClassVar[dict[str, Option]] = {"solver": SOLVER, "seed": SEED}

    def _aggregate(self, grads: Tensor) -> Tensor:
        G = gram(grads)
        if self._solves_on_host(G.device):
            return combine(solv.min_norm_simplex(to_numpy64(G)), grads)
        return combine(dev.min_norm_simplex(G), grads)


# ---------------------------------------------------------------------------------- IMTL-G
class IMTLG(Surgery):
    """IMTL-G (Liu et al., ICLR 2021): the combination sum a_i g_i with sum a_i = 1 whose
    projections on all unit gradients u_i are equal.  Closed form a ~ G^+ |g| computed as
    D^-1 N^+ 1 on the cosine matrix N (robust to norm ratios).  Scale: weights sum to one.
    Zero rows get weight 0.  Degenerate case (no such combination, e.g. g_1 = -g_2): zero
    update.  Rank tolerance 10 K eps of the input dtype on N.
    """

    name = "imtlg"
    ignores_row_scales = True  # the unit gradients fix the direction; the weights only rescale
    host_solver = True

    def _aggregate(self, grads: Tensor) -> Tensor:
        K = grads.shape[0]
        G = to_numpy64(gram(grads))
        N, norms, active = solv.cosine_matrix(G)
        a = solv.pinv_psd(N, 10 * K * dtype_eps(grads)) @ active.astype(np.float64)
        a = np.where(active, a / np.where(active, norms, 1.0), 0.0)
        s = a.sum()
        if not abs(s) > 1e-12 * np.abs(a).sum() or not abs(s) > 0:
            return combine(np.zeros(K), grads)
        return combine(a / s, grads)


# -------------------------------------------------------------------------------- Nash-MTL
class NashMTL(Surgery):
    """Nash-MTL (Navon et al., ICML 2022): alpha > 0 with (G alpha)_i = 1 / alpha_i, update
    sum alpha_i g_i.  Solved exactly (damped Newton on the convex 1/2 b^T N b - sum log b in the
    cosine geometry, alpha_i = b_i / |g_i|), warm-started from the previous call (state).
    Scale: the paper's; it is *invariant* to the gradients' scale (|update| does not change
    when all gradients are multiplied by s, and each task's contribution is invariant to its own
    scale), so it is not on the mean scale.  Deviations: a ridge of 1e-8 on N keeps alpha
    finite at Pareto-stationary points (the official code stops after 20 CCP iterations
    instead); zero rows get alpha = 0; no max-norm clipping, no ``update_weights_every``.
    """

    name = "nashmtl"
    ignores_row_scales = True  # alpha_i = b_i / |g_i|: each task's contribution is scale-free
    host_solver = True

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._beta: np.ndarray | None = None

    def _aggregate(self, grads: Tensor) -> Tensor:
        K = grads.shape[0]
        G = to_numpy64(gram(grads))
        N, norms, active = solv.cosine_matrix(G)
        idx = np.flatnonzero(active)
        alpha = np.zeros(K)
        if idx.size:
            warm = self._beta[idx] if self._beta is not None and self._beta.shape == (K,) else None
            beta = solv.nash_mtl(N[np.ix_(idx, idx)], warm)
            full = np.ones(K) if self._beta is None or self._beta.shape != (K,) else self._beta
            full = full.copy()
            full[idx] = beta
            self._beta = full
            alpha[idx] = beta / norms[idx]
        return combine(alpha, grads)

    def _method_state(self) -> dict[str, Any]:
        return {} if self._beta is None else {"beta": torch.from_numpy(self._beta.copy())}

    def _load_method_state(self, state: dict[str, Any]) -> None:
        self._beta = state["beta"].double().numpy().copy() if "beta" in state else None


# ----------------------------------------------------------------------------- Aligned-MTL
class AlignedMTL(Surgery):
    """Aligned-MTL (Senushkin et al., CVPR 2023): weights B w with w = 1/K and
    B = sqrt(lambda_scale) V Lambda^-1/2 V^T from G = V Lambda V^T (eigenvalues below
    K eps(input dtype) of the largest dropped; lambda_scale = smallest kept eigenvalue for
    ``scale='min'``, median or mean for 'median' / 'rmse').  Scale: with the 1/K preference the
    update equals the mean when the rows are orthogonal with equal norms; in general
    |update| scales with sqrt(lambda_scale).  Zero G gives a zero update.
    """

    name = "alignedmtl"
    host_solver = True
    options_spec: ClassVar[dict[str, Option]] = {
        "scale": Option("min", check_choice("min", "median", "rmse"), "eigenvalue used as scale"),
        "seed": SEED,
    }

    def _aggregate(self, grads: Tensor) -> Tensor:
        K = grads.shape[0]
        G = to_numpy64(gram(grads))
        lam, V = np.linalg.eigh(G)
        top = lam.max(initial=0.0)
        keep = lam > max(top * K * dtype_eps(grads), 1e-300)
        if not keep.any():
            return combine(np.zeros(K), grads)
        lam, V = lam[keep], V[:, keep]
        mode = self._options["scale"]
        s = {"min": lam.min(), "median": np.median(lam), "rmse": lam.mean()}[mode]
        B = np.sqrt(s) * (V / np.sqrt(lam)) @ V.T
        return combine(B @ np.full(K, 1.0 / K), grads)


# -------------------------------------------------------------------------------- UPGrad
class UPGrad(Surgery):
    """UPGrad (Quinton & Rey, 2024): the mean of the projections of every row onto the dual
    cone {d : g_j . d >= 0 for all j}.  Each projection is a non-negative QP on the *cosine*
    matrix (the cone does not depend on the row norms), so tasks with a tiny share of the total
    norm are protected; no regulariser.  Exact solver: active set per row (numpy, one K x K
    host copy per call); device solver: the K projections as one batched interior-point solve.
    Scale: mean of the projected rows.  Non-conflicting: g_j . update >= 0 up to rounding.
    """

    name = "upgrad"
    options_spec: ClassVar[dict[str, Option]] = {"solver": SOLVER, "seed": SEED}

    def _aggregate(self, grads: Tensor) -> Tensor:
        G = gram(grads)
        if not self._solves_on_host(G.device):
            return combine(dev.upgrad_weights(G), grads)
        K = grads.shape[0]
        G = to_numpy64(G)
        N, norms, active = solv.cosine_matrix(G)
        inv = np.where(active, 1.0 / np.where(active, norms, 1.0), 0.0)
        w = np.full(K, 1.0 / K)
        for i in range(K):
            if not active[i]:
                continue
            q = G[:, i] * inv / K  # U x for x = g_i / K
            z = solv.project_dual_cone(N, q)
            w += z * inv
        return combine(w, grads)


# -------------------------------------------------------------------------------- GradDrop
class GradDrop(Surgery):
    """GradDrop (Chen et al., NeurIPS 2020) applied to the rows element-wise (no leak).

    Per coordinate, P = 1/2 (1 + sum_i g_i / sum_i |g_i|) (0.5 where all are zero); with
    U ~ Uniform(0, 1) the positive entries are kept where P > U, the negative ones otherwise.
    Scale: the mean of the masked rows (the paper sums).  The paper applies it to activation
    gradients of a layer; here it acts on parameter gradients.  U is drawn on the gradients'
    device (no host sync).
    """

    name = "graddrop"

    def _aggregate(self, grads: Tensor) -> Tensor:
        K, P = grads.shape
        g = grads if grads.dtype in (torch.float32, torch.float64) else grads.float()
        total = g.sum(dim=0)
        absum = g.abs().sum(dim=0)
        purity = torch.where(absum > 0, 0.5 * (1 + total / absum.clamp(min=1e-300)), 0.5)
        u = torch.rand(P, generator=self.generator_for(g.device), device=g.device, dtype=g.dtype)
        keep = torch.where(purity > u, g > 0, g < 0)
        return (g * keep).sum(dim=0) / K


METHODS: dict[str, type[Surgery]] = {
    cls.name: cls
    for cls in (
        Mean,
        Sum,
        PCGrad,
        PCGradDirection,
        PCGradMagnitude,
        CAGrad,
        CAGradFast,
        GradOPS,
        MGDA,
        IMTLG,
        NashMTL,
        GradVac,
        AlignedMTL,
        UPGrad,
        GradDrop,
    )
}
