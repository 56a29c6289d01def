"""Small convex problems on the K x K Gram matrix, solved with torch ops on the gradients' device.

The exact solvers in ``_solvers`` run numpy on the host: one device-to-host copy, a host sync,
per call. These run where the Gram matrix is, with a fixed number of iterations and no
data-dependent Python branching, so an update that uses them never waits for the device and can
be captured in a CUDA graph. They work in float64 on the same normalised problems as the exact
solvers (the Gram matrix divided by its largest diagonal entry, or the cosine matrix).

Every problem here belongs to one family, batched over a leading dimension B:

    minimise  f(x) = c.x + rho sqrt(x^T Q x) + 1/2 x^T R x   over x >= 0,
              and sum(x) = 1 where ``simplex``.

MGDA's min-norm point is (c = 0, rho = 1, R = 0, simplex), CAGrad's dual divided by |g_0|
(c = Q m / |g_0|, rho = c, R = 0, simplex), a projection onto the dual cone {d : g_i . d >= 0}
(c = q, rho = 0, R = N, no simplex: CAGrad's degenerate case, UPGrad). The solver is a
log-barrier interior-point method: a fixed schedule of barrier weights, a few Newton steps at
each, then Newton's method on the support the barrier found, without the barrier (the exact
minimiser when that support is the optimal one, the usual case; otherwise the barrier's point
is kept). The term rho sqrt(x^T Q x) is not smooth where x^T Q x = 0; its second-order-cone
barrier is minimised over the cone's extra variable in closed form, which leaves a function of
x that is smooth everywhere, so the Newton steps are well defined at every barrier weight, also
when the optimum has x^T Q x = 0.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

STAGES = 12
"""Barrier weights 1, 10, ..., 1e11: the last one's duality gap is about (K + 2) / 1e11."""
STEPS = 3
"""Newton steps per barrier weight."""
POLISH_STEPS = 4
"""Newton steps on the support: from the barrier's last point two reach rounding level, four also
where the optimum is close to degenerate (|g_w| near 0 in CAGrad)."""
STEP_FRACTIONS = 12
"""Step lengths 1, 1/2, ..., 1/2^11 of the longest step that keeps x > 0, tried at once."""
RIDGE = 1e-13
"""Added to the Hessian's diagonal in the polish (relative to its largest entry): a singular
face (duplicate tasks) still has a Newton step, towards its minimiser of least norm."""
NNQP_RIDGE = 1e-12
"""Ridge on the cosine matrix of a projection onto the dual cone: with more tasks than
dimensions its multipliers are not unique, and the ridge picks small ones (the update is the
same)."""
DEGENERATE = 1e-9
"""CAGrad: |g_w| at or below this share of |g_0| counts as 0 (the exact solver's threshold)."""
RES = 1e-6
"""CAGrad: |g_w| at or below this share of sum_i w_i |g_i| counts as 0, as in the exact solver:
a Gram quadratic form does not resolve it."""
SUPPORTS = range(2, 8)
"""Candidate supports for the polish: the entries above 10^-s of the largest one, s in these."""
_TINY = 1e-300


