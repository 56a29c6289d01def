"""Base class, option handling, randomness and state for the surgery methods."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor


class Option:
    """One option of a method: default value, validator (raises ValueError) and a description."""

    def __init__(self, default: Any, check: Callable[[str, Any], Any], doc: str) -> None:
        self.default = default
        self.check = check
        self.doc = doc


def check_float(lo: float | None = None, hi: float | None = None, lo_open: bool = False):
    def check(name: str, v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"option {name!r} must be a number, got {v!r}")
        v = float(v)
        bad = not np.isfinite(v)
        if lo is not None:
            bad |= v <= lo if lo_open else v < lo
        if hi is not None:
            bad |= v > hi
        if bad:
            rng = f"{'(' if lo_open else '['}{lo if lo is not None else '-inf'}, "
            rng += f"{hi if hi is not None else 'inf'}]"
            raise ValueError(f"option {name!r} must be a finite number in {rng}, got {v!r}")
        return v

    return check


def check_int(lo: int):
    def check(name: str, v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int | np.integer):
            raise ValueError(f"option {name!r} must be an integer >= {lo}, got {v!r}")
        if v < lo:
            raise ValueError(f"option {name!r} must be an integer >= {lo}, got {v!r}")
        return int(v)

    return check


def check_bool(name: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"option {name!r} must be True or False, got {v!r}")
    return v


def check_choice(*choices: str):
    def check(name: str, v: Any) -> str:
        if v not in choices:
            raise ValueError(f"option {name!r} must be one of {list(choices)}, got {v!r}")
        return v

    return check


def resolve_options(what: str, spec: dict[str, Option], options: dict[str, Any]) -> dict[str, Any]:
    """``options`` checked against ``spec`` and completed with its defaults.

    ``what`` names the object in the error, e.g. ``"surgery 'pcgrad'"``. An unknown option lists
    the allowed ones with their defaults; a bad value says which values are allowed.
    """
    unknown = sorted(set(options) - set(spec))
    if unknown:
        allowed = ", ".join(f"{k}={v.default!r}" for k, v in spec.items())
        raise ValueError(
            f"unknown option(s) {unknown} for {what}; allowed options (with defaults): {allowed}"
        )
    return {key: opt.check(key, options.get(key, opt.default)) for key, opt in spec.items()}


SEED = Option(0, check_int(0), "seed of the object's own torch.Generator")
SOLVER = Option(
    "auto",
    check_choice("auto", "exact", "device"),
    "exact: numpy on the host (one device-to-host copy per call); device: torch ops with a fixed "
    "iteration count on the gradients' device (no host sync, CUDA-graph capturable); auto: exact "
    "for CPU tensors, device otherwise",
)


class Surgery:
    """Turns per-task gradients ``[K, P]`` into one update ``[P]`` (same device and dtype).

    Subclasses set ``name``, ``options_spec`` and implement ``_aggregate(grads) -> Tensor``.
    All randomness comes from [generator_for][mtrl.surgery.Surgery.generator_for] the gradients'
    device, seeded by ``seed``.
    """

    name: str = ""
    options_spec: ClassVar[dict[str, Option]] = {"seed": SEED}
    ignores_row_scales: ClassVar[bool] = False
    """True when multiplying one row by a positive factor does not change the direction of the
    update (IMTL-G, Nash-MTL): per-task loss weights ([mtrl.balancers][]) cannot act through
    such a method."""
    host_solver: ClassVar[bool] = False
    """The method solves its small problem with numpy on the host (unless a ``solver`` option
    says otherwise)."""

    def __init__(self, **options: Any) -> None:
        self._options = resolve_options(f"surgery {self.name!r}", type(self).options_spec, options)
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(self._options["seed"])
        self._device_generator: torch.Generator | None = None
        self._device_generator_state: Tensor | None = None

    @property
    def options(self) -> dict[str, Any]:
        """Resolved options (a copy), e.g. for logging."""
        return dict(self._options)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self._options.items())
        return f"surgery.make({self.name!r}, {opts})"

    def __call__(self, grads: Tensor) -> Tensor:
        if not isinstance(grads, Tensor) or grads.dim() != 2:
            raise ValueError(f"grads must be a 2-D tensor [K, P], got {type(grads).__name__}")
        if not grads.is_floating_point():
            raise ValueError(f"grads must have a floating dtype, got {grads.dtype}")
        if grads.shape[0] < 1:
            raise ValueError("grads must have at least one row (K >= 1)")
        with torch.no_grad():
            out = self._aggregate(grads.detach())
        return out.to(dtype=grads.dtype)

    def _aggregate(self, grads: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    # ----------------------------------------------------------------- state
    def _method_state(self) -> dict[str, Any]:
        return {}

    def _load_method_state(self, state: dict[str, Any]) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        """Tensors / scalars / lists / dicts only (safe for ``torch.load(weights_only=True)``)."""
        state = {
            "method": self.name,
            "options": dict(self._options),
            "generator": self.generator.get_state().clone(),
            "state": self._method_state(),
        }
        if self._device_generator is not None:
            state["device_generator"] = self._device_generator.get_state().clone()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("method") != self.name:
            raise ValueError(f"state is for surgery {state.get('method')!r}, not {self.name!r}")
        # An option added after the state was saved has its default there.
        defaults = {key: opt.default for key, opt in type(self).options_spec.items()}
        saved = {**defaults, **state.get("options", {})}
        if saved != self._options:
            raise ValueError(
                f"state was saved with options {saved}, this object has "
                f"{self._options}; make the object with the same options before loading"
            )
        self.generator.set_state(state["generator"].to(torch.uint8).cpu())
        self._device_generator = None
        self._device_generator_state = state.get("device_generator")
        self._load_method_state(state.get("state", {}))

    # ------------------------------------------------------------- device
    def generator_for(self, device: torch.device) -> torch.Generator:
        """The generator of random draws on ``device``: ``self.generator`` on the CPU, else one
        generator on that device, seeded with ``seed`` when first used (or restored by
        ``load_state_dict``). Drawing on the device needs no host-to-device copy, so a call
        can be captured in a CUDA graph (register this generator with the graph)."""
        if device.type == "cpu":
            return self.generator
        if self._device_generator is None or self._device_generator.device != device:
            generator = torch.Generator(device)
            if self._device_generator_state is None:
                generator.manual_seed(self._options["seed"])
            else:
                generator.set_state(self._device_generator_state.to(torch.uint8).cpu())
            self._device_generator = generator
        return self._device_generator

    def _solves_on_host(self, device: torch.device) -> bool:
        """Whether this call solves with numpy on the host (``solver`` option, else the class)."""
        if "solver" not in type(self).options_spec:
            return self.host_solver
        solver = self._options["solver"]
        return solver == "exact" or (solver == "auto" and device.type == "cpu")

    def syncs(self, device: torch.device) -> bool:
        """Whether a call on gradients on ``device`` waits for that device (copies to the host).

        False means the call is only queued device work: no host sync, capturable in a CUDA
        graph."""
        return device.type != "cpu" and self._solves_on_host(device)

    # ------------------------------------------------------------ utilities
    def _random_keys(self, shape: tuple[int, ...], device: torch.device) -> Tensor:
        """Uniform float64 keys drawn on ``device``; sorting them gives random permutations."""
        return torch.rand(
            shape, generator=self.generator_for(device), dtype=torch.float64, device=device
        )

    def _random_orders(self, K: int, device: torch.device) -> Tensor:
        """[K, K-1] orders: row i is a uniformly random permutation of the other tasks."""
        keys = self._random_keys((K, K), device)
        keys.fill_diagonal_(2.0)  # task i itself sorts last and is cut off
        return keys.argsort(dim=1)[:, : K - 1]


GRAM_CHUNK = 32768
"""Columns per block of the CPU Gram product: a [K, 32768] float32 block stays in cache, which
measured up to 2x faster than one ``g @ g.T`` for K = 10 (and no slower for K = 50)."""


def gram(grads: Tensor) -> Tensor:
    """G = grads grads^T in the input precision (half types upcast to float32), as float64."""
    g = grads if grads.dtype in (torch.float32, torch.float64) else grads.float()
    if g.device.type == "cpu" and g.shape[1] > GRAM_CHUNK:
        G = g.new_zeros(g.shape[0], g.shape[0])
        for block in g.split(GRAM_CHUNK, dim=1):
            G.addmm_(block, block.T)
    else:
        G = g @ g.T
    return G.to(torch.float64)


def to_numpy64(G: Tensor) -> np.ndarray:
    """The one device-to-host transfer of a CPU-solved method (K x K float64)."""
    A = G.detach().to("cpu", torch.float64).numpy().copy()
    return 0.5 * (A + A.T)


def combine(weights: Tensor | np.ndarray, grads: Tensor) -> Tensor:
    """update = weights^T grads, weights moved to the device without a sync.

    Non-finite weights (never expected) become the mean's, so no NaN leaves the module."""
    if isinstance(weights, np.ndarray):
        weights = torch.from_numpy(np.ascontiguousarray(weights))
        weights = weights.to(grads.device, non_blocking=True)
    weights = torch.where(torch.isfinite(weights).all(), weights, 1.0 / grads.shape[0])
    g = grads if grads.dtype in (torch.float32, torch.float64) else grads.float()
    return weights.to(g.dtype) @ g


def dtype_eps(grads: Tensor) -> float:
    """Relative precision of the Gram matrix computed from ``grads``."""
    return float(torch.finfo(torch.float32 if grads.dtype != torch.float64 else grads.dtype).eps)
