"""The network models against their authors' code: the initial weight and bias statistics of every
layer kind match the authors' scheme (at the sizes of their MT10/MT50 runs), and an independent
forward pass, written here from the papers' equations one sample and one module at a time,
equals the model's output (with random parameters, so that no initial symmetry hides a
transposition or an ignored option). PaCo's forward reference is in test_models.py."""

import math

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mtrl.models import Dims, ModelSpec

TASKS, STATE, ACT = 10, 39, 4
HIDDEN = (400, 400, 400)
ACTOR, CRITIC = Dims(STATE, 0, 2 * ACT, TASKS), Dims(STATE, ACT, 1, TASKS)


# ------------------------------------------------------------------------------ statistics
def assert_uniform(values: Tensor, bound: float) -> None:
    """Drawn from U(-bound, bound): inside it, reaching near its ends, second moment b^2 / 3
    (five standard errors: Var(x^2) = 4 b^4 / 45)."""
    values = values.detach().double().flatten()
    n = values.numel()
    assert values.abs().max() <= bound * (1 + 1e-6)
    assert values.abs().max() >= bound * (1 - 20 / n)
    assert abs(values.mean()) <= 5 * bound / math.sqrt(3 * n)
    error = 5 * math.sqrt(4 / 45) * bound**2 / math.sqrt(n)
    assert abs((values**2).mean() - bound**2 / 3) <= error


def assert_normal(values: Tensor, std: float, truncated_at: float | None = None) -> None:
    """Mean 0 and standard deviation ``std`` (five standard errors; Var(x^2) <= 2 std^4), inside
    ``+-truncated_at`` if given, beyond 1.5 std somewhere if not (a normal, not a uniform)."""
    values = values.detach().double().flatten()
    n = values.numel()
    assert abs(values.mean()) <= 5 * std / math.sqrt(n)
    assert abs((values**2).mean() - std**2) <= 5 * math.sqrt(2) * std**2 / math.sqrt(n)
    if truncated_at is None:
        assert values.abs().max() > 2.5 * std
    else:
        assert values.abs().max() <= truncated_at * (1 + 1e-6)
        assert values.abs().max() > 0.9 * truncated_at


def assert_constant(values: Tensor, value: float) -> None:
    assert torch.equal(values.detach(), torch.full_like(values, value))


def xavier(weight: Tensor) -> float:
    """The Xavier-uniform bound of an [out, in] weight."""
    return math.sqrt(6 / (weight.shape[-1] + weight.shape[-2]))


def linear_layers(module: nn.Module) -> list[nn.Module]:
    """Every layer with a weight and a bias (nn.Linear and ParallelLinear)."""
    return [m for m in module.modules() if hasattr(m, "weight") and hasattr(m, "bias")]


def build(name: str, dims: Dims, tasks: int = TASKS, hidden=HIDDEN, **options) -> nn.Module:
    torch.manual_seed(0)
    return ModelSpec(name, options, hidden).build(Dims(dims.state, dims.action, dims.out, tasks))


@pytest.mark.parametrize("dims", [ACTOR, CRITIC], ids=["actor", "critic"])
def test_care_initialises_like_the_authors_weight_init(dims):
    """facebookresearch/mtrl: ``weight_init`` on actor, critic and task encoder (Xavier-uniform
    weights, each expert on its own, zero biases); ``nn.Embedding``'s N(0, 1) task rows."""
    net = build("care", dims, tasks=50, num_experts=4, encoder_dim=50, context_dim=50)
    layers = linear_layers(net)
    assert len(layers) == 3 + 3 + 2 + 4  # context MLP, attention MLP, experts, trunk
    for layer in layers:
        for weight in layer.weight.reshape(-1, *layer.weight.shape[-2:]):  # each expert
            assert_uniform(weight, xavier(weight))
        assert_constant(layer.bias, 0.0)
    assert_normal(net.embedding.table, 1.0)
    experts = net.encoder_in.weight
    assert not torch.equal(experts[0], experts[1])
    embeddings = torch.randn(TASKS, 768)
    with_file = ModelSpec("care", {}, HIDDEN, task_embeddings=embeddings).build(dims)
    for layer in with_file.embedding.projection:
        if isinstance(layer, nn.Linear):
            assert_uniform(layer.weight, xavier(layer.weight))
            assert_constant(layer.bias, 0.0)


