"""TorchJD wrapper, per-task gradients, writing an update back, Gram diagnostics."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ._base import SEED, Surgery, gram

TORCHJD_PREFIX = "torchjd:"


def _torchjd_class(agg_name: str):
    try:
        import torchjd.aggregation as tja
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ValueError(
            f"surgery {TORCHJD_PREFIX + agg_name!r} needs torchjd, which is not installed "
            "(pip install torchjd)"
        ) from exc
    cls = getattr(tja, agg_name, None)
    if not (inspect.isclass(cls) and issubclass(cls, tja.Aggregator)) or agg_name == "Aggregator":
        names = sorted(
            n
            for n in dir(tja)
            if inspect.isclass(getattr(tja, n))
            and issubclass(getattr(tja, n), tja.Aggregator)
            and not inspect.isabstract(getattr(tja, n))
            and n not in ("Aggregator", "WeightedAggregator", "GramianWeightedAggregator")
        )
        raise ValueError(f"unknown TorchJD aggregator {agg_name!r}; allowed: {names}")
    return cls


def torchjd_options(agg_name: str) -> dict[str, Any]:
    cls = _torchjd_class(agg_name)
    out = {}
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        out[p.name] = None if p.default is inspect.Parameter.empty else p.default
    out["seed"] = SEED.default
    return out


class TorchJD(Surgery):
    """Wraps ``torchjd.aggregation.<Name>(**options)``; conventions are TorchJD's (e.g. its
    PCGrad sums).  TorchJD's randomised aggregators use torch's *global* generator, so ``seed``
    only seeds this object's own generator; state = that generator.  Treated as a host solver:
    its aggregators may synchronise."""

    host_solver = True

    def __init__(self, agg_name: str, **options: Any) -> None:
        self.name = TORCHJD_PREFIX + agg_name
        cls = _torchjd_class(agg_name)
        allowed = torchjd_options(agg_name)
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ValueError(
                f"unknown option(s) {unknown} for surgery {self.name!r}; allowed options "
                f"(with defaults): {', '.join(f'{k}={v!r}' for k, v in allowed.items())}"
            )
        seed = options.pop("seed", SEED.default)
        super().__init__(seed=SEED.check("seed", seed))
        try:
            self._agg = cls(**options)
        except (TypeError, ValueError, ImportError) as exc:
            raise ValueError(f"cannot make {self.name} with {options}: {exc}") from exc
        self._options.update(options)

    def _aggregate(self, grads: Tensor) -> Tensor:
        return self._agg(grads)


# ------------------------------------------------------------------ per-task gradients
def per_task_grads(
    loss_fn: Callable[[dict[str, Tensor], Any], Tensor],
    params: dict[str, Tensor],
    batch: Any,
    randomness: str = "different",
) -> tuple[Tensor, Tensor]:
    """All K per-task gradients in one vectorised pass (``torch.func.vmap`` over the task axis).

    ``batch`` is a pytree of tensors shaped ``[K, B/K, ...]``; ``loss_fn(params, task_batch)``
    returns the scalar loss of one task (``task_batch`` has the K axis removed) and may use
    ``torch.func.functional_call(module, params, ...)``; other tensors it touches are constants.
    Returns ``grads [K, P]`` (each parameter flattened, concatenated in the dict's order) and the
    detached losses ``[K]``.  ``randomness`` is passed to ``vmap`` ('different': random ops
    inside ``loss_fn`` draw independently per task, e.g. the actor's reparameterised sample).
    """
    names = list(params)
    detached = {k: params[k].detach() for k in names}

    def one(p: dict[str, Tensor], tb: Any) -> tuple[Tensor, Tensor]:
        loss = loss_fn(p, tb)
        return loss, loss.detach()

    grad_fn = torch.func.grad(one, has_aux=True)
    grads, losses = torch.func.vmap(grad_fn, in_dims=(None, 0), randomness=randomness)(
        detached, batch
    )
    # One strided copy per parameter straight into [K, P]: vmap returns some weight gradients
    # as transposed views, and reshape-then-cat would copy them twice.
    K = losses.shape[0]
    flat = grads[names[0]].new_empty(K, sum(params[k].numel() for k in names))
    offset = 0
    with torch.no_grad():
        for name in names:
            size = params[name].numel()
            flat.narrow(1, offset, size).view(K, *params[name].shape).copy_(grads[name])
            offset += size
    return flat, losses.detach()


def assign_grads(params: dict[str, Tensor], update: Tensor) -> None:
    """Write an update vector ``[P]`` into ``.grad`` of each parameter (dict order, reshaped)."""
    total = sum(p.numel() for p in params.values())
    if update.dim() != 1 or update.numel() != total:
        raise ValueError(f"update must be a vector of {total} elements, got {tuple(update.shape)}")
    offset = 0
    for p in params.values():
        n = p.numel()
        chunk = update[offset : offset + n].view(p.shape).to(dtype=p.dtype, device=p.device)
        if p.grad is None:
            p.grad = chunk.clone()
        else:
            p.grad.copy_(chunk)
        offset += n


# ------------------------------------------------------------------------- diagnostics
def gram_diagnostics(grads: Tensor, update: Tensor | None = None) -> dict[str, Tensor]:
    """What the PCGrad paper analyses (Yu et al. 2020, Section 2), from G = J J^T; tensors on
    the gradients' device, no host sync.

    Per pair i < j (``pair_*``: vectors in ``torch.triu_indices(K, K, 1)`` order): the cosine
    cos φ_ij (Definition 1; 0 when a row is zero), the gradient magnitude similarity
    Φ_ij = 2|g_i||g_j| / (|g_i|^2 + |g_j|^2) (Definition 2; 1 when both rows are zero) and the
    curvature bounding measure ξ_ij = (1 - cos^2 φ_ij) |g_i - g_j|^2 / |g_i + g_j|^2
    (Definition 5; 0 when g_i + g_j = 0). Over pairs: ``cos``/``cos_min``, ``gms``/``gms_min``
    and ``xi`` (means and minima); ``conflict``, the share of pairs with g_i . g_j < 0; of all
    pairs, the shares that conflict and meet condition (a) of Theorem 2, cos φ_ij <= -Φ_ij
    (``cond_a``), or the implication of its condition (b), ξ_ij <= 1 (``xi_le_1``): divided by
    ``conflict`` they are the shares among conflicting pairs the paper's Figure 4 plots.
    ``norms``: the [K] row norms; ``update_norm_ratio``: |update| / |mean row| (0 when the mean
    is zero), only when ``update`` is given. For K = 1 there are no pairs: cos 1, Φ 1, ξ 0,
    shares 0.
    """
    g = grads.detach()
    g = g if g.dtype in (torch.float32, torch.float64) else g.float()
    K = g.shape[0]
    G = gram(g).to(g.dtype)
    sq = G.diagonal().clamp(min=0)
    norms = sq.sqrt()
    out: dict[str, Tensor] = {"norms": norms}
    i, j = torch.triu_indices(K, K, offset=1, device=g.device)
    pairs = _pair_statistics(G[i, j], sq[i], sq[j])
    out.update({f"pair_{key}": value for key, value in pairs.items() if key in PAIR_KEYS})
    if K >= 2:
        conflict = pairs["dot"] < 0
        for key in ("cos", "gms"):
            out[key] = pairs[key].mean()
            out[f"{key}_min"] = pairs[key].min()
        out["xi"] = pairs["xi"].mean()
        out["conflict"] = conflict.to(g.dtype).mean()
        out["cond_a"] = (conflict & (pairs["cos"] <= -pairs["gms"])).to(g.dtype).mean()
        out["xi_le_1"] = (conflict & (pairs["xi"] <= 1)).to(g.dtype).mean()
    else:
        one = torch.ones((), dtype=g.dtype, device=g.device)
        out.update({"cos": one, "cos_min": one, "gms": one, "gms_min": one})
        out.update({key: 0 * one for key in ("xi", "conflict", "cond_a", "xi_le_1")})
    if update is not None:
        mn = g.mean(dim=0).norm()
        out["update_norm_ratio"] = _ratio(update.detach().to(g.dtype).norm(), mn)
    return out


PAIR_KEYS = ("cos", "gms", "xi")
"""The per-pair statistics of [gram_diagnostics][mtrl.surgery.gram_diagnostics] (``pair_<key>``)."""


def _pair_statistics(dot: Tensor, sq_i: Tensor, sq_j: Tensor) -> dict[str, Tensor]:
    den = (sq_i * sq_j).sqrt()
    cos = _ratio(dot, den).clamp(-1, 1)
    total = sq_i + sq_j
    gms = torch.where(total > 0, _ratio(2 * den, total), torch.ones_like(total))
    # |g_i -+ g_j|^2 = |g_i|^2 + |g_j|^2 -+ 2 g_i.g_j, clamped at 0 against rounding.
    xi = (1 - cos.square()) * _ratio((total - 2 * dot).clamp(min=0), (total + 2 * dot).clamp(min=0))
    return {"dot": dot, "cos": cos, "gms": gms, "xi": xi}


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    """num / den, 0 where den is 0 (elementwise, no host sync)."""
    safe = torch.where(den > 0, den, torch.ones_like(den))
    return torch.where(den > 0, num / safe, torch.zeros_like(num))


def step_curvature(
    loss_before: Tensor, loss_after: Tensor, grad: Tensor, step: Tensor
) -> dict[str, Tensor]:
    """The multi-task curvature of one step, H(L; θ_t, θ_t+1) = 2 [L(θ_t+1) - L(θ_t) -
    ∇L(θ_t)^T (θ_t+1 - θ_t)] (PCGrad paper, Section 5.3: Definition 3 by Taylor's theorem),
    and H / |∇L(θ_t)|^2, the curvature relative to the squared gradient norm (ℓ of Theorem 2's
    bound H >= ℓ |g|^2). ``grad`` and ``step`` are flat vectors; computed in float64."""
    grad, step = grad.detach().double(), step.detach().double()
    curvature = 2 * (loss_after.detach().double() - loss_before.detach().double() - grad @ step)
    return {"curvature": curvature, "curvature_rel": _ratio(curvature, grad @ grad)}
