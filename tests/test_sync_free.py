"""The update path never asks for a tensor's value on the host (checked on the CPU).

On a CUDA device each of these calls would wait for the device: ``.item()``, ``.cpu()``,
``.numpy()``, ``.tolist()``, ``bool()``/``int()``/``float()`` of a tensor (data-dependent Python
branching), ``nonzero`` and boolean-mask indexing (data-dependent shapes), and the
``torch.linalg`` functions that check their result for errors. Here they raise inside
``MTSAC.update``; tests/test_cuda.py checks the same on a GPU with
``torch.cuda.set_sync_debug_mode("error")``.
"""

from contextlib import contextmanager

import numpy as np
import pytest
import torch
from helpers import ACT, STATE, K, N, make_batch

from mtrl.agent import MTSAC
from mtrl.config import AgentConfig, SurgeryConfig
from mtrl.replay import MultiTaskReplay

TENSOR_METHODS = ("item", "cpu", "numpy", "tolist", "nonzero", "__bool__", "__int__", "__float__")
TORCH_FUNCTIONS = ("nonzero", "argwhere", "masked_select", "unique")
LINALG_FUNCTIONS = ("solve", "inv", "cholesky", "eigh", "eigvalsh", "pinv", "lstsq", "svd", "det")
SYNC_FREE = ["none", "mean", "sum", "pcgrad", "gradvac", "graddrop"]
DEVICE_SOLVED = ["cagrad", "cagrad_fast", "mgda", "gradops", "upgrad"]


class HostSync(AssertionError):
    pass


class Guard:
    """Replacements for the host-syncing calls that raise while ``armed``."""

    def __init__(self) -> None:
        self.armed = True

    def forbid(self, name, original):
        def call(*args, **kwargs):
            if self.armed:
                raise HostSync(f"{name} would wait for the device")
            return original(*args, **kwargs)

        return call

    def no_bool_masks(self, original):
        def index(tensor, key, *rest):
            keys = key if isinstance(key, tuple) else (key,)
            masks = [k for k in keys if isinstance(k, torch.Tensor) and k.dtype == torch.bool]
            if self.armed and masks:
                raise HostSync("boolean-mask indexing has a data-dependent shape")
            return original(tensor, key, *rest)

        return index

    def unarmed(self, step):
        """``step`` run without the guard: torch's Adam reads its step count with ``.item()``
        unless it is ``capturable``, which it is on CUDA (checked in test_cuda.py); on the CPU
        that count is a host value anyway."""

        def call(*args, **kwargs):
            self.armed = False
            try:
                return step(*args, **kwargs)
            finally:
                self.armed = True

        return call


@contextmanager
def forbid_host_sync(monkeypatch, agent: MTSAC):
    guard = Guard()
    with monkeypatch.context() as patch:
        for owner, names in ((torch.Tensor, TENSOR_METHODS), (torch, TORCH_FUNCTIONS)):
            for name in names:
                patch.setattr(owner, name, guard.forbid(name, getattr(owner, name)))
        for name in LINALG_FUNCTIONS:
            original = getattr(torch.linalg, name)
            patch.setattr(torch.linalg, name, guard.forbid(f"linalg.{name}", original))
        for name in ("__getitem__", "__setitem__"):
            patch.setattr(torch.Tensor, name, guard.no_bool_masks(getattr(torch.Tensor, name)))
        for component in agent.components.values():
            optimizer = component.optimizer
            patch.setattr(optimizer, "step", guard.unarmed(optimizer.step))
        yield


def make_agent(method: str, **options) -> MTSAC:
    torch.manual_seed(0)
    config = AgentConfig(hidden_dims=[16, 16], batch_per_task=N, multi_head=True)
    surgery = SurgeryConfig(method, options=options, diagnostics_every=2)
    return MTSAC(STATE + K, ACT, K, config, seed=0, surgery=surgery)


@pytest.mark.parametrize(
    "method,options",
    [(m, {}) for m in SYNC_FREE] + [(m, {"solver": "device"}) for m in DEVICE_SOLVED],
)
def test_update_never_reads_a_tensor_on_the_host(monkeypatch, method, options):
    agent = make_agent(method, **options)
    for step in range(2):  # the second update also computes the Gram diagnostics
        with forbid_host_sync(monkeypatch, agent):
            metrics = agent.update(make_batch(seed=step))
    assert torch.isfinite(metrics["critic_loss"]).all()
    if method != "none":
        assert "diag/critic/cos" in metrics


@pytest.mark.parametrize("method", ["cagrad", "mgda"])
def test_the_guard_catches_the_exact_solvers(monkeypatch, method):
    """The guard is not vacuous: an exact solver copies the Gram matrix to the host."""
    agent = make_agent(method, solver="exact")
    with forbid_host_sync(monkeypatch, agent), pytest.raises(HostSync):
        agent.update(make_batch())


@pytest.mark.parametrize("method", ["cagrad", "mgda", "gradops", "upgrad"])
def test_device_solver_update_equals_the_exact_solver_update(method):
    exact, device = make_agent(method, solver="exact"), make_agent(method, solver="device")
    for step in range(3):
        batch = make_batch(seed=step)
        for key in ("critic_loss", "actor_loss"):
            torch.testing.assert_close(exact.update(batch)[key], device.update(batch)[key])
    for a, b in zip(exact.actor.parameters(), device.actor.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(exact.critic.parameters(), device.critic.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


PAPER = {
    "temperature": "shared",
    "task_input": False,
    "model": "multihead",
    "model_options": {"head_hidden": 8},
    "critic_reduction": "mean",
    "init": "xavier",
    "log_std_squash": True,
}
"""The settings the paper presets add to the agent."""


@pytest.mark.parametrize("method,options", [("pcgrad", {}), ("cagrad", {"solver": "device"})])
def test_uniform_draws_and_the_paper_settings_stay_on_the_device(monkeypatch, method, options):
    """A uniform batch (task counts drawn on the device, padding weighted 0) and an update with
    one temperature through surgery, hidden heads and no task input: no host read either."""
    torch.manual_seed(0)
    config = AgentConfig(hidden_dims=[16, 16], **PAPER)
    surgery = SurgeryConfig(method, options=options, diagnostics_every=2)
    agent = MTSAC(STATE + K, ACT, K, config, seed=0, surgery=surgery)
    replay = MultiTaskReplay(K, 16, STATE + K, ACT, seed=0)
    for step in range(20):
        batch = make_batch(seed=step)
        replay.add(
            *(t[:, 0].numpy() for t in (batch.obs, batch.action, batch.reward, batch.next_obs)),
            np.zeros(K),
            np.zeros(K),
        )
    for _ in range(2):
        with forbid_host_sync(monkeypatch, agent):
            metrics = agent.update(replay.sample_uniform(total=3 * N))
    assert all(torch.isfinite(value).all() for value in metrics.values())
    assert "diag/alpha/cos" in metrics
