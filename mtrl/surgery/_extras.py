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
    """Gradient statistics the papers analyse, from G = J J^T; 0-dim tensors, no host sync.

    ``cos_mean``/``cos_min``: cosine over pairs i < j (a pair with a zero row has cosine 0);
    ``conflict_share``: share of pairs with g_i . g_j < 0; ``gms_mean``/``gms_min``: gradient
    magnitude similarity 2|g_i||g_j| / (|g_i|^2 + |g_j|^2) (PCGrad paper, Definition 2; 1 when
    both rows are zero); ``norms``: [K] row norms; ``update_norm_ratio``: |update| / |mean row|
    (0 when the mean is zero), only when ``update`` is given.  For K = 1 there are no pairs and
    the pair statistics are cos 1, conflict share 0, gms 1.
    """
    g = grads.detach()
    g = g if g.dtype in (torch.float32, torch.float64) else g.float()
    K = g.shape[0]
    G = gram(g).to(g.dtype)
    sq = G.diagonal().clamp(min=0)
    norms = sq.sqrt()
    out: dict[str, Tensor] = {"norms": norms}
    one = torch.ones((), dtype=g.dtype, device=g.device)
    if K >= 2:
        i, j = torch.triu_indices(K, K, offset=1, device=g.device)
        gij = G[i, j]
        den = norms[i] * norms[j]
        cos = torch.where(den > 0, gij / torch.where(den > 0, den, one), 0 * one).clamp(-1, 1)
        msq = sq[i] + sq[j]
        gms = torch.where(msq > 0, 2 * den / torch.where(msq > 0, msq, one), one)
        out["cos_mean"] = cos.mean()
        out["cos_min"] = cos.min()
        out["conflict_share"] = (gij < 0).to(g.dtype).mean()
        out["gms_mean"] = gms.mean()
        out["gms_min"] = gms.min()
    else:
        out["cos_mean"] = one.clone()
        out["cos_min"] = one.clone()
        out["conflict_share"] = 0 * one
        out["gms_mean"] = one.clone()
        out["gms_min"] = one.clone()
    if update is not None:
        mn = g.mean(dim=0).norm()
        un = update.detach().to(g.dtype).norm()
        out["update_norm_ratio"] = torch.where(mn > 0, un / torch.where(mn > 0, mn, one), 0 * one)
    return out
