"""Small dense solvers on the K x K Gram matrix (numpy, float64, CPU).

Every function here works on a *normalised* problem (callers divide the Gram matrix by its largest
diagonal entry or work with the cosine matrix), so tolerances are relative and the results do not
depend on the overall scale of the gradients.  None of them ever returns NaN or Inf: degenerate
inputs fall back to documented answers.  An iterative solver that stops short of its optimality
conditions (beyond the rounding of its input) says so with a ``SolverWarning``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

_TINY = 1e-300
EPS = float(np.finfo(np.float64).eps)
FACE_PRECISION = 1e-11
"""Wolfe's and the NNQP solver's optimality conditions hold to this (normalised units) where
they stop: their least-squares solves on a face drop singular values below 1e-13, and the
residual of a face solve adds up over its rows (hypothesis found 1.1e-12 with 0 inside the hull
of 7 rows in the plane)."""
MOVING = 1e-12
"""CAGrad's path: a multiplier that changes by less than this times |g_j| |g_0| per unit of t
does not move (the row is a duplicate, or parallel to the support)."""
RES = 1e-6
"""|sum_i w_i g_i| at most this share of sum_i |w_i| |g_i| counts as 0: a quadratic form of a
Gram matrix resolves it only to about sqrt(K eps) of that sum."""


class SolverWarning(RuntimeWarning):
    """An exact solver stopped at a point that misses its optimality conditions by more than
    its tolerance (the message says by how much); the result is the best point it found."""


def _check_stop(solver: str, violation: float, allowed: float, G: np.ndarray) -> None:
    """Warn (``SolverWarning``) when a solver's stopping point misses its optimality conditions:
    ``violation`` above ``allowed`` and above what the rounding of ``G`` explains (a Gram
    matrix computed in float32 is indefinite by about 1e-7 of its largest entry, and no
    solver can do better than that); both in the units of G, whose diagonal is at most 1."""
    if violation <= allowed:
        return
    indefinite = max(0.0, -float(np.linalg.eigvalsh(G)[0]))  # only computed on this rare path
    if violation <= allowed + 10 * G.shape[0] * indefinite:
        return
    warnings.warn(
        f"{solver} stopped {violation:.1e} off its optimality conditions (allowed "
        f"{allowed:.0e}, in units of the largest squared gradient norm); the update may be "
        "off the optimum",
        SolverWarning,
        stacklevel=3,
    )


def cosine_matrix(G: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (N, norms, active): N = D^-1 G D^-1 with zero rows/cols for zero gradients."""
    d = np.clip(np.diag(G), 0.0, None)
    norms = np.sqrt(d)
    scale = norms.max() if norms.size else 0.0
    # A row counts as zero when its squared norm is below 1e-30 of the largest one (or exactly 0).
    active = norms > max(scale * 1e-15, _TINY)
    inv = np.where(active, 1.0 / np.where(active, norms, 1.0), 0.0)
    N = G * inv[:, None] * inv[None, :]
    N = 0.5 * (N + N.T)
    np.fill_diagonal(N, np.where(active, 1.0, 0.0))
    return N, norms, active


def pinv_psd(A: np.ndarray, rtol: float) -> np.ndarray:
    """Pseudo-inverse of a (batch of) symmetric PSD matrix, eigenvalues <= rtol * max dropped."""
    lam, V = np.linalg.eigh(A)
    top = np.max(lam, axis=-1, keepdims=True)
    keep = lam > np.maximum(top * rtol, _TINY)
    inv = np.where(keep, 1.0 / np.where(keep, lam, 1.0), 0.0)
    return (V * inv[..., None, :]) @ np.swapaxes(V, -1, -2)