@pytest.mark.parametrize("dims", [ACTOR, CRITIC], ids=["actor", "critic"])
def test_moore_initialises_like_the_authors_networks(dims):
    """AhmedMagdyHendawy/MOORE ``networks_sac.py``: experts at nn.Linear's default (their
    ParallelLayer resets the Xavier init), Xavier task weights, Xavier heads with default
    biases."""
    net = build("moore", dims, tasks=50, num_experts=4)
    for layer in net.experts:
        for weight, bias in zip(layer.weight, layer.bias, strict=True):
            bound = 1 / math.sqrt(weight.shape[1])
            assert_uniform(weight, bound)
            assert_uniform(bias, bound) if bias.numel() >= 100 else None
        assert not torch.equal(layer.weight[0], layer.weight[1])
    assert_uniform(net.task_weights.table, math.sqrt(6 / (50 + 4)))
    heads = net.heads.linear.weight.view(50, dims.out, -1)
    assert_uniform(heads, xavier(heads[0]))
    assert_uniform(net.heads.linear.bias, 1 / math.sqrt(HIDDEN[-1]))


@pytest.mark.parametrize("dims", [ACTOR, CRITIC], ids=["actor", "critic"])
def test_soft_modularization_initialises_like_the_authors_init_py(dims):
    """RchalYang/Soft-Module ``basic_init`` (U(+-1/sqrt(size[0])) = 1/sqrt(out_features), bias 0.1)
    and ``uniform_init`` (weights and biases U(+-3e-3)) on the output and routing output layers;
    the task embedding with its bias of 0.1 folded in. MT50 sizes: 4 layers of 4 modules."""
    net = build(
        "soft_modularization", dims, tasks=50, hidden=(400, 400), num_layers=4, num_modules=4
    )
    uniform = [net.route_first, *net.route_middle, net.route_last, net.head]
    basic = [layer for layer in linear_layers(net) if all(layer is not u for u in uniform)]
    assert len(basic) == 2 + 2 + 3 + 4  # observation MLP, routing trunk, W_u, module layers
    for layer in basic:
        for weight in layer.weight.reshape(-1, *layer.weight.shape[-2:]):  # each module
            assert_uniform(weight, 1 / math.sqrt(weight.shape[0]))
        assert_constant(layer.bias, 0.1)
    for layer in uniform:
        assert_uniform(layer.weight, 3e-3)
        assert layer.bias.abs().max() <= 3e-3 and layer.bias.unique().numel() == layer.bias.numel()
    assert_uniform(net.task_embedding.table - 0.1, 1 / math.sqrt(HIDDEN[-1]))


@pytest.mark.parametrize("identical", [True, False])
def test_paco_initialises_like_the_authors_alf_layers(identical):
    """TToTMooN/alf (PaCo_ALF) ``CompositionalFC`` in the MT10 configuration: actor hidden layers
    Xavier, actor output truncated normal of std 0.3/sqrt(fan_in), critic hidden layers
    U(+-1/sqrt(fan_in)), critic output U(+-3e-3), zero biases, the S sets identical (one draw
    copied) or drawn on their own; N(0, 1) compositional vectors. MT50 sizes: S = 20."""
    actor = build("paco", ACTOR, tasks=50, num_param_sets=20, identical_init=identical)
    critic = build("paco", CRITIC, tasks=50, num_param_sets=20, identical_init=identical)
    std = 0.3 / math.sqrt(HIDDEN[-1])
    schemes = {
        actor: (
            lambda w: assert_uniform(w, xavier(w[0])),
            lambda w: assert_normal(w, std, truncated_at=2 * std / 0.87962566),
        ),
        critic: (
            lambda w: assert_uniform(w, 1 / math.sqrt(w.shape[-1])),
            lambda w: assert_uniform(w, 3e-3),
        ),
    }
    for net, (hidden, output) in schemes.items():
        for i, layer in enumerate(net.layers):
            sets = layer.weight
            assert torch.equal(sets, sets[:1].expand_as(sets)) == identical
            draws = sets[:1] if identical else sets  # identical sets are one draw
            (output if i == len(net.layers) - 1 else hidden)(draws)
            assert_constant(layer.bias, 0.0)
        assert_normal(net.compositions.table, 1.0)


