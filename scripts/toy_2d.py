"""Two-task 2-D landscape of the CAGrad paper's toy example, optimised through mtrl.surgery.

Runs mean, PCGrad, CAGrad (c = 0.5), MGDA and GradOPS (several alphas) from the three initial
points with Adam (lr 1e-3, 100 000 steps by default), writes a PNG of the trajectories over the
contours of L1 + L2 and prints where each run ends.  The per-task gradients of all runs are
computed in one vectorised autograd call per step and Adam is vectorised over the runs; each
run's surgery object is still called once per step on its own [2, 2] gradient matrix.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import mtrl.surgery as surgery

STARTS = [(-8.5, 7.5), (-8.5, -5.0), (9.0, 9.0)]
METHODS = [
    ("mean", {}),
    ("pcgrad", {}),
    ("cagrad", {"c": 0.5}),
    ("mgda", {}),
    ("gradops", {"alpha": -2.0}),
    ("gradops", {"alpha": 0.0}),
    ("gradops", {"alpha": 2.0}),
]


def losses(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """L1, L2 for points x [R, 2] (formulas of the CAGrad paper's toy.py, as in the issue)."""
    x1, x2 = x[:, 0], x[:, 1]
    f1 = torch.log(torch.clamp((0.5 * (-x1 - 7) - torch.tanh(-x2)).abs(), min=5e-6)) + 6
    f2 = torch.log(torch.clamp((0.5 * (-x1 + 3) + torch.tanh(-x2) + 2).abs(), min=5e-6)) + 6
    c1 = torch.clamp(torch.tanh(0.5 * x2), min=0)
    c2 = torch.clamp(torch.tanh(-0.5 * x2), min=0)
    f1_sq = ((-x1 + 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    f2_sq = ((-x1 - 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    return c1 * f1 + c2 * f1_sq, c1 * f2 + c2 * f2_sq


def label(name: str, opts: dict) -> str:
    return name + "".join(f" {k}={v:g}" for k, v in opts.items())


def run(steps: int, lr: float, record_every: int):
    runs = [(m, o, s) for (m, o) in METHODS for s in range(len(STARTS))]
    R = len(runs)
    x = torch.tensor([STARTS[s] for _, _, s in runs], dtype=torch.float64)
    objs = [surgery.make(m, seed=i, **o) for i, (m, o, _) in enumerate(runs)]
    m1, v1 = torch.zeros_like(x), torch.zeros_like(x)
    b1, b2, eps = 0.9, 0.999, 1e-8
    traj = [x.clone()]
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        xr = x.clone().requires_grad_(True)
        l1, l2 = losses(xr)
        g1 = torch.autograd.grad(l1.sum(), xr, retain_graph=True)[0]
        g2 = torch.autograd.grad(l2.sum(), xr)[0]
        J = torch.stack([g1, g2], dim=1)  # [R, 2 tasks, 2 params]
        upd = torch.stack([objs[r](J[r]) for r in range(R)])
        m1.mul_(b1).add_(upd, alpha=1 - b1)
        v1.mul_(b2).addcmul_(upd, upd, value=1 - b2)
        mhat = m1 / (1 - b1**step)
        vhat = v1 / (1 - b2**step)
        x = x - lr * mhat / (vhat.sqrt() + eps)
        if step % record_every == 0:
            traj.append(x.clone())
    elapsed = time.perf_counter() - t0
    return runs, torch.stack(traj), elapsed


def plot(runs, traj, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = torch.linspace(-10, 10, 400, dtype=torch.float64)
    X, Y = torch.meshgrid(grid, grid, indexing="xy")
    l1, l2 = losses(torch.stack([X.reshape(-1), Y.reshape(-1)], 1))
    Z = (l1 + l2).reshape(X.shape)
    n = len(METHODS)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4), sharey=True)
    colors = ["tab:red", "tab:blue", "tab:green"]
    for k, (name, opts) in enumerate(METHODS):
        ax = axes[k]
        ax.contourf(X, Y, Z, levels=40, cmap="Greys")
        for r, (m, o, s) in enumerate(runs):
            if (m, o) != (name, opts):
                continue
            path = traj[:, r]
            ax.plot(path[:, 0], path[:, 1], color=colors[s], lw=1.5)
            ax.plot(*STARTS[s], "o", color=colors[s], ms=5)
            ax.plot(path[-1, 0], path[-1, 1], "*", color="gold", mec="k", ms=11)
        ax.set_title(label(name, opts), fontsize=10)
        ax.set_xlim(-10, 10)
        ax.set_ylim(-10, 10)
        ax.set_aspect("equal")
    fig.suptitle("Adam on L1 + L2 (CAGrad toy): start o, end *", fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/toy_2d.png"))
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    runs, traj, elapsed = run(args.steps, args.lr, record_every=max(1, args.steps // 2000))
    print(f"{args.steps} Adam steps x {len(runs)} runs in {elapsed:.0f} s")
    end = traj[-1]
    l1, l2 = losses(end)
    print(f"{'method':<20} {'start':<14} {'end x1':>8} {'end x2':>8} {'L1':>9} {'L2':>9}")
    for r, (m, o, s) in enumerate(runs):
        print(
            f"{label(m, o):<20} {STARTS[s]!s:<14} {end[r, 0]:>8.3f} {end[r, 1]:>8.3f} "
            f"{l1[r]:>9.4f} {l2[r]:>9.4f}"
        )
    plot(runs, traj, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