def min_norm_simplex(G: np.ndarray, tol: float = 1e-10, max_iter: int | None = None) -> np.ndarray:
    """Exact minimum-norm point of the convex hull of the rows (Wolfe's algorithm, 1976).

    Returns w on the simplex minimising w^T G w.  Works on G / max(diag G) so the result does not
    depend on the overall scale.  The stopping test is relative to the angle:
    ``x.p_k >= |x|^2 - tol |x| |p_k|`` for every k (the KKT conditions up to ``tol``).
    """
    K = G.shape[0]
    diag = np.clip(np.diag(G), 0.0, None)
    top = diag.max() if K else 0.0
    if not top > 0.0:
        return np.full(K, 1.0 / K)
    G = G / top
    diag = diag / top
    max_iter = max_iter or (10 * K + 50)
    S = [int(np.argmin(diag))]
    lam = np.array([1.0])
    for _ in range(max_iter):
        xdot = G[:, S] @ lam  # x . p_k for every k
        xx = float(lam @ xdot[S])
        slack = xdot - xx + tol * np.sqrt(max(xx, 0.0) * diag)
        k = int(np.argmin(slack))
        if slack[k] >= 0.0 or k in S or xx <= 1e-28:
            break
        S.append(k)
        lam = np.append(lam, 0.0)
        for _minor in range(len(S) + 2):
            n = len(S)
            A = np.zeros((n + 1, n + 1))
            A[:n, :n] = G[np.ix_(S, S)]
            A[:n, n] = 1.0
            A[n, :n] = 1.0
            rhs = np.zeros(n + 1)
            rhs[n] = 1.0
            mu = np.linalg.lstsq(A, rhs, rcond=1e-13)[0][:n]
            if np.all(mu > 1e-15):
                lam = mu / mu.sum()
                break
            neg = mu <= 1e-15
            den = lam - mu
            ok = neg & (den > 0)
            theta = float(np.min(lam[ok] / den[ok])) if ok.any() else 0.0
            theta = min(max(theta, 0.0), 1.0)
            lam = lam + theta * (mu - lam)
            keep = lam > 1e-15
            if not keep.any():  # numerically impossible, keep the best point
                keep[int(np.argmax(lam))] = True
            S = [s for s, kp in zip(S, keep, strict=True) if kp]
            lam = np.clip(lam[keep], 0.0, None)
            lam = lam / lam.sum()
    w = np.zeros(K)
    w[S] = lam
    x_dot = G @ w
    xx = float(w @ x_dot)
    # The stopping test, up to the precision of the face solves (a stop at max_iter, or on a
    # numerical cycle short of that precision, is reported, not returned silently).
    violation = float(np.max(xx - x_dot - np.sqrt(max(xx, 0.0) * diag) * tol))
    _check_stop("Wolfe's min-norm solver", violation, FACE_PRECISION, G)
    return w


def nnqp(
    A: np.ndarray, q: np.ndarray, tol: float = 1e-12, max_iter: int | None = None
) -> np.ndarray:
    """min_{z >= 0} 1/2 z^T A z + q^T z for PSD A (Lawson-Hanson active set, normal equations).

    ``A`` should be O(1) (e.g. a cosine matrix); ``tol`` is relative to ``max |q|``.
    """
    n = q.shape[0]
    z = np.zeros(n)
    scale = float(np.max(np.abs(q))) if n else 0.0
    if not scale > 0.0:
        return z
    thr = tol * scale
    P = np.zeros(n, dtype=bool)
    max_iter = max_iter or (3 * n + 20)
    for _ in range(max_iter):
        wv = -(A @ z + q)
        cand = (~P) & (wv > thr)
        if not cand.any():
            break
        P[int(np.argmax(np.where(cand, wv, -np.inf)))] = True
        for _inner in range(n + 2):
            idx = np.flatnonzero(P)
            s = np.zeros(n)
            s[idx] = np.linalg.lstsq(A[np.ix_(idx, idx)], -q[idx], rcond=1e-13)[0]
            if np.all(s[idx] > 0.0):
                z = s
                break
            bad = idx[s[idx] <= 0.0]
            den = z[bad] - s[bad]
            ok = den > 0
            alpha = float(np.min(z[bad][ok] / den[ok])) if ok.any() else 0.0
            alpha = min(max(alpha, 0.0), 1.0)
            z = z + alpha * (s - z)
            P &= z > 1e-15 * max(1.0, float(z.max(initial=0.0)))
            z[~P] = 0.0
            if not P.any():
                break
    z = np.clip(z, 0.0, None)
    # The stopping test (a stop at max_iter is reported, not returned silently).
    violation = float(np.max(-(A @ z + q) - thr, initial=0.0)) / scale
    _check_stop("The non-negative QP solver", violation, FACE_PRECISION, A)
    return z