# ------------------------------------------------------------------- independent forwards
def randomised(net: nn.Module) -> nn.Module:
    """Every parameter N(0, 0.5^2) (routing far from uniform, experts far from each other), in
    float64 (so that the references agree to rounding)."""
    net = net.double()
    with torch.no_grad():
        for param in net.parameters():
            param.normal_(0.0, 0.5)
    return net


def mlp(layers: list[nn.Linear], x: Tensor) -> Tensor:
    """ReLU between the layers, none after the last."""
    for i, layer in enumerate(layers):
        x = layer.weight @ (F.relu(x) if i else x) + layer.bias
    return x


def softmax(logits: Tensor) -> Tensor:
    weights = (logits - logits.max()).exp()
    return weights / weights.sum()


def sequential_layers(module: nn.Sequential) -> list[nn.Linear]:
    """The linear layers of an ``mlp_with_head`` in order: the hidden ones, then the head."""
    hidden, head = module
    return [*hidden.layers, head]


def inputs(dims: Dims, samples: int = 3):
    gen = torch.Generator().manual_seed(1)
    state = torch.randn(TASKS, samples, STATE, generator=gen, dtype=torch.float64)
    action = torch.randn(TASKS, samples, ACT, generator=gen, dtype=torch.float64)
    onehot = torch.eye(TASKS, dtype=torch.float64)[:, None, :].expand(TASKS, samples, TASKS)
    return state, onehot, action if dims.action else None


