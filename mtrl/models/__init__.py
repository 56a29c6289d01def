"""Network architectures for the actor and the two Q networks, chosen with ``agent.model``.

Examples:
    >>> from mtrl import models
    >>> spec = models.ModelSpec("care", {"num_experts": 6}, hidden_dims=(400, 400, 400))
    >>> net = spec.build(models.Dims(state=39, action=0, out=8, tasks=10))
    >>> out = net(state, task_onehot)                    # [..., 39], [..., 10] -> [..., 8]

One file per architecture; each module's docstring gives its paper, the reference code it follows
and where it deviates. Parameters that only one task's samples touch live in
[PerTaskModule][mtrl.models.PerTaskModule] instances
([task_specific_parameters][mtrl.models.task_specific_parameters] lists them): gradient surgery
combines only the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import Tensor

from mtrl.surgery._base import resolve_options

from ._base import Dims, Model, PerTaskModule, task_specific_parameters
from .care import CAREModel, load_task_embeddings
from .mlp import MLPModel
from .moore import MOOREModel
from .multihead import MultiHeadModel
from .paco import PaCoModel
from .soft_modularization import SoftModularizationModel

if TYPE_CHECKING:
    from mtrl.config import AgentConfig

__all__ = [
    "TAKES_TASK_EMBEDDINGS",
    "TAKES_TASK_INPUT",
    "Dims",
    "Model",
    "ModelSpec",
    "PerTaskModule",
    "available",
    "check",
    "load_task_embeddings",
    "options_of",
    "task_specific_parameters",
    "validate",
]

MODELS: dict[str, type[Model]] = {
    cls.name: cls
    for cls in (
        MLPModel,
        MultiHeadModel,
        SoftModularizationModel,
        CAREModel,
        MOOREModel,
        PaCoModel,
    )
}
TAKES_TASK_EMBEDDINGS = ("care",)
"""Models that read fixed task embeddings (``agent.task_embeddings``)."""
TAKES_TASK_INPUT = ("mlp", "multihead")
"""Models that append the task one-hot to their input unless told not to (``agent.task_input``);
the others take the task through their task-specific parts only."""


def available() -> list[str]:
    """The names ``agent.model`` accepts, in the order of the documentation."""
    return list(MODELS)


def _model_class(name: str) -> type[Model]:
    if name not in MODELS:
        raise ValueError(f"unknown model '{name}'; allowed: {', '.join(MODELS)}")
    return MODELS[name]


def options_of(name: str) -> dict[str, Any]:
    """The options of model ``name`` with their defaults."""
    return {key: opt.default for key, opt in _model_class(name).options_spec.items()}


def check(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options of model ``name`` checked and completed with their defaults; ``ValueError``
    (one line, saying what is allowed) on an unknown model, option or value."""
    spec = _model_class(name).options_spec
    if not spec and options:
        raise ValueError(f"model '{name}' takes no options, got {sorted(options)}")
    return resolve_options(f"model '{name}'", spec, dict(options))


def validate(agent: AgentConfig, task_names: Sequence[str]) -> None:
    """The ``agent`` section's model: it exists and takes its options, and a task embeddings file
    is read by the model and has a vector of one length for every task of the run; ``ValueError``
    (one line) otherwise."""
    if agent.model not in MODELS:
        raise ValueError(
            f"unknown model '{agent.model}' (agent.model); allowed: {', '.join(available())}"
        )
    try:
        check(agent.model, agent.model_options)
    except ValueError as exc:
        raise ValueError(f"agent.model_options: {exc}") from None
    if agent.task_embeddings is None:
        return
    if agent.model not in TAKES_TASK_EMBEDDINGS:
        raise ValueError(
            f"agent.task_embeddings is set but agent.model={agent.model} does not read it "
            f"(only {', '.join(TAKES_TASK_EMBEDDINGS)} does)"
        )
    load_task_embeddings(agent.task_embeddings, task_names)


@dataclass(frozen=True, eq=False)
class ModelSpec:
    """What the actor and the Q networks build their networks from: ``agent.model``,
    ``agent.model_options``, ``agent.hidden_dims``, the fixed task embeddings (CARE's
    context, from ``agent.task_embeddings``, or ``None``) and ``agent.task_input``."""

    name: str = "mlp"
    options: Mapping[str, Any] = field(default_factory=dict)
    hidden_dims: tuple[int, ...] = (400, 400, 400)
    task_embeddings: Tensor | None = None
    task_input: bool = True

    def build(self, dims: Dims) -> Model:
        options = check(self.name, self.options)
        if self.task_embeddings is not None:
            if self.name not in TAKES_TASK_EMBEDDINGS:
                raise ValueError(f"model '{self.name}' takes no task embeddings")
            options["task_embeddings"] = self.task_embeddings
        if self.name in TAKES_TASK_INPUT:
            options["task_input"] = self.task_input
        return _model_class(self.name)(dims, list(self.hidden_dims), **options)