def project_dual_cone(N: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Multipliers z >= 0 with x + U^T z = projection of x onto {y : U y >= 0}.

    ``N = U U^T`` (cosine matrix of the unit rows U), ``q = U x``.  Returns z.
    """
    if np.all(q >= 0.0):
        return np.zeros_like(q)
    return nnqp(N, q)


Piece = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""(u, v, alpha, beta) of ``_projection_piece``."""


def _projection_piece(G: np.ndarray, b: np.ndarray, S: np.ndarray) -> Piece:
    """The piece of the path of projections p(t) of -t g_0 onto the rows' convex hull on which
    the support is S: weights w(t) = u + t v on S, and the multipliers lam(t) = alpha + t beta
    of every row (g_j - p).(-t g_0 - p) <= 0 written as lam_j = g_j.(p + t g_0) + kappa >= 0,
    zero on S.

    On S: G_SS w + t b_S + kappa 1 = 0, 1.w = 1 (b = G m), a system that is regular when the
    rows of S are affinely independent, also where G_SS is singular (g_1 = -g_2).  It is
    solved for z = D w (D: the row norms, 1 for zero rows), i.e. on the cosine matrix, so the
    geometry of tiny rows keeps its precision next to large ones.
    """
    n = len(S)
    d = np.sqrt(np.clip(np.diag(G)[S], 0.0, None))
    d = np.where(d > 0.0, d, 1.0)
    e = 1.0 / d
    top = float(e.max())
    A = np.zeros((n + 1, n + 1))
    A[:n, :n] = G[np.ix_(S, S)] / np.outer(d, d)
    A[:n, n] = A[n, :n] = e / top
    rhs = np.zeros((n + 1, 2))
    rhs[n, 0] = 1.0 / top
    rhs[:n, 1] = -b[S] / d
    sol = np.linalg.lstsq(A, rhs, rcond=1e-15)[0]
    (u, v), kappa = sol[:n].T / d[:, None].T, sol[n] / top
    alpha = G[:, S] @ u + kappa[0]
    beta = G[:, S] @ v + b + kappa[1]
    return u, v, alpha, beta


def _project(
    G: np.ndarray, b: np.ndarray, t: float, w: np.ndarray, g0: float
) -> tuple[np.ndarray, np.ndarray, Piece]:
    """The projection of -t g_0 onto the rows' convex hull, min 1/2 w.G w + t b.w over the
    simplex, by a primal active-set method started at the simplex point ``w``.

    Returns its weights and the piece of the path it lies on (``_projection_piece`` of its
    support S).  Rows whose multiplier is below -1e-13 |g_j| (1 + t |g_0|) enter the support;
    entries that the step to the face's minimiser drives to 0 leave it.
    """
    K = len(b)
    S = np.flatnonzero(w > 0.0)
    floor = -1e-13 * np.sqrt(np.clip(np.diag(G), 0.0, None)) * (1.0 + t * g0)
    for _ in range(4 * K + 20):
        piece = u, v, alpha, beta = _projection_piece(G, b, S)
        x = u + t * v
        current = w[S]
        if x.min() >= -1e-14 * np.abs(x).max():
            w = np.zeros(K)
            w[S] = np.clip(x, 0.0, None)
            lam = alpha + t * beta
            lam[S] = np.inf
            worst = int(np.argmin(lam - floor))
            if lam[worst] >= floor[worst]:
                break
            S = np.sort(np.append(S, worst))
            continue
        # Move towards x until an entry reaches 0; it leaves the support.
        falling = x < current
        ratio = np.where(falling & (x < 0), current / np.where(falling, current - x, 1.0), np.inf)
        step = min(float(ratio.min()), 1.0)
        moved = current + step * (x - current)
        keep = moved > 0.0
        keep[int(np.argmin(ratio))] = False
        w = np.zeros(K)
        w[S[keep]] = moved[keep]
        w /= w.sum()
        S = S[keep]
    else:
        piece = _projection_piece(G, b, S)
    return w, S, piece


def _piece_interval(
    S: np.ndarray, piece: Piece, t: float, moving: np.ndarray
) -> tuple[float, float]:
    """The t over which a piece stays the path: weights >= 0 on S, moving multipliers >= 0
    off S (clamped to contain t)."""
    u, v, alpha, beta = piece
    lo, hi = 0.0, np.inf
    if np.any(v > 0):
        lo = max(lo, float(np.max(-u[v > 0] / v[v > 0])))
    if np.any(v < 0):
        hi = min(hi, float(np.min(-u[v < 0] / v[v < 0])))
    off = np.ones(len(beta), dtype=bool)
    off[S] = False
    up, down = off & (beta > moving), off & (beta < -moving)
    if up.any():
        lo = max(lo, float(np.max(-alpha[up] / beta[up])))
    if down.any():
        hi = min(hi, float(np.min(-alpha[down] / beta[down])))
    return min(lo, t), max(hi, t)


def _root(f: Callable[[float], float], lo: float, hi: float) -> float:
    """The root of a function that is > 0 at ``lo`` and <= 0 at ``hi`` (regula falsi with the
    Illinois modification: superlinear, and the bracket never widens)."""
    f_lo, f_hi = f(lo), f(hi)
    side = 0
    for _ in range(200):
        if f_lo == f_hi or hi - lo <= 1e-15 * hi:
            break
        mid = (lo * f_hi - hi * f_lo) / (f_hi - f_lo)
        if not lo < mid < hi:
            mid = 0.5 * (lo + hi)
        f_mid = f(mid)
        if f_mid > 0.0:
            lo, f_lo = mid, f_mid
            f_hi = 0.5 * f_hi if side == 1 else f_hi
            side = 1
        else:
            hi, f_hi = mid, f_mid
            f_lo = 0.5 * f_lo if side == -1 else f_lo
            side = -1
        if f_mid == 0.0:
            break
    return hi


def cagrad_kkt(G: np.ndarray, b: np.ndarray, rho: float, w: np.ndarray) -> float:
    """KKT violation max_i (F(w) - dF/dw_i) >= 0 of a simplex point w for CAGrad's dual
    F(w) = b.w + rho |g_w| (F is homogeneous, so w.grad = F: every partial derivative must be at
    least F, with equality on the support); inf where g_w = 0 (F is not differentiable there)."""
    r = np.sqrt(max(float(w @ G @ w), 0.0))
    if not r > 0.0:
        return np.inf
    grad = b + rho * (G @ w) / r
    return max(float(b @ w) + rho * r - float(grad.min()), 0.0)


def cagrad_dual(
    G: np.ndarray, m: np.ndarray, c: float, tol: float = 1e-10, max_steps: int | None = None
) -> tuple[np.ndarray, float, float]:
    """Solve CAGrad's dual  min_{w in simplex} F(w) = w^T G m + rho sqrt(w^T G w), rho = c |g_0|.

    ``g_0 = m^T J`` (``m`` = mean weights, ``g_0 != 0``, ``c > 0``).  Works on ``G / max(diag G)``.
    F depends on w only through x = g_w, a point of the rows' convex hull H: F = g_0.x + rho |x|.
    As rho |x| = min_s rho (|x|^2 / s + s) / 2, the optimal x is the projection p(t) of -t g_0
    onto H at the t > 0 with |p(t)| = rho t; |p(t)| / t never increases with t (the minimum
    over x is convex in s = rho t), so that t is unique, and below 1 / rho (rows have norm <= 1).
    p(t) is piecewise linear in t.  Each step projects at one t (``_project``, an active-set
    method warm-started from the previous projection), which gives the piece through t
    (``_projection_piece``, solved on the cosine matrix, so rows 1e8 apart in norm keep their
    precision) and the interval where that piece holds
    (``_piece_interval``); the root is found on the piece where |p(t)| - rho t changes sign.
    Otherwise the bracket around the root shrinks to that interval's far end and the next t is
    the root of the piece's extension (Newton's method on the pieces), or the bracket's
    midpoint: usually two or three projections (at most ``max_steps``, default 8 K + 60).

    The degenerate case (0 in H and F >= 0 on H, so g_w = 0 is optimal) shows as |p(t)| <=
    rho t down to t = 0 with p(0) = 0, or down to a t with p(t) = -t g_0 (-t g_0 in H), or as a
    root below ``1e-9 / c`` (|g_w| <= 1e-9 |g_0|) or with |g_w| below its rounding (``RES``);
    there |g_w| is returned as 0 and the caller applies its degenerate rule.  Any other answer
    is checked against the KKT conditions to ``tol |g_0|`` plus the check's own rounding
    (``cagrad_kkt``, normalised units); one that misses them comes with a ``SolverWarning``
    giving its violation, never silently.

    Returns (w, |g_w|, rho) in the normalised units of ``G / max(diag G)``.
    """
    K = G.shape[0]
    G = G / float(np.max(np.diag(G)))
    b = G @ m
    g0 = np.sqrt(max(float(m @ b), 0.0))
    rho = c * g0
    if K == 1:
        return np.ones(1), float(np.sqrt(max(G[0, 0], 0.0))), rho
    row_norms = np.sqrt(np.clip(np.diag(G), 0.0, None))
    moving = MOVING * row_norms * g0

    def norm(w):
        return float(np.sqrt(max(float(w @ G @ w), 0.0)))

    def at(t, S, piece):  # the path's weights at t on a piece of support S
        w = np.zeros(K)
        w[S] = np.clip(piece[0] + t * piece[1], 0.0, None)
        return w / w.sum()

    def excess(t, S, piece):  # |p(t)| - rho t: > 0 below the root, <= 0 above it
        return norm(at(t, S, piece)) - rho * t

    def cancelled(w, t):  # |g_w + t g_0| below the rounding of a Gram quadratic form
        size = float(np.abs(w) @ row_norms) + t * g0
        return w @ G @ w + 2.0 * t * float(b @ w) + t * t * g0 * g0 <= (RES * size) ** 2

    low, high, t = 0.0, 2.0 / rho, 1.0 / rho
    w = np.zeros(K)
    w[int(np.argmin(b))] = 1.0
    for _ in range(max_steps or 8 * K + 60):
        w, S, piece = _project(G, b, t, w, g0)
        a, z = _piece_interval(S, piece, t, moving)
        a, z = max(a, low), min(z, high)
        if excess(z, S, piece) > 0.0:  # the root is above the piece
            low = z
        elif excess(a, S, piece) > 0.0 and not (a == 0.0 and cancelled(at(0.0, S, piece), 0.0)):
            root = _root(lambda s, S=S, piece=piece: excess(s, S, piece), a, z)
            w = at(root, S, piece)
            if root <= 1e-9 / c or cancelled(w, 0.0):  # |g_w| <= 1e-9 |g_0|, or rounding
                return w, 0.0, rho
            break
        elif a == 0.0 or cancelled(at(a, S, piece), a):
            return at(a, S, piece), 0.0, rho
        else:  # the root is below the piece
            high = a
        if high <= 1e-9 / c:
            return w, 0.0, rho
        t = _extension_root(G, S, piece, rho, low, high)
        w = at(min(max(t, a), z), S, piece)  # a feasible start for the next projection
    r = norm(w)
    if not r > 0.0:
        return w, 0.0, rho
    # The check's own rounding: g_w is known to about K eps (of the largest row), so its
    # direction to K eps / r, and r^2 to K eps (sum_i w_i |g_i|)^2.
    rounding = c * K * EPS * (1.0 / r + (float(w @ row_norms) / r) ** 2)
    _check_stop("CAGrad's exact solver", cagrad_kkt(G, b, rho, w), g0 * (tol + rounding), G)
    return w, r, rho


def _extension_root(
    G: np.ndarray, S: np.ndarray, piece: Piece, rho: float, low: float, high: float
) -> float:
    """The next t to project at: where the piece's straight extension reaches |p| = rho t, if
    that is inside (low, high), else the midpoint."""
    u, v = piece[0], piece[1]
    GS = G[np.ix_(S, S)]
    qa, qb, qc = float(v @ GS @ v) - rho * rho, float(u @ GS @ v), float(u @ GS @ u)
    disc = qb * qb - qa * qc
    if qa != 0.0 and disc >= 0.0:
        for sign in (1.0, -1.0):
            root = (-qb + sign * np.sqrt(disc)) / qa
            if low < root < high:
                return root
    return 0.5 * (low + high)


def nash_mtl(N: np.ndarray, beta0: np.ndarray | None, ridge: float = 1e-8) -> np.ndarray:
    """Positive solution beta of (N + ridge I) beta = 1 / beta (Nash bargaining, Navon et al.).

    It is the minimiser of the strictly convex f(beta) = 1/2 beta^T (N + ridge I) beta - sum log
    beta; damped Newton from ``beta0`` (warm start) converges quadratically.
    """
    K = N.shape[0]
    A = N + ridge * np.eye(K)
    beta = beta0.copy() if beta0 is not None and beta0.shape == (K,) else np.ones(K)
    if not np.all(np.isfinite(beta)) or np.any(beta <= 0):
        beta = np.ones(K)

    def f(x):
        return 0.5 * float(x @ A @ x) - float(np.sum(np.log(x)))

    for _ in range(200):
        g = A @ beta - 1.0 / beta
        H = A + np.diag(1.0 / (beta * beta))
        d = -np.linalg.solve(H, g)
        dec = -float(g @ d)
        if dec <= 1e-24:
            break
        step = 1.0
        neg = d < 0
        if neg.any():
            step = min(1.0, 0.99 * float(np.min(-beta[neg] / d[neg])))
        f0 = f(beta)
        for _ls in range(60):
            nb = beta + step * d
            if np.all(nb > 0) and f(nb) <= f0 - 0.25 * step * dec:
                break
            step *= 0.5
        else:
            break
        beta = beta + step * d
    return beta
