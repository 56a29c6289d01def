import io

import pytest
import torch

import mtrl.surgery as surgery

ALL = surgery.available()


def test_available_sorted_and_complete():
    expected = {"alignedmtl", "cagrad", "cagrad_fast", "graddrop", "gradops", "gradvac"}
    expected |= {"imtlg", "mean", "mgda", "nashmtl", "pcgrad", "sum", "upgrad"}
    expected |= {"pcgrad_direction", "pcgrad_magnitude"}
    assert sorted(expected) == ALL


def test_unknown_name_lists_allowed():
    with pytest.raises(ValueError, match="pcgrad"):
        surgery.make("nope")
    with pytest.raises(ValueError, match="pcgrad"):
        surgery.options_of("nope")


def test_unknown_option_lists_allowed_with_defaults():
    with pytest.raises(ValueError, match=r"c=0\.5"):
        surgery.make("cagrad", cc=1)


@pytest.mark.parametrize(
    ("name", "opts"),
    [
        ("cagrad", {"c": -1}),
        ("cagrad", {"c": float("nan")}),
        ("cagrad_fast", {"k": 0}),
        ("cagrad_fast", {"k": 1.5}),
        ("gradvac", {"beta": 2.0}),
        ("alignedmtl", {"scale": "max"}),
        ("pcgrad", {"seed": -1}),
        ("pcgrad", {"seed": True}),
        ("cagrad", {"rescale": 1}),
    ],
)
def test_bad_option_values(name, opts):
    with pytest.raises(ValueError, match="must"):
        surgery.make(name, **opts)


@pytest.mark.parametrize("name", ALL)
def test_options_and_seed_accepted(name):
    defaults = surgery.options_of(name)
    assert "seed" in defaults
    s = surgery.make(name, seed=3)
    assert s.options == {**defaults, "seed": 3}


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_shape_dtype_device(name, dtype):
    g = torch.randn(4, 9, generator=torch.Generator().manual_seed(0)).to(dtype)
    out = surgery.make(name)(g)
    assert out.shape == (9,) and out.dtype == dtype and out.device == g.device
    assert torch.isfinite(out.float()).all()


@pytest.mark.parametrize("name", ALL)
def test_state_dict_roundtrip_bitwise(name):
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(5, 30, generator=gen, dtype=torch.float64) for _ in range(6)]
    a = surgery.make(name, seed=7)
    for g in batches[:3]:
        a(g)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    b = surgery.make(name, seed=7)
    b.load_state_dict(state)
    for g in batches[3:]:
        assert torch.equal(a(g), b(g))


def test_load_state_checks_method_and_options():
    a = surgery.make("pcgrad")
    with pytest.raises(ValueError):
        surgery.make("gradvac").load_state_dict(a.state_dict())
    with pytest.raises(ValueError):
        surgery.make("pcgrad", seed=1).load_state_dict(a.state_dict())


@pytest.mark.parametrize("name", ["pcgrad", "graddrop", "cagrad_fast", "gradvac"])
def test_seeded_reproducible(name):
    g = torch.randn(6, 40, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    g[1] = -g[0] + 0.1 * g[1]
    opts = {"k": 3} if name == "cagrad_fast" else {}
    a, b = surgery.make(name, seed=5, **opts), surgery.make(name, seed=5, **opts)
    outs, outs2 = [a(g) for _ in range(4)], [b(g) for _ in range(4)]
    assert all(torch.equal(x, y) for x, y in zip(outs, outs2, strict=True))
    other = surgery.make(name, seed=6, **opts)
    assert not all(torch.equal(x, other(g)) for x in outs)


def test_fresh_random_order_every_call():
    g = torch.randn(8, 20, dtype=torch.float64)
    s = surgery.make("pcgrad")
    seen = set()
    for _ in range(5):
        s(g)
        orders = s.last_orders
        assert orders.shape == (8, 7)
        for i in range(8):  # row i: a permutation of the other tasks
            assert sorted(orders[i].tolist()) == [j for j in range(8) if j != i]
        seen.add(tuple(orders.flatten().tolist()))
    assert len(seen) == 5


def test_cagrad_fast_groups_cover_every_task_fresh():
    s = surgery.make("cagrad_fast", k=3)
    g = torch.randn(10, 20, dtype=torch.float64)
    seen = set()
    for _ in range(5):
        s(g)
        groups = s.last_groups
        assert len(groups) == 3 and sorted(i for p in groups for i in p) == list(range(10))
        assert {len(p) for p in groups} <= {3, 4}
        seen.add(tuple(map(tuple, groups)))
    assert len(seen) > 1


def test_bad_input():
    s = surgery.make("mean")
    with pytest.raises(ValueError):
        s(torch.zeros(3))
    with pytest.raises(ValueError):
        s(torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError):
        s(torch.zeros(0, 2))


def test_torchjd_wrapper():
    s = surgery.make("torchjd:Mean")
    g = torch.randn(3, 5)
    torch.testing.assert_close(s(g), g.mean(0))
    assert "seed" in surgery.options_of("torchjd:MGDA")
    assert surgery.options_of("torchjd:MGDA")["max_iters"] == 100
    with pytest.raises(ValueError, match="PCGrad"):
        surgery.make("torchjd:NoSuchThing")
    with pytest.raises(ValueError, match="allowed"):
        surgery.make("torchjd:MGDA", nope=1)


def test_torchjd_missing(monkeypatch):
    import builtins

    real = builtins.__import__

    def fake(name, *args, **kw):
        if name.startswith("torchjd"):
            raise ImportError("no torchjd")
        return real(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(ValueError, match="not installed"):
        surgery.make("torchjd:Mean")


RANDOMISED = {"pcgrad", "gradvac", "cagrad_fast", "graddrop"}
"""Methods that draw on the gradients' device: their random numbers differ between devices
(tests/test_cuda.py checks them with the draws they made)."""


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(set(ALL) - RANDOMISED))
def test_cuda_matches_cpu(name):
    """The exact solvers on CUDA tensors give the CPU's result (the device solvers: test_cuda)."""
    g = torch.randn(6, 1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    g[1] = -0.5 * g[0] + 0.1 * g[1]
    exact = {"solver": "exact"} if "solver" in surgery.options_of(name) else {}
    out_cpu = surgery.make(name, seed=1, **exact)(g)
    out_gpu = surgery.make(name, seed=1, **exact)(g.cuda())
    assert out_gpu.device.type == "cuda"
    torch.testing.assert_close(out_gpu.cpu(), out_cpu, rtol=1e-9, atol=1e-12)
