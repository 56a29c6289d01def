"""Base class of the loss balancers: options, the weights/update contract, state."""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
from torch import Tensor

from mtrl.surgery._base import Option, resolve_options


class Balancer:
    """Per-task loss weights for one multi-task objective, adapted as training goes.

    One optimisation step, with ``losses`` the ``[K]`` per-task losses (positive values):

    1. ``w = balancer.weights(losses)``: this step's weights ``[K]`` (detached, non-negative). The
       balanced objective is ``(w * losses).mean()``: ``w = 1`` is the plain mean, so weights read
       as "times the equal share" whatever the method's own normalisation (each method's docstring
       gives the conversion).
    2. The caller steps its model on that objective, or scales row ``i`` of the per-task
       gradients by ``w[i]`` before combining them (gradient surgery).
    3. ``balancer.update(losses, **observed)`` adapts the weights for the next step from what the
       method observes besides the losses, named in ``needs``: ``losses_after``, the K losses on
       the same batch after the model step (FAMO), or ``grad_norms``, the norms of each task's
       unweighted loss gradient at a layer the caller chooses (GradNorm).

    The learned vector (``self.param``, ``[K]`` on ``device``) has an Adam optimizer of its own.
    Subclasses set ``name``, ``options_spec``, ``needs`` and ``initial_value`` and implement
    ``weights`` and ``_step``. Nothing here reads a tensor back to the host.
    """

    name: ClassVar[str] = ""
    options_spec: ClassVar[dict[str, Option]] = {}
    needs: ClassVar[frozenset[str]] = frozenset()
    initial_value: ClassVar[float] = 0.0

    def __init__(self, num_tasks: int, device: torch.device | str = "cpu", **options: Any) -> None:
        if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
            raise ValueError(f"num_tasks must be an integer >= 1, got {num_tasks!r}")
        self.num_tasks = num_tasks
        self._options = resolve_options(f"balancer {self.name!r}", self.options_spec, options)
        self.param = torch.full((num_tasks,), self.initial_value, device=device)
        self.optimizer = torch.optim.Adam([self.param], **self._adam_options())

    def _adam_options(self) -> dict[str, float]:
        return {"lr": self._options["lr"]}

    @property
    def options(self) -> dict[str, Any]:
        """Resolved options (a copy), e.g. for logging."""
        return dict(self._options)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self._options.items())
        return f"balancers.make({self.name!r}, num_tasks={self.num_tasks}, {opts})"

    def weights(self, losses: Tensor) -> Tensor:  # pragma: no cover - abstract
        """This step's weights ``[K]`` (a new tensor: later updates do not change it)."""
        raise NotImplementedError

    def update(
        self,
        losses: Tensor,
        *,
        grad_norms: Tensor | None = None,
        losses_after: Tensor | None = None,
    ) -> None:
        """Adapt the weights after the model step that used ``weights(losses)``."""
        given = {"grad_norms": grad_norms, "losses_after": losses_after}
        missing = sorted(key for key in self.needs if given[key] is None)
        if missing:
            raise ValueError(f"balancer {self.name!r} needs {', '.join(missing)} in update()")
        with torch.no_grad():
            self._step(losses.detach(), **{key: given[key].detach() for key in self.needs})

    def _step(self, losses: Tensor, **observed: Tensor) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _descend(self, grad: Tensor) -> None:
        """One Adam step of the learned vector along ``grad``."""
        self.param.grad = grad.to(self.param.dtype)
        self.optimizer.step()
        self.param.grad = None

    # ----------------------------------------------------------------- state
    def _method_state(self) -> dict[str, Any]:
        return {}

    def _load_method_state(self, state: dict[str, Any]) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        """A copy of the state: tensors and plain data only (``torch.load(weights_only=True)``)."""
        return {
            "method": self.name,
            "options": dict(self._options),
            "num_tasks": self.num_tasks,
            "param": self.param.detach().cpu().clone(),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "state": self._method_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = (state.get("method"), dict(state.get("options", {})), state.get("num_tasks"))
        if saved != (self.name, self._options, self.num_tasks):
            raise ValueError(
                f"state is for balancer {saved[0]!r} with options {saved[1]} and "
                f"{saved[2]} tasks; this object is {self.name!r} with {self._options} and "
                f"{self.num_tasks} tasks"
            )
        self.param.copy_(state["param"])
        self.optimizer.load_state_dict(state["optimizer"])
        self._load_method_state(state.get("state", {}))