class Problem(NamedTuple):
    """A batch of B problems of the family above, float64."""

    Q: Tensor  # [B, K, K] PSD: the norm term
    c: Tensor  # [B, K]
    rho: Tensor  # [B]
    R: Tensor  # [B, K, K] PSD: the quadratic term
    simplex: Tensor  # [B] bool: sum(x) = 1, else x >= 0 only

    def products(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(Q x, R x, x^T Q x) for points x [..., B, K]."""
        Qx = (self.Q @ x.unsqueeze(-1)).squeeze(-1)
        Rx = (self.R @ x.unsqueeze(-1)).squeeze(-1)
        return Qx, Rx, (x * Qx).sum(-1).clamp(min=0)

    def value(self, x: Tensor) -> Tensor:
        """f(x) for points x [..., B, K]."""
        _, Rx, q = self.products(x)
        return (x * (self.c + 0.5 * Rx)).sum(-1) + self.rho * q.sqrt()


def solve(problem: Problem) -> Tensor:
    """The minimiser x [B, K] of every problem of the batch."""
    B, K = problem.c.shape
    start = torch.where(problem.simplex, 1.0 / K, 1.0).to(problem.c)
    x = start[:, None].expand(B, K)
    tau = 1.0
    for _ in range(STAGES):
        for _ in range(STEPS):
            x = _barrier_step(problem, x, tau)
        tau *= 10.0
    return _polish(problem, x)


def _barrier_step(problem: Problem, x: Tensor, tau: float) -> Tensor:
    """One damped Newton step on tau f(x) - sum(log x), in log coordinates.

    The cone term's barrier, tau rho t - log(t^2 - q) with q = x^T Q x, is smallest over
    t > sqrt(q) at t = (1 + S) / a, a = tau rho, S = sqrt(1 + a^2 q), where it is
    S - log(1 + S) plus a constant. The step solves the Newton system scaled by x (well
    conditioned however small the entries of x get); its length is the best of
    ``STEP_FRACTIONS`` halvings of the longest step that keeps x > 0, all evaluated at once,
    or no step when none of them lowers the barrier function.
    """
    a = tau * problem.rho[:, None]

    def barrier(y: Tensor) -> Tensor:
        _, Ry, qy = problem.products(y)
        S = (1 + a.squeeze(-1) ** 2 * qy).sqrt()
        linear = (y * (problem.c + 0.5 * Ry)).sum(-1)
        return tau * linear + S - torch.log1p(S) - y.log().sum(-1)

    Qx, Rx, q = problem.products(x)
    S = (1 + a * a * q[:, None]).sqrt()
    d1 = a * a / (2 * (1 + S))  # first and second derivative of S - log(1 + S) in q
    d2 = -(a**4) / (4 * S * (1 + S) ** 2)
    grad = tau * (problem.c + Rx) + 2 * d1 * Qx - 1 / x
    outer = Qx[:, :, None] * Qx[:, None, :]
    hess = tau * problem.R + 2 * d1[..., None] * problem.Q + 4 * d2[..., None] * outer
    identity = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    scaled = x[:, :, None] * hess * x[:, None, :] + identity  # the log term's Hessian is 1/x^2
    step = x * _newton_direction(scaled, x * grad, x, problem.simplex)

    fractions = 0.5 ** torch.arange(STEP_FRACTIONS, dtype=x.dtype, device=x.device)
    lengths = torch.cat([_longest_step(x, step)[None] * fractions[:, None], x.new_zeros(1, len(x))])
    trials = (x + lengths[..., None] * step).clamp(min=torch.finfo(x.dtype).tiny)
    values = barrier(trials)
    best = lengths.gather(0, values.nan_to_num(torch.inf).argmin(0, keepdim=True)).squeeze(0)
    return _on_simplex(x + best[:, None] * step, problem.simplex)


def _polish(problem: Problem, x: Tensor) -> Tensor:
    """Newton's method for f on candidate supports of x; the best result that is feasible and
    not worse than x replaces it.

    A support is the set of entries above a share (``SUPPORTS``) of the largest one. On the
    optimal support Newton's method lands on the exact minimiser; trying several shares at once
    finds it also when the barrier's small entries do not separate cleanly from the rest. Each
    support is tried with the Hessian of f and with the Hessian of its quadratic majorant at
    the current point (rho x^T Q x / 2 r instead of rho r, r = sqrt(x^T Q x)): the first
    converges fastest, the second also where the optimum has r = 0 and the first is singular.
    """
    B, K = x.shape
    exponents = torch.arange(SUPPORTS.start, SUPPORTS.stop, dtype=x.dtype, device=x.device)
    support = x > 10.0 ** -exponents[:, None, None] * x.amax(-1, keepdim=True)  # [S, B, K]
    support = torch.cat([support, support])  # [T = 2S, B, K]: Newton, then majorant
    T = len(support)
    rank_one = torch.arange(T, device=x.device) < T // 2
    candidates = Problem(*(part.expand(T, *part.shape).flatten(0, 1) for part in problem))
    start = torch.where(support, x, 0.0).flatten(0, 1)
    y = _newton_on_support(
        candidates, start, support.flatten(0, 1), rank_one.repeat_interleave(B)
    ).unflatten(0, (T, B))
    values = problem.value(y)
    values = torch.where(torch.isfinite(values) & (y >= 0).all(-1), values, torch.inf)
    best = values.argmin(0)
    y = y.gather(0, best[None, :, None].expand(1, B, K)).squeeze(0)
    before, after = problem.value(x), values.gather(0, best[None]).squeeze(0)
    better = after <= before + 1e-12 * (1 + before.abs())
    return torch.where(better[:, None], y, x)


def _newton_on_support(problem: Problem, y: Tensor, support: Tensor, rank_one: Tensor) -> Tensor:
    """``POLISH_STEPS`` Newton steps for f (no barrier) over the entries in ``support``; without
    the Hessian's rank-one term of the norm where not ``rank_one`` [B]."""
    pair = support[:, :, None] & support[:, None, :]
    identity = torch.eye(y.shape[-1], dtype=y.dtype, device=y.device)
    on_support = support.to(y.dtype)
    rank_one = rank_one.to(y.dtype)[:, None, None]
    y = _on_simplex(y, problem.simplex)
    for _ in range(POLISH_STEPS):
        Qy, Ry, q = problem.products(y)
        r = torch.where(problem.rho > 0, q.sqrt().clamp(min=_TINY), 1.0)[:, None]
        grad = problem.c + Ry + problem.rho[:, None] * Qy / r
        outer = Qy[:, :, None] * Qy[:, None, :] / r[..., None] ** 3
        norm_term = problem.Q / r[..., None] - rank_one * outer
        hess = problem.R + problem.rho[:, None, None] * norm_term
        scale = hess.diagonal(dim1=-2, dim2=-1).abs().amax(-1)[:, None, None]
        hess = torch.where(pair, hess + RIDGE * scale * identity, identity)
        y = y + _newton_direction(hess, grad * on_support, on_support, problem.simplex)
    return _on_simplex(y, problem.simplex)


def _newton_direction(H: Tensor, g: Tensor, e: Tensor, constrained: Tensor) -> Tensor:
    """u minimising 1/2 u^T H u + g.u ([B, K, K], [B, K]), subject to e.u = 0 where
    ``constrained`` [B].

    A zero direction where the system is singular: ``solve_ex`` reports that instead of raising,
    so the device is never waited for.
    """
    B, K = g.shape
    e = torch.where(constrained[:, None], e, 0.0)
    corner = torch.where(constrained, 0.0, 1.0).to(g)[:, None, None]
    matrix = torch.cat(
        [torch.cat([H, e[:, :, None]], dim=2), torch.cat([e[:, None, :], corner], dim=2)], dim=1
    )
    solution, _ = torch.linalg.solve_ex(matrix, torch.cat([-g, g.new_zeros(B, 1)], dim=1))
    u = solution[:, :K]
    return torch.where(torch.isfinite(u).all(-1, keepdim=True), u, 0.0)


def _longest_step(x: Tensor, step: Tensor) -> Tensor:
    """[B]: 0.99 of the step length at which an entry of x + s step reaches 0, at most 1."""
    shrinking = step < 0
    ratio = torch.where(shrinking, x / torch.where(shrinking, -step, 1.0), torch.inf)
    return (0.99 * ratio.amin(-1)).clamp(max=1.0)


def _on_simplex(x: Tensor, simplex: Tensor) -> Tensor:
    """Simplex points put back on sum(x) = 1 (Newton steps keep it only up to rounding)."""
    return torch.where(simplex[:, None], x / x.sum(-1, keepdim=True), x)


# ------------------------------------------------------------------------ the methods' problems
def cosine_matrix(G: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(N, norms, active) as ``_solvers.cosine_matrix``: N = D^-1 G D^-1, zero for zero rows."""
    norms = G.diagonal().clamp(min=0).sqrt()
    active = norms > (norms.amax() * 1e-15).clamp(min=_TINY)
    inv = torch.where(active, 1 / torch.where(active, norms, 1.0), 0.0)
    N = G * inv[:, None] * inv[None, :]
    N = 0.5 * (N + N.T)
    N.diagonal().copy_(active.to(N.dtype))
    return N, norms, active


def _batch(*problems: tuple[Tensor, Tensor, float | Tensor, Tensor, bool]) -> Problem:
    """A batch from (Q, c, rho, R, simplex) tuples of one size K.

    Python numbers become tensors by ``torch.full`` on the device: ``torch.tensor(..., device)``
    would be a host-to-device copy that waits.
    """
    Q, c, rho, R, simplex = zip(*problems, strict=True)
    like = c[0]

    def scalar(value: float | bool | Tensor, dtype: torch.dtype) -> Tensor:
        if isinstance(value, Tensor):
            return value.to(dtype)
        return torch.full((), value, dtype=dtype, device=like.device)

    return Problem(
        torch.stack(Q),
        torch.stack(c),
        torch.stack([scalar(r, like.dtype) for r in rho]),
        torch.stack(R),
        torch.stack([scalar(flag, torch.bool) for flag in simplex]),
    )


def min_norm_simplex(G: Tensor) -> Tensor:
    """Weights w on the simplex minimising |w^T J| (MGDA), from G = J J^T (float64)."""
    Q = G / G.diagonal().amax().clamp(min=_TINY)
    zeros = torch.zeros_like(Q)
    return solve(_batch((Q, zeros[0], 1.0, zeros, True)))[0]


def cagrad_weights(G: Tensor, m: Tensor, M: Tensor, c: float) -> Tensor:
    """``methods.cagrad_weights`` on the device: weights on the original rows of CAGrad's
    d = g_0 + rho g_w / |g_w| for the rows ``M J`` with Gram ``G``, g_0 = m^T M J.

    The dual and, for the degenerate case (the optimal g_w is 0), the projection of g_0 onto the
    directions that conflict with no row are solved together as one batch of two problems; the
    answer is picked by ``torch.where``.
    """
    mean_w = m @ M
    if c == 0:
        return mean_w
    top = G.diagonal().amax()
    Q = G / top.clamp(min=_TINY)
    g0sq = m @ Q @ m
    rho = c * g0sq.clamp(min=0).sqrt()
    N, norms, active = cosine_matrix(Q)
    inv = torch.where(active, 1 / torch.where(active, norms, 1.0), 0.0)
    zeros = torch.zeros_like(Q)
    cone, scale = _dual_cone_problems(N, active, ((Q @ m) * inv)[None])
    g0 = g0sq.clamp(min=0).sqrt()
    # The dual divided by |g_0| (the same minimiser): its terms are O(|g_w|), so the barrier's
    # absolute accuracy is relative to the problem's own scale.
    x = solve(_concat(_batch((Q, Q @ m / g0.clamp(min=_TINY), c, zeros, True)), cone))
    w, z = x[0], x[1] * scale[0]
    gw = (w @ Q @ w).clamp(min=0).sqrt()
    dual = mean_w + (rho / gw.clamp(min=_TINY)) * (w @ M)
    projection = mean_w + (z * inv) @ M
    # g_w = 0 when it is at most DEGENERATE |g_0|, or below the rounding of the quadratic form.
    regular = (gw > DEGENERATE * g0) & (gw > RES * (w.abs() @ norms))
    out = torch.where(regular, dual, projection)
    return torch.where((top > 0) & (g0sq > 1e-30), out, mean_w)


def upgrad_weights(G: Tensor) -> Tensor:
    """``methods.UPGrad`` on the device: 1/K plus, for every task i, the multipliers of the
    projection of g_i / K onto the dual cone (the K projections as one batch)."""
    K = G.shape[0]
    N, norms, active = cosine_matrix(G)
    inv = torch.where(active, 1 / torch.where(active, norms, 1.0), 0.0)
    q = G * inv[None, :] / K  # row i: the unit rows' products with g_i / K
    cone, scale = _dual_cone_problems(N, active, q)
    z = solve(cone) * scale[:, None]
    z = torch.where(active[:, None], z, 0.0)
    return 1.0 / K + (z * inv).sum(0)


def _dual_cone_problems(N: Tensor, active: Tensor, q: Tensor) -> tuple[Problem, Tensor]:
    """The projections x + U^T z of the vectors x with U x = q (rows of q [B, K]) onto
    {d : U d >= 0}, U the unit rows with cosine matrix N: min 1/2 z^T N z + q.z over z >= 0.

    Each is scaled to max |q| = 1 (the barrier's accuracy is absolute); returns the problems and
    the scales (z = scale * solution). A zero row's multiplier is held at 0 by a unit ridge; where
    no entry of q is negative, x already lies in the cone and the solution is z = 0.
    """
    B, K = q.shape
    scale = q.abs().amax(-1).clamp(min=_TINY)
    ridge = torch.diag(torch.where(active, NNQP_RIDGE, 1.0))
    R = (N + ridge).expand(B, K, K)
    zeros = torch.zeros_like(R)
    outside = (q < 0).any(-1)
    problems = Problem(zeros, q / scale[:, None], zeros[:, 0, 0], R, zeros[:, 0, 0] != 0)
    return problems, torch.where(outside, scale, 0.0)


def _concat(*batches: Problem) -> Problem:
    return Problem(*(torch.cat(parts) for parts in zip(*batches, strict=True)))


def gradops_coefficients(G: Tensor, eps: float) -> Tensor:
    """``methods.gradops_coefficients`` on the device, by Gram-Schmidt in coefficient space.

    For every task i at once, the unit rows other than u_i are orthonormalised in order
    (classical Gram-Schmidt, each vector twice, in the metric of the cosine matrix N); a vector
    whose remainder has squared norm <= 10 K eps lies in the span of the earlier ones and is
    dropped. u_i minus its projection onto that basis is the residual of the exact solver's
    pseudo-inverse, so the result is the same up to rounding and does not depend on the order.
    """
    K = G.shape[0]
    N, norms, active = cosine_matrix(G)
    tol = 10 * K * eps
    own = torch.eye(K, dtype=torch.bool, device=G.device)
    unit = own.to(G.dtype)
    basis = G.new_zeros(K, K, K)  # [task i, basis vector j, coefficient on u_k]
    for j in range(K):
        v = unit[j].expand(K, K)
        for _ in range(2):
            v = v - _project(basis, N, v)
        norm2 = (v * (v @ N)).sum(-1)
        keep = (norm2 > tol) & ~own[:, j]
        basis[:, j] = torch.where(keep[:, None], v / norm2.clamp(min=_TINY).sqrt()[:, None], 0.0)
    residual = unit - _project(basis, N, unit)
    spanned = (residual * (residual @ N)).sum(-1) <= tol
    inv = torch.where(active, 1 / torch.where(active, norms, 1.0), 0.0)
    C = torch.where(own, 1.0, residual * norms[:, None] * inv[None, :])
    C = torch.where(spanned[:, None], 0.0, C)
    conflict = ((G < 0) & ~own).any(1) & active
    return torch.where(conflict[:, None], C, unit)


def _project(basis: Tensor, N: Tensor, v: Tensor) -> Tensor:
    """Rows of v [i, K] projected onto the span of basis[i] (orthonormal in the metric N)."""
    dots = basis @ (N @ v.unsqueeze(-1))  # [i, j, 1]: <b_ij, v_i>
    return (dots * basis).sum(1)
