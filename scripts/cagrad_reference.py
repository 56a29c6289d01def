"""CAGrad's solvers against an independent solve of the paper's primal problem, K = 50.

For N random [50, 1000] gradient matrices with strong conflicts (half the rows nearly opposite
to the other half, or a shared direction with random signs) and row norms spread over three
decades, c = 0.5: the exact (host) and the device solver's update d against Clarabel's solve
(through cvxpy, float64) of max_d min_i g_i . d subject to |d - g_0| <= c |g_0|. Reports, per
solver, the worst and median of

- the KKT residual on the solver's own weights lam (d - g_0 = c |g_0| g_lam / |g_lam|): weight
  on tasks that do not attain min_i g_i . d, sum_i lam_i (g_i . d - min_j g_j . d), and the
  dual's max_i (F(lam) - dF/dlam_i), both / (|g|max |g_0|);
- the objective's shortfall (Clarabel's min_i g_i . d minus the solver's) / (|g|max |g_0|);
- |d - d_ref| / |d_ref|, the support size of lam, and the time per solve.

Uses only ``methods.cagrad_weights`` and ``_device.cagrad_weights``, so the same script runs on
earlier versions (``git stash; git checkout <commit> -- mtrl/surgery``) for a before/after.
Needs cvxpy and clarabel (the ``test`` extra).
"""

from __future__ import annotations

import argparse
import time

import cvxpy as cp
import numpy as np
import torch

from mtrl.surgery import _device, methods

K, P, C = 50, 1000, 0.5


def problem(rng: np.random.Generator, kind: int) -> np.ndarray:
    J = rng.standard_normal((K, P))
    if kind == 0:
        J[K // 2 :] = -J[: K // 2] + 0.3 * rng.standard_normal((K - K // 2, P))
    else:
        J += 3 * rng.standard_normal((K, 1)) * rng.standard_normal(P)
    return J * 10 ** rng.uniform(0, 3, size=(K, 1))


def reference(J: np.ndarray) -> tuple[np.ndarray, float]:
    scale = np.linalg.norm(J, axis=1).max()
    A = J / scale
    g0 = A.mean(0)
    d, worst = cp.Variable(P), cp.Variable()
    constraints = [A @ d >= worst, cp.norm(d - g0) <= C * np.linalg.norm(g0)]
    cp.Problem(cp.Maximize(worst), constraints).solve(
        solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10
    )
    return d.value * scale, float(worst.value) * scale**2


def solve(J: np.ndarray, solver: str) -> tuple[np.ndarray, float]:
    G, m = J @ J.T, np.full(K, 1.0 / K)
    start = time.perf_counter()
    if solver == "exact":
        w = methods.cagrad_weights(G, m, np.eye(K), C)
    else:
        t = torch.from_numpy
        w = _device.cagrad_weights(t(G), t(m), torch.eye(K, dtype=torch.float64), C).numpy()
    return w, time.perf_counter() - start


def measures(J: np.ndarray, w: np.ndarray, d_ref: np.ndarray, value_ref: float) -> dict:
    d, g0 = w @ J, J.mean(0)
    unit = np.linalg.norm(J, axis=1).max() * np.linalg.norm(g0)
    products = J @ d
    lam = (w - 1.0 / K) / (w - 1.0 / K).sum()
    g_lam = lam @ J
    dual_grad = J @ g0 + C * np.linalg.norm(g0) * (J @ g_lam) / np.linalg.norm(g_lam)
    dual_value = g_lam @ g0 + C * np.linalg.norm(g0) * np.linalg.norm(g_lam)
    return {
        "slackness": float(lam @ (products - products.min())) / unit,
        "dual KKT": max(float(dual_value - dual_grad.min()), 0.0) / unit,
        "shortfall": (value_ref - float(products.min())) / unit,
        "|d - d_ref|": float(np.linalg.norm(d - d_ref) / np.linalg.norm(d_ref)),
        "support": int((lam > 1e-9).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    rows: dict[str, list[dict]] = {"exact": [], "device": []}
    for index in range(args.problems):
        J = problem(rng, index % 2)
        d_ref, value_ref = reference(J)
        for solver, results in rows.items():
            w, seconds = solve(J, solver)
            results.append({**measures(J, w, d_ref, value_ref), "ms": 1e3 * seconds})
    for solver, results in rows.items():
        print(f"{solver} solver, {len(results)} problems [{K}, {P}], c = {C}:")
        for key in results[0]:
            values = np.array([r[key] for r in results], dtype=float)
            print(f"  {key:12s} max {values.max():9.2e}  median {np.median(values):9.2e}")
        off = [i for i, r in enumerate(results) if r["dual KKT"] > 1e-8]
        print(f"  problems with a dual KKT residual > 1e-8: {len(off)} {off}")


if __name__ == "__main__":
    main()
