"""Gradient surgery: turn K per-task gradients ``[K, P]`` into one update ``[P]``.

Examples:
    >>> import mtrl.surgery as surgery
    >>> s = surgery.make("pcgrad", seed=0)
    >>> update = s(grads)                      # grads [K, P] -> [P], same device and dtype

The documentation's "Gradient surgery" page (``docs/surgery.md``) gives every method's scale
convention and deviations from its paper.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._base import Surgery
from ._extras import (
    TORCHJD_PREFIX,
    TorchJD,
    assign_grads,
    gram_diagnostics,
    per_task_grads,
    step_curvature,
    torchjd_options,
)
from ._solvers import SolverWarning
from .methods import METHODS

__all__ = [
    "SolverWarning",
    "Surgery",
    "assign_grads",
    "available",
    "gram_diagnostics",
    "make",
    "options_of",
    "per_task_grads",
    "step_curvature",
    "validate",
]


def available() -> list[str]:
    """Sorted names accepted by [make][mtrl.surgery.make] (plus ``'torchjd:<AggregatorName>'``)."""
    return sorted(METHODS)


def _unknown(name: Any) -> ValueError:
    return ValueError(
        f"unknown surgery {name!r}; allowed: {available()} or 'torchjd:<AggregatorName>'"
    )


def options_of(name: str) -> dict[str, Any]:
    """Allowed option names of ``name`` with their defaults."""
    if isinstance(name, str) and name.startswith(TORCHJD_PREFIX):
        return torchjd_options(name[len(TORCHJD_PREFIX) :])
    if name not in METHODS:
        raise _unknown(name)
    return {k: v.default for k, v in METHODS[name].options_spec.items()}


def make(name: str, **options: Any) -> Surgery:
    """A surgery object; ``ValueError`` on an unknown name, option or option value."""
    if isinstance(name, str) and name.startswith(TORCHJD_PREFIX):
        return TorchJD(name[len(TORCHJD_PREFIX) :], **options)
    if name not in METHODS:
        raise _unknown(name)
    return METHODS[name](**options)


def validate(name: str, options: Mapping[str, Any]) -> None:
    """The ``surgery`` section's method and options, checked before a run starts by building the
    method once; ``ValueError`` (one line) otherwise. ``none`` takes no options."""
    if name == "none":
        if options:
            raise ValueError("surgery.options are set but surgery.name is none")
        return
    if name not in METHODS and not name.startswith(TORCHJD_PREFIX):
        raise ValueError(
            f"unknown surgery '{name}'; allowed: none, {', '.join(available())}, "
            "or torchjd:<AggregatorName>"
        )
    try:
        make(name, **options)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"surgery '{name}': {exc}") from None