@pytest.mark.parametrize("fixed", [False, True], ids=["learned", "file"])
@pytest.mark.parametrize("dims", [ACTOR, CRITIC], ids=["actor", "critic"])
def test_care_forward_is_the_papers_mixture_of_encoders(dims, fixed):
    """e_tau a learned row, or the fixed vector v_tau projected by two ReLU layers
    (ReLU(W_2 ReLU(W_1 ReLU(v_tau) + b_1) + b_2)); z = g(ReLU(e_tau)); alpha = softmax(h(z) / T);
    encoding = sum_k alpha_k E_k(s); output = trunk([encoding, z(, a)])."""
    temperature = 0.3
    vectors = torch.randn(TASKS, 12, generator=torch.Generator().manual_seed(2)) if fixed else None
    spec = ModelSpec("care", {"temperature": temperature}, (32, 32), task_embeddings=vectors)
    net = randomised(spec.build(dims))
    state, onehot, action = inputs(dims)
    out = net(state, onehot, action)
    for task in range(TASKS):
        if fixed:
            first, _, second = net.embedding.projection
            v = F.relu(net.embedding.vectors[task].double())
            embedding = F.relu(second.weight @ F.relu(first.weight @ v + first.bias) + second.bias)
        else:
            embedding = net.embedding.table[task]
        for i in range(state.shape[1]):
            z = mlp(sequential_layers(net.context), F.relu(embedding))
            logits = mlp(sequential_layers(net.attention), z) / temperature
            alpha = softmax(logits)
            encoding = sum(
                alpha[k]
                * (
                    net.encoder_out.weight[k]
                    @ F.relu(net.encoder_in.weight[k] @ state[task, i] + net.encoder_in.bias[k])
                    + net.encoder_out.bias[k]
                )
                for k in range(len(alpha))
            )
            parts = [encoding, z] if action is None else [encoding, z, action[task, i]]
            expected = mlp(sequential_layers(net.trunk), torch.cat(parts))
            torch.testing.assert_close(out[task, i], expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dims", [ACTOR, CRITIC], ids=["actor", "critic"])
def test_moore_forward_is_the_papers_orthogonal_mixture(dims):
    """h_k = expert_k(s(, a)); u = Gram-Schmidt(h_1..h_k) (the authors' classical form);
    output = head_tau(tanh(sum_k c_tau,k u_k))."""
    net = randomised(ModelSpec("moore", {"num_experts": 3}, (32, 28)).build(dims))
    state, onehot, action = inputs(dims)
    out = net(state, onehot, action)
    for task in range(TASKS):
        for i in range(state.shape[1]):
            x = state[task, i] if action is None else torch.cat([state[task, i], action[task, i]])
            h = []
            for k in range(3):
                y = x
                for j, layer in enumerate(net.experts):
                    y = layer.weight[k] @ (F.relu(y) if j else y) + layer.bias[k]
                h.append(y)
            basis = []
            for v in h:
                w = v - sum((v @ u) * u for u in basis) if basis else v
                basis.append(w / w.norm())
            features = torch.tanh(
                sum(c * u for c, u in zip(net.task_weights.table[task], basis, strict=True))
            )
            weight = net.heads.linear.weight.view(TASKS, dims.out, -1)[task]
            bias = net.heads.linear.bias.view(TASKS, dims.out)[task]
            torch.testing.assert_close(
                out[task, i], weight @ features + bias, rtol=1e-10, atol=1e-10
            )


@pytest.mark.parametrize("dims", [ACTOR, CRITIC], ids=["actor", "critic"])
def test_soft_modularization_forward_is_the_papers_routing(dims):
    """Yang et al. Eq. 3-6 as in the authors' ModularGatedCascadeCondNet: module i of layer l+1
    reads ReLU(sum_j p^l_ij out^l_j), p^l_ij = softmax over the source modules j; the routing
    of layer l is conditioned on p^1..p^{l-1}; four layers, so two middle ones."""
    n, L = 3, 4
    options = {"num_layers": L, "num_modules": n, "module_hidden": 8, "routing_hidden": 16}
    net = randomised(ModelSpec("soft_modularization", options, (32, 28, 24)).build(dims))
    state, onehot, action = inputs(dims)
    out = net(state, onehot, action)
    widths = [(32, STATE + dims.action), (28, 32), (24, 28)]  # f: hidden_dims, the last linear
    assert [tuple(layer.weight.shape) for layer in sequential_layers(net.observation)] == widths

    def probabilities(logits: Tensor) -> Tensor:  # row i: a softmax over the sources j
        table = logits.reshape(n, n)
        return torch.stack([softmax(table[i]) for i in range(n)])

    for task in range(TASKS):
        for s in range(state.shape[1]):
            x = state[task, s] if action is None else torch.cat([state[task, s], action[task, s]])
            f = mlp(sequential_layers(net.observation), x)
            e = mlp(
                sequential_layers(net.routing_trunk), F.relu(net.task_embedding.table[task] * f)
            )
            p = [probabilities(net.route_first.weight @ F.relu(e) + net.route_first.bias)]
            for layer in range(1, L - 1):  # W_u^l conditions on all earlier p, W_d^l routes
                condition, route = net.route_conditions[layer - 1], net.route_middle[layer - 1]
                flat = torch.cat([q.flatten() for q in p])
                gate = F.relu((condition.weight @ flat + condition.bias) * e)
                p.append(probabilities(route.weight @ gate + route.bias))
            last_condition = net.route_conditions[L - 2]
            flat = torch.cat([q.flatten() for q in p])
            gate = F.relu((last_condition.weight @ flat + last_condition.bias) * e)
            logits = net.route_last.weight @ gate + net.route_last.bias
            q = softmax(logits)
            first = net.first_layer
            outputs = [first.weight[j] @ F.relu(f) + first.bias[j] for j in range(n)]
            for layer, probs in zip(net.module_layers, p, strict=True):
                outputs = [
                    layer.weight[i] @ F.relu(sum(probs[i, j] * outputs[j] for j in range(n)))
                    + layer.bias[i]
                    for i in range(n)
                ]
            final = F.relu(sum(q[j] * outputs[j] for j in range(n)))
            expected = net.head.weight @ final + net.head.bias
            torch.testing.assert_close(out[task, s], expected, rtol=1e-10, atol=1e-10)
