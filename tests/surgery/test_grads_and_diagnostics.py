import math

import pytest
import torch
from torch import nn

import mtrl.surgery as surgery


def make_critic(obs=7, act=2, hidden=16, heads=1):
    return nn.Sequential(
        nn.Linear(obs + act, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, heads),
    )


def loss_of(module):
    def loss_fn(params, tb):
        x = torch.cat([tb["obs"], tb["act"]], dim=-1)
        q = torch.func.functional_call(module, params, (x,)).squeeze(-1)
        return ((q - tb["target"]) ** 2).mean()

    return loss_fn


def batch(K=4, n=8, obs=7, act=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {
        "obs": torch.randn(K, n, obs, generator=gen),
        "act": torch.randn(K, n, act, generator=gen),
        "target": torch.randn(K, n, generator=gen),
    }


def test_per_task_grads_match_loop():
    torch.manual_seed(0)
    net = make_critic()
    params = dict(net.named_parameters())
    b = batch()
    grads, losses = surgery.per_task_grads(loss_of(net), params, b)
    K = b["obs"].shape[0]
    P = sum(p.numel() for p in params.values())
    assert grads.shape == (K, P) and losses.shape == (K,) and not losses.requires_grad
    for k in range(K):
        tb = {key: v[k] for key, v in b.items()}
        loss = loss_of(net)(params, tb)
        ref = torch.autograd.grad(loss, list(params.values()))
        torch.testing.assert_close(grads[k], torch.cat([r.reshape(-1) for r in ref]))
        torch.testing.assert_close(losses[k], loss.detach())


def test_per_task_grads_subset_and_other_modules_constant():
    """Gradients for the given parameters only (the head), each task's equal to its own loss's
    gradient; the other module's parameters are constants and get no gradient."""
    torch.manual_seed(0)
    net, other = make_critic(), make_critic()
    params = {k: v for k, v in net.named_parameters() if k.startswith("4.")}  # head only

    def loss_fn(p, tb):
        full = {**dict(net.named_parameters()), **p}
        return loss_of(net)(full, tb) + loss_of(other)(dict(other.named_parameters()), tb)

    b = batch()
    grads, _ = surgery.per_task_grads(loss_fn, params, b)
    assert grads.shape == (4, 17)
    for k in range(4):
        loss = loss_fn(params, {key: v[k] for key, v in b.items()})
        expected = torch.autograd.grad(loss, list(params.values()))
        torch.testing.assert_close(grads[k], torch.cat([g.reshape(-1) for g in expected]))
    assert (grads.abs().amax(dim=1) > 0).all()  # not zeros
    assert all(p.grad is None for p in other.parameters())


def test_per_task_grads_random_inside_loss():
    """Random ops inside the loss draw independently for every task (vmap's 'different'): with
    the loss w . (x + noise) the gradient is x + noise, so the K rows minus x are K independent
    standard-normal draws, although every task has the same x."""
    P, K = 2000, 4
    x = torch.randn(P)
    params = {"w": torch.zeros(P, requires_grad=True)}

    def loss_fn(p, tb):
        return p["w"] @ (tb + torch.randn_like(tb))

    grads, _ = surgery.per_task_grads(loss_fn, params, x.expand(K, P))
    noise = grads - x
    assert abs(noise.mean()) < 5 / math.sqrt(K * P)
    assert abs(noise.pow(2).mean() - 1) < 5 * math.sqrt(2 / (K * P))
    correlation = torch.corrcoef(noise)
    off_diagonal = correlation[~torch.eye(K, dtype=torch.bool)]
    assert off_diagonal.abs().max() < 5 / math.sqrt(P)  # independent across tasks


def test_assign_grads():
    net = make_critic()
    params = dict(net.named_parameters())
    P = sum(p.numel() for p in params.values())
    update = torch.arange(P, dtype=torch.float32)
    surgery.assign_grads(params, update)
    flat = torch.cat([p.grad.reshape(-1) for p in params.values()])
    assert torch.equal(flat, update)
    surgery.assign_grads(params, 2 * update)  # existing .grad is overwritten in place
    assert torch.equal(torch.cat([p.grad.reshape(-1) for p in params.values()]), 2 * update)
    with pytest.raises(ValueError):
        surgery.assign_grads(params, update[:-1])


def test_diagnostics_values():
    g = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])
    d = surgery.gram_diagnostics(g, update=torch.tensor([0.0, 4.0 / 3.0]))
    assert all(v.dim() == 0 for k, v in d.items() if k != "norms" and not k.startswith("pair_"))
    torch.testing.assert_close(d["norms"], torch.tensor([1.0, 2.0, 1.0]))
    torch.testing.assert_close(d["cos"], torch.tensor(-1.0 / 3))
    torch.testing.assert_close(d["cos_min"], torch.tensor(-1.0))
    torch.testing.assert_close(d["conflict"], torch.tensor(1.0 / 3))
    gms = [2 * 2 / 5, 1.0, 2 * 2 / 5]
    torch.testing.assert_close(d["gms"], torch.tensor(sum(gms) / 3))
    torch.testing.assert_close(d["gms_min"], torch.tensor(0.8))
    torch.testing.assert_close(d["update_norm_ratio"], torch.tensor(2.0))


def test_diagnostics_k1_and_zero_rows():
    d = surgery.gram_diagnostics(torch.zeros(1, 3), update=torch.zeros(3))
    assert d["cos"] == 1 and d["conflict"] == 0 and d["gms_min"] == 1
    assert d["update_norm_ratio"] == 0
    d = surgery.gram_diagnostics(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]]))
    assert all(torch.isfinite(v).all() for v in d.values())
    assert math.isclose(d["gms_min"].item(), 0.0)
