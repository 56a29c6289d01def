"""Small dense solvers on the K x K Gram matrix (numpy, float64, CPU).

Every function here works on a *normalised* problem (callers divide the Gram matrix by its largest
diagonal entry or work with the cosine matrix), so tolerances are relative and the results do not
depend on the overall scale of the gradients.  None of them ever returns NaN or Inf: degenerate
inputs fall back to documented answers.
"""

from __future__ import annotations

import numpy as np

_TINY = 1e-300


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
    return np.clip(z, 0.0, None)


def project_dual_cone(N: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Multipliers z >= 0 with x + U^T z = projection of x onto {y : U y >= 0}.

    ``N = U U^T`` (cosine matrix of the unit rows U), ``q = U x``.  Returns z.
    """
    if np.all(q >= 0.0):
        return np.zeros_like(q)
    return nnqp(N, q)


def _cagrad_support(G, b, rho, S):
    """Closed-form stationary point of CAGrad's dual on the face with support S.

    On the support, b_S + (rho / r) G_SS w_S = nu 1 and sum w_S = 1 with r = |g_w|; with
    a = G_SS^-1 1 and e = G_SS^-1 b_S this gives w_S = (nu a - e) / lam, lam = rho / r, where
    nu = F* solves A nu^2 - 2 B nu + C = rho^2 (A = 1.a, B = 1.e, C = b_S.e) and lam > 0.
    Returns the full-length (possibly negative) w, or None when the face has no such point.
    """
    GS = G[np.ix_(S, S)]
    if np.linalg.cond(GS) > 1e12:
        return None
    sol = np.linalg.solve(GS, np.stack([np.ones(len(S)), b[S]], axis=1))
    a, e = sol[:, 0], sol[:, 1]
    A, B, C = a.sum(), e.sum(), float(b[S] @ e)
    disc = B * B - A * (C - rho * rho)
    if not (A > 0 and disc > 0):
        return None
    lam = np.sqrt(disc)
    w = np.zeros(G.shape[0])
    w[S] = ((B + lam) / A * a - e) / lam
    return w


def _cagrad_kkt(G, b, rho, w, tol=1e-10):
    """Max KKT violation of a simplex point w for F(w) = b.w + rho |g_w| (inf if not usable)."""
    if np.any(w < -1e-12):
        return np.inf
    r = np.sqrt(max(float(w @ G @ w), 0.0))
    if not r > 1e-9:
        return np.inf
    grad = b + rho * (G @ w) / r
    fval = float(b @ w) + rho * r
    return float(np.max(fval - grad)) / max(1.0, abs(fval))


def _cagrad_active_set(G, b, rho, S):
    """Refine a support guess S by single swaps until the closed form is a KKT point."""
    S = sorted(set(S))
    K = G.shape[0]
    for _ in range(4 * K + 8):
        if not S:
            return None
        w = _cagrad_support(G, b, rho, S)
        if w is None:
            return None
        if np.any(w[S] < -1e-12):
            S.remove(S[int(np.argmin(w[S]))])
            continue
        w = np.clip(w, 0.0, None)
        w /= w.sum()
        r = np.sqrt(max(float(w @ G @ w), 0.0))
        if not r > 1e-9:
            return None
        grad = b + rho * (G @ w) / r
        fval = float(b @ w) + rho * r
        viol = fval - grad
        viol[S] = -np.inf
        j = int(np.argmax(viol))
        if viol[j] <= 1e-10 * max(1.0, abs(fval)):
            return w
        S = sorted([*S, j])
    return None


def _cagrad_barrier(G, b, rho, gap, w0=None, tau=1.0):
    """Log-barrier interior point for min b.w + rho t s.t. t^2 >= w^T G w, w >= 0, sum w = 1."""
    with np.errstate(all="ignore"):  # non-finite steps are detected and stop the iteration
        return _cagrad_barrier_impl(G, b, rho, gap, w0, tau)


def _cagrad_barrier_impl(G, b, rho, gap, w0, tau):
    K = G.shape[0]
    w = (
        np.full(K, 1.0 / K)
        if w0 is None
        else np.clip(w0, 1e-12, None) / np.clip(w0, 1e-12, None).sum()
    )
    t = np.sqrt(max(float(w @ (G @ w)), 0.0)) * (1.0 + 1e-3) + 1e-3
    ones = np.ones(K)
    idx = np.arange(K)

    def phi(w, t, tau):
        s = t * t - float(w @ (G @ w))
        if not s > 0 or t <= 0 or np.any(w <= 0):
            return np.inf
        return tau * (float(b @ w) + rho * t) - float(np.sum(np.log(w))) - np.log(s)

    degree = K + 2
    for _outer in range(40):
        for _ in range(60):
            Gw = G @ w
            s = t * t - float(w @ Gw)
            if not s > 1e-100 * max(t * t, 1e-300):  # cone boundary reached numerically
                break
            grad_w = tau * b - 1.0 / w + 2.0 * Gw / s
            grad_t = tau * rho - 2.0 * t / s
            H = np.zeros((K + 2, K + 2))
            H[:K, :K] = 2.0 * G / s + 4.0 * np.outer(Gw, Gw) / (s * s)
            H[idx, idx] += 1.0 / (w * w)
            H[:K, K] = H[K, :K] = -4.0 * t * Gw / (s * s)
            H[K, K] = -2.0 / s + 4.0 * t * t / (s * s)
            H[:K, K + 1] = H[K + 1, :K] = 1.0
            rhs = np.concatenate([-grad_w, [-grad_t, 0.0]])
            if not (np.all(np.isfinite(H)) and np.all(np.isfinite(rhs))):
                break
            try:
                sol = np.linalg.solve(H, rhs)
            except np.linalg.LinAlgError:
                sol = np.linalg.lstsq(H, rhs, rcond=None)[0]
            dw, dt = sol[:K], sol[K]
            dw -= dw.sum() / K * ones  # stay exactly on sum(w) = 1
            dec = -(float(grad_w @ dw) + grad_t * dt)
            if not np.isfinite(dec) or dec < 0:
                return np.clip(w, 0.0, None) / np.clip(
                    w, 0.0, None
                ).sum(), tau  # numerics exhausted
            if dec <= 1e-12:
                break
            step = 1.0
            neg = dw < 0
            if neg.any():
                step = min(step, 0.99 * float(np.min(-w[neg] / dw[neg])))
            if dt < 0:
                step = min(step, 0.99 * (-t / dt))
            f0 = phi(w, t, tau)
            for _ls in range(60):
                f1 = phi(w + step * dw, t + step * dt, tau)
                # Near the centre (Newton decrement < 1/2) full steps converge quadratically and
                # the Armijo test is below the rounding of phi, so only feasibility is required.
                if (dec < 0.5 and np.isfinite(f1)) or f1 <= f0 - 0.25 * step * dec:
                    break
                step *= 0.5
            else:
                break
            w = w + step * dw
            t = t + step * dt
        if degree / tau < gap:
            break
        tau *= 20.0
    w = np.clip(w, 0.0, None)
    return w / w.sum(), tau


def cagrad_dual(
    G: np.ndarray, m: np.ndarray, c: float, gap: float = 1e-11
) -> tuple[np.ndarray, float, float]:
    """Solve CAGrad's dual  min_{w in simplex} F(w) = w^T G m + rho sqrt(w^T G w), rho = c |g_0|.

    ``g_0 = m^T J`` (``m`` = mean weights).  Works on ``G / max(diag G)``.  Exact active-set
    solution: the KKT point for a support S has a closed form (see ``_cagrad_support``); we try
    every support for K <= 3, otherwise the support of a log-barrier interior-point solution of the
    equivalent second-order-cone program (stopped at a loose gap, then polished by the closed
    form); when the polish is not a KKT point (degenerate, rank-deficient supports) the barrier
    is run to a duality-gap bound of ``gap`` instead.  The solver is given exact gradients and
    Hessians of a normalised problem, so it cannot stall at its starting point like the official
    SLSQP recipe on a tiny raw Gram.

    Returns (w, |g_w|, rho) in the normalised units of ``G / max(diag G)``.
    """
    K = G.shape[0]
    top = float(np.max(np.diag(G)))
    G = G / top
    b = G @ m
    g0sq = float(m @ b)
    rho = c * np.sqrt(max(g0sq, 0.0))
    if K == 1:
        return np.ones(1), float(np.sqrt(max(G[0, 0], 0.0))), rho

    def finish(w):
        return w, float(np.sqrt(max(float(w @ G @ w), 0.0))), rho

    if K <= 3:
        best = None
        for mask in range(1, 2**K):
            S = [i for i in range(K) if mask >> i & 1]
            w = _cagrad_support(G, b, rho, S)
            if w is not None and _cagrad_kkt(G, b, rho, w) <= 1e-10:
                w = np.clip(w, 0.0, None) / np.clip(w, 0.0, None).sum()
                f = float(b @ w) + rho * np.sqrt(max(float(w @ G @ w), 0.0))
                if best is None or f < best[0]:
                    best = (f, w)
        if best is not None:
            return finish(best[1])
        # No face has a KKT point with g_w != 0: the optimum is at g_w = 0 (0 in the hull); the
        # min-norm point reports that to the caller, which then uses the degenerate rule.
        return finish(min_norm_simplex(G))
    w = _cagrad_barrier(G, b, rho, 1e-6)[0]
    for rel in (1e-3, 1e-1, 1e-2, 1e-4):
        refined = _cagrad_active_set(G, b, rho, list(np.flatnonzero(w > rel * w.max())))
        if refined is not None:
            return finish(refined)
    w = _cagrad_barrier(G, b, rho, gap)[0]
    for rel in (1e-3, 1e-1, 1e-2, 1e-4, 1e-6):
        refined = _cagrad_active_set(G, b, rho, list(np.flatnonzero(w > rel * w.max())))
        if refined is not None:
            return finish(refined)
    return finish(w)


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
