"""Time every surgery method against TorchJD's implementation of the same method.

Prints a table (median ms per call), ratios TorchJD / mtrl, a per-task-loop parameter-space
PCGrad, the per-task-gradient helper against one plain backward for an MT10-sized critic, and as
the last line one JSON object with the ratios.  ``--quick`` runs a small subset quickly;
``--device cuda`` times on a GPU (each call then ends with the device drained; our methods use
their default ``solver=auto``, i.e. the device solvers there, and ``NAME[exact]`` rows time the
host solvers too).

TorchJD aggregators that need optional solvers (CAGrad, NashMTL: cvxpy; UPGrad: quadprog) are
reported as n/a when those packages are not importable.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

import mtrl.surgery as surgery

CPU = torch.device("cpu")
TORCHJD = {
    "mean": ("Mean", {}),
    "sum": ("Sum", {}),
    "pcgrad": ("PCGrad", {}),
    "cagrad": ("CAGrad", {"c": 0.5}),
    "mgda": ("MGDA", {}),
    "imtlg": ("IMTLG", {}),
    "nashmtl": ("NashMTL", {"n_tasks": None}),
    "gradvac": ("GradVac", {}),
    "alignedmtl": ("AlignedMTL", {}),
    "upgrad": ("UPGrad", {}),
    "graddrop": ("GradDrop", {}),
}


def timeit(fn, repeat: int, warmup: int = 1, device: torch.device = CPU) -> float:
    """Median milliseconds of ``fn()``, the device drained before and after each call."""

    def drain() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        drain()
        t = time.perf_counter()
        fn()
        drain()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def torchjd_aggregator(name: str, K: int):
    try:
        import torchjd.aggregation as tja
    except ImportError:
        return None
    if name not in TORCHJD:
        return None
    cls_name, opts = TORCHJD[name]
    opts = {k: (K if v is None else v) for k, v in opts.items()}
    try:
        return getattr(tja, cls_name)(**opts)
    except (ImportError, TypeError, ValueError):
        return None


def loop_pcgrad(g: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """What the older code bases do: per task, per other task, in parameter space."""
    K = g.shape[0]
    out = g.clone()
    for i in range(K):
        for j in torch.randperm(K, generator=gen).tolist():
            if j == i:
                continue
            dot = out[i] @ g[j]
            if dot < 0:
                out[i] -= dot / (g[j] @ g[j]) * g[j]
    return out.mean(0)


def variants(methods, device):
    """(label, surgery object, TorchJD name): on a GPU the host solvers too, as NAME[exact]."""
    for name in methods:
        yield name, surgery.make(name), name
        if device.type == "cuda" and "solver" in surgery.options_of(name):
            yield f"{name}[exact]", surgery.make(name, solver="exact"), name


def bench_aggregators(sizes, methods, repeat, device=CPU):
    rows, ratios = [], {}
    for K, P in sizes:
        g = torch.randn(K, P, generator=torch.Generator().manual_seed(0)).to(device)
        g[1] = -0.5 * g[0] + g[1]  # some conflict
        for label, ours, name in variants(methods, device):
            t_ours = timeit(lambda ours=ours, g=g: ours(g), repeat, device=device)
            jd = torchjd_aggregator(name, K)
            t_jd = float("nan")
            if jd is not None:
                t_jd = timeit(lambda jd=jd, g=g: jd(g), repeat, device=device)
            ratio = t_jd / t_ours
            rows.append((K, P, label, t_ours, t_jd, ratio))
            ratios[f"{label}@K{K}_P{P:.0e}"] = round(ratio, 3) if ratio == ratio else None
            ratios[f"{label}@K{K}_P{P:.0e}_ms"] = round(t_ours, 3)
            print(f"{K:>3} {P:>8.0e} {label:<14} {t_ours:>10.2f} {t_jd:>10.2f} {ratio:>7.2f}")
        if "pcgrad" in methods:
            gen = torch.Generator().manual_seed(0)
            loop_repeat = max(1, repeat // 3)
            t_loop = timeit(lambda g=g, gen=gen: loop_pcgrad(g, gen), loop_repeat, device=device)
            t_pc = next(r[3] for r in rows if r[:3] == (K, P, "pcgrad"))
            ratios[f"pcgrad_loop_over_gram@K{K}_P{P:.0e}"] = round(t_loop / t_pc, 3)
            print(
                f"{K:>3} {P:>8.0e} {'pcgrad-loop':<14} {t_loop:>10.2f} {'':>10} {'':>7}"
                f"  (loop / gram = {t_loop / t_pc:.2f})"
            )
    return rows, ratios


def bench_per_task_grads(repeat: int, K: int = 10, per_task: int = 128, device=CPU):
    """MT10-sized critic: input 49 + action 4, 3 x 400 hidden, output 1, batch 10 x 128."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(53, 400),
        nn.ReLU(),
        nn.Linear(400, 400),
        nn.ReLU(),
        nn.Linear(400, 400),
        nn.ReLU(),
        nn.Linear(400, 1),
    ).to(device)
    params = dict(net.named_parameters())
    obs = torch.randn(K, per_task, 49, device=device)
    act = torch.randn(K, per_task, 4, device=device)
    target = torch.randn(K, per_task, device=device)
    batch = {"obs": obs, "act": act, "target": target}

    def loss_fn(p, tb):
        q = torch.func.functional_call(net, p, (torch.cat([tb["obs"], tb["act"]], -1),))
        return ((q.squeeze(-1) - tb["target"]) ** 2).mean()

    def plain():
        net.zero_grad(set_to_none=True)
        x = torch.cat([obs, act], -1).reshape(K * per_task, 53)
        loss = ((net(x).squeeze(-1) - target.reshape(-1)) ** 2).mean() * K  # sum of task means
        loss.backward()

    def helper():
        surgery.per_task_grads(loss_fn, params, batch)

    def loop():
        for k in range(K):
            tb = {key: v[k] for key, v in batch.items()}
            torch.autograd.grad(loss_fn(params, tb), list(params.values()))

    t_plain = timeit(plain, repeat, warmup=2, device=device)
    t_helper = timeit(helper, repeat, warmup=2, device=device)
    t_loop = timeit(loop, max(1, repeat // 2), warmup=1, device=device)
    print(
        f"per-task grads, MT10 critic (P={sum(p.numel() for p in params.values())}):"
        f" plain backward {t_plain:.1f} ms, vmap helper {t_helper:.1f} ms"
        f" ({t_helper / t_plain:.2f}x), loop of {K} autograd.grad {t_loop:.1f} ms"
        f" ({t_loop / t_plain:.2f}x)"
    )
    return {
        "per_task_helper_over_plain_backward": round(t_helper / t_plain, 3),
        "per_task_loop_over_plain_backward": round(t_loop / t_plain, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    ap.add_argument("--repeat", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--methods", nargs="+", help="default: all (--quick: four)")
    ap.add_argument("--sizes", nargs="+", help="KxP, e.g. 10x1e6 50x1e6 (default: four sizes)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.quick:
        sizes, repeat = [(10, 100_000)], args.repeat or 3
        methods = ["mean", "pcgrad", "cagrad", "mgda"]
    else:
        sizes = [(10, 100_000), (10, 1_000_000), (50, 100_000), (50, 1_000_000)]
        repeat = args.repeat or 7
        methods = surgery.available()
    methods = args.methods or methods
    if args.sizes:
        sizes = [(int(k), int(float(p))) for k, p in (size.split("x") for size in args.sizes)]
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}, "
        f"median of {repeat} calls (float32 grads)"
    )
    print(f"{'K':>3} {'P':>8} {'method':<14} {'mtrl ms':>10} {'torchjd ms':>10} {'ratio':>7}")
    _, ratios = bench_aggregators(sizes, methods, repeat, device)
    ratios.update(bench_per_task_grads(repeat=3 if args.quick else 10, device=device))
    goal = {m: ratios.get(f"{m}@K50_P1e+06") for m in ("pcgrad", "cagrad", "mgda")}
    ratios["goals"] = {
        **{f"{m}_K50_P1e6_ge_1.3x": (v is not None and v >= 1.3) for m, v in goal.items()},
        "per_task_helper_le_1.3x": ratios["per_task_helper_over_plain_backward"] <= 1.3,
    }
    print(json.dumps(ratios))


if __name__ == "__main__":
    main()
