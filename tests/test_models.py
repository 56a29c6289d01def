"""The network architectures (agent.model): shapes on any leading shape and inside vmap, each
paper's defining computation against an independent formulation, task-specific parameters that
get exactly their own task's gradient under surgery, and checkpoint round trips."""

import json

import pytest
import torch
from helpers import ACT, STATE, K, N, make_batch
from helpers import TINY_MODEL_OPTIONS as TINY
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch.func import vmap
from torch.nn import functional as F

from mtrl import checkpoint as ckpt
from mtrl import models
from mtrl.agent import MTSAC, ActorInputs, CriticInputs, last_shared_layers
from mtrl.config import AgentConfig, SurgeryConfig, changed_keys, load_config
from mtrl.models import Dims, ModelSpec, load_task_embeddings, task_specific_parameters
from mtrl.models.moore import gram_schmidt
from mtrl.networks import Actor, QNetwork
from mtrl.rundir import default_run_dir

EMBEDDINGS = torch.arange(K * 4, dtype=torch.float32).reshape(K, 4) / 10
"""Fixed task vectors for CARE's context (``care+file``: CARE with a task embeddings file)."""
VARIANTS = [*models.available(), "care+file", "multihead+hidden"]
"""Every model; CARE with fixed task embeddings; multihead with a hidden layer in each head
(facebookresearch/mtrl's multi-headed SAC)."""


def model_of(variant: str) -> tuple[str, dict]:
    """The model name and its (tiny) options of a test variant."""
    if variant == "multihead+hidden":
        return "multihead", {"head_hidden": 6}
    name = variant.removesuffix("+file")
    return name, TINY[name]


def spec(variant: str) -> ModelSpec:
    embeddings = EMBEDDINGS if variant.endswith("+file") else None
    return ModelSpec(*model_of(variant), hidden_dims=(16, 16), task_embeddings=embeddings)


def make_agent(variant: str, surgery: str = "none", seed: int = 0) -> MTSAC:
    torch.manual_seed(seed)
    name, options = model_of(variant)
    config = AgentConfig(hidden_dims=[16, 16], batch_per_task=N, model=name, model_options=options)
    embeddings = EMBEDDINGS if variant.endswith("+file") else None
    return MTSAC(
        STATE + K,
        ACT,
        K,
        config,
        seed=0,
        surgery=SurgeryConfig(surgery),
        task_embeddings=embeddings,
    )


def test_every_model_is_offered_and_documented():
    assert models.available() == [
        "mlp",
        "multihead",
        "soft_modularization",
        "care",
        "moore",
        "paco",
    ]
    for name in models.available():
        assert models.MODELS[name].__module__ == f"mtrl.models.{name}"  # one file per model
    defaults = {  # the papers' MT10 settings (see each model's docstring and preset)
        "mlp": {},
        "multihead": {"head_hidden": 0},
        "soft_modularization": {
            "num_layers": 2,
            "num_modules": 2,
            "module_hidden": 256,
            "routing_layers": 2,
            "routing_hidden": 256,
        },
        "care": {"num_experts": 4, "encoder_dim": 50, "context_dim": 50, "temperature": 1.0},
        "moore": {"num_experts": 4},
        "paco": {"num_param_sets": 5, "identical_init": True},
    }
    assert {name: models.options_of(name) for name in models.available()} == defaults


# ------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("variant", VARIANTS)
def test_actor_and_q_network_work_on_any_leading_shape_and_inside_vmap(variant):
    actor = Actor(STATE + K, ACT, K, spec(variant))
    q = QNetwork(STATE + K, ACT, K, spec(variant))
    batch = make_batch()
    obs, action = batch.obs, batch.action
    mean, log_std = actor.distribution(obs)
    assert mean.shape == log_std.shape == (K, N, ACT)
    assert q(obs, action).shape == (K, N)
    # one task's slice, a single observation, and the K slices inside vmap agree with the batch
    torch.testing.assert_close(actor.distribution(obs[1])[0], mean[1])
    torch.testing.assert_close(actor.distribution(obs[1, 2])[0], mean[1, 2])
    torch.testing.assert_close(vmap(actor.distribution)(obs)[0], mean)
    torch.testing.assert_close(vmap(q)(obs, action), q(obs, action))


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_task_one_hot_changes_the_output(variant):
    """With random parameters: the dependence on the task is the architecture's (some authors'
    schemes start it near 0, e.g. Soft Modularization's routing outputs at +-3e-3)."""
    torch.manual_seed(0)
    net = spec(variant).build(Dims(STATE, ACT, 3, K))
    with torch.no_grad():
        for param in net.parameters():
            param.normal_(0.0, 0.5)
    state, action = torch.randn(STATE).expand(K, STATE), torch.randn(ACT).expand(K, ACT)
    out = net(state, torch.eye(K), action)
    assert out.shape == (K, 3)
    assert (out[0] - out[1]).abs().max() > 1e-6 and (out[1] - out[2]).abs().max() > 1e-6


# ------------------------------------------------------------------------- the papers' maths
@settings(max_examples=40, deadline=None)
@given(
    experts=st.integers(1, 5),
    extra=st.integers(0, 4),
    seed=st.integers(0, 2**31 - 1),
)
def test_gram_schmidt_gives_the_orthonormal_basis_of_qr(experts, extra, seed):
    """MOORE's basis: orthonormal, spanning the experts' outputs in order, i.e. the Q factor of
    a QR decomposition up to the signs that make R's diagonal positive."""
    vectors = torch.randn(
        3, experts, experts + extra, generator=torch.Generator().manual_seed(seed)
    )
    vectors = vectors.double()
    q, r = torch.linalg.qr(vectors.transpose(-1, -2))
    diagonal = torch.diagonal(r, dim1=-2, dim2=-1)
    # Nearly dependent experts: see the next test. (The 1e-12 added under each norm's square
    # root changes a unit vector by 1e-12 / (2 |r|^2): below 1e-7 only where |r| > 2.3e-3.)
    assume(diagonal.abs().min() > 1e-2)
    basis = gram_schmidt(vectors)
    eye = torch.eye(experts, dtype=torch.float64).expand(3, -1, -1)
    torch.testing.assert_close(basis @ basis.transpose(-1, -2), eye)
    signs = torch.sign(diagonal)
    torch.testing.assert_close(basis, (q * signs.unsqueeze(-2)).transpose(-1, -2))


def test_gram_schmidt_of_dependent_vectors_stays_finite():
    vectors = torch.tensor([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]], requires_grad=True)
    basis = gram_schmidt(vectors)
    basis.sum().backward()
    assert torch.isfinite(basis).all() and torch.isfinite(vectors.grad).all()
    assert basis[1].abs().max() < 1e-3  # no direction left for the second expert


def test_paco_equals_an_mlp_with_the_task_composed_parameters():
    """Combining the S layer outputs is the same network as composing the S parameter sets with
    the task's vector w_tau (PaCo's theta_tau = Phi w_tau), layer by layer."""
    torch.manual_seed(0)
    net = ModelSpec("paco", {"num_param_sets": 3, "identical_init": False}, (16, 16)).build(
        Dims(STATE, ACT, 2, K)
    )
    for layer in net.layers:  # zero biases at init would leave them untested
        torch.nn.init.normal_(layer.bias)
    state, action = torch.randn(K, 5, STATE), torch.randn(K, 5, ACT)
    onehot = torch.eye(K)[:, None, :].expand(K, 5, K)
    out = net(state, onehot, action)
    for task in range(K):
        w = net.compositions.table[task]
        x = torch.cat([state[task], action[task]], -1)
        for i, layer in enumerate(net.layers):
            weight = torch.einsum("s,soi->oi", w, layer.weight)
            x = F.linear(F.relu(x) if i else x, weight, w @ layer.bias)
        torch.testing.assert_close(out[task], x)


def test_paco_parameter_sets_start_identical_by_default():
    net = ModelSpec("paco", {"num_param_sets": 4}, (8,)).build(Dims(STATE, 0, 2, K))
    for layer in net.layers:
        assert torch.equal(layer.weight, layer.weight[:1].expand_as(layer.weight))
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))


def test_soft_modularization_routes_with_probabilities_over_the_source_modules():
    net = spec("soft_modularization").build(Dims(STATE, 0, 2, K))
    routing = torch.randn(K, 7, 8)
    transitions, last = net._routing(routing)
    assert len(transitions) == TINY["soft_modularization"]["num_layers"] - 1
    for probs in transitions:
        assert probs.shape == (K, 7, 3, 3) and (probs > 0).all()
        torch.testing.assert_close(probs.sum(-1), torch.ones(K, 7, 3))
    assert last.shape == (K, 7, 3)
    torch.testing.assert_close(last.sum(-1), torch.ones(K, 7))


@pytest.mark.parametrize("variant", ["care", "care+file"])
def test_care_attention_trains_the_context(variant):
    """As in the authors' runs (their config's detach flag is misspelt and never read), the loss
    reaches the context through the attention weights: cut the context's direct path into the
    trunk and the task embeddings (or the projection of the fixed vectors) still get a gradient,
    that of the attention path alone (exactly 0 when the attention reads z detached)."""
    torch.manual_seed(0)
    net = spec(variant).build(Dims(STATE, ACT, 1, K))
    context_dim, encoder_dim = TINY["care"]["context_dim"], TINY["care"]["encoder_dim"]
    with torch.no_grad():
        for param in net.parameters():  # no ReLU of these tiny layers dead for every task
            param.normal_(0.0, 0.5)
        net.trunk[0].layers[0].weight[:, encoder_dim : encoder_dim + context_dim] = 0
    state, action = torch.randn(K, 5, STATE), torch.randn(K, 5, ACT)
    q = net(state, torch.eye(K)[:, None, :].expand(K, 5, K), action)
    critic_loss = (q - 1.0).pow(2).mean()
    first = net.embedding.table if variant == "care" else net.embedding.projection[0].weight
    (grad,) = torch.autograd.grad(critic_loss, first)
    assert grad.abs().max() > 1e-6


def test_care_fixed_embeddings_are_a_saved_buffer_not_a_parameter():
    net = spec("care+file").build(Dims(STATE, 0, 2, K))
    assert torch.equal(net.state_dict()["embedding.vectors"], EMBEDDINGS)
    assert not any("vectors" in name for name, _ in net.named_parameters())
    assert task_specific_parameters(net) == set()


# ------------------------------------------------------------------ task-specific parameters
def component_inputs(agent: MTSAC) -> dict[str, object]:
    batch = make_batch(seed=3)
    with torch.no_grad():
        alpha = agent.temperature(agent.task_onehot(batch.obs)).exp()
    return {
        "critic": CriticInputs(
            batch.obs, batch.action, agent.critic_target_values(batch), batch.drawn
        ),
        "actor": ActorInputs(batch.obs, torch.randn(K, N, ACT), alpha, batch.drawn),
    }


@pytest.mark.parametrize("variant", VARIANTS)
def test_task_specific_parameters_get_exactly_their_own_tasks_gradient(variant):
    """Reference: each task's loss alone, by plain autograd. A parameter block is task-specific
    when every task's gradient is zero outside the task's own block; exactly those must be
    declared, and under surgery each gets its own task's gradient / K, untouched by the others."""
    agent = make_agent(variant, surgery="pcgrad")
    for name, inputs in component_inputs(agent).items():
        component = agent.components[name]
        params = component.params
        declared = {n for n in params if n in task_specific_parameters(getattr(agent, name))}
        own = {n: torch.zeros(K, p.numel() // K) for n, p in params.items() if p.numel() % K == 0}
        partitioned = set(own)
        for k in range(K):
            loss = component.loss(params, type(inputs)(*(t[k] for t in inputs)))
            grads = dict(zip(params, torch.autograd.grad(loss, list(params.values())), strict=True))
            for n in own:
                rows = grads[n].reshape(K, -1)
                if (rows[torch.arange(K) != k] != 0).any():
                    partitioned.discard(n)
                own[n][k] = rows[k] / K
        assert partitioned == declared, name
        assert list(params)[len(params) - len(declared) :] == sorted(
            declared, key=list(params).index
        )

        agent._descend(component, inputs)
        for n in declared:
            torch.testing.assert_close(params[n].grad.reshape(K, -1), own[n], rtol=1e-5, atol=1e-7)
    expected_specific = {"mlp": False, "care+file": False}
    assert bool(task_specific_parameters(agent.actor)) == expected_specific.get(variant, True)


@pytest.mark.parametrize(
    "variant,layer",
    [
        ("mlp", "head"),
        ("multihead", "trunk.layers.1"),  # the heads are task-specific
        ("multihead+hidden", "trunk.layers.1"),
        ("soft_modularization", "head"),
        ("care", "trunk.1"),
        ("care+file", "trunk.1"),
        ("moore", "experts.1"),  # before Gram-Schmidt and the task-specific weights and heads
        ("paco", "layers.2"),  # the compositional output layer
    ],
)
def test_gradnorm_layer_is_the_last_shared_layer_in_forward_order(variant, layer):
    """GradNorm reads gradient norms at the last shared layer, found in registration order: the
    models register their layers in forward order."""
    agent = make_agent(variant)
    expected = [f"{q}.model.{layer}.{p}" for q in ("q1", "q2") for p in ("weight", "bias")]
    assert last_shared_layers(agent.critic) == expected


# ---------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("variant", VARIANTS)
def test_checkpoint_round_trip_continues_bit_for_bit(variant, tmp_path):
    """Networks, optimizers, surgery state and noise generator go through a checkpoint file into
    an agent built with other random weights; both then take the same update identically."""
    agent = make_agent(variant, surgery="pcgrad")
    for seed in range(2):
        agent.update(make_batch(seed=seed))
    path = ckpt.save_checkpoint(tmp_path / "a.pt", ckpt.KIND_TRAIN, ckpt._agent_state(agent))
    restored = make_agent(variant, surgery="pcgrad", seed=1)
    ckpt._load_agent_state(restored, ckpt.load_checkpoint(path).state)
    batch = make_batch(seed=5)
    agent.update(batch)
    restored.update(batch)
    for name, network in ckpt.agent_networks(agent).items():
        other = ckpt.agent_networks(restored)[name]
        assert network.keys() == other.keys()
        for key, tensor in network.items():
            assert torch.equal(tensor, other[key]), f"{name}.{key}"


# ------------------------------------------------------------------------ embeddings file
def write(tmp_path, content) -> str:
    path = tmp_path / "embeddings.json"
    path.write_text(json.dumps(content) if not isinstance(content, str) else content)
    return str(path)


def test_embeddings_file_rows_follow_the_run_s_task_order(tmp_path):
    path = write(tmp_path, {"b": [3, 4.5], "a": [1, 2], "unused": [0, 0]})
    loaded = load_task_embeddings(path, ("a", "b"))
    assert loaded.dtype == torch.float32
    torch.testing.assert_close(loaded, torch.tensor([[1.0, 2.0], [3.0, 4.5]]))


@pytest.mark.parametrize(
    "content,message",
    [
        ({"a": [1, 2]}, "has no vector for b; it has: a"),
        ({"a": [1, 2], "b": [1, 2, 3]}, "different lengths (a: 2, b: 3)"),
        ({"a": [1, 2], "b": ["x", 2]}, "the vector of b must be a non-empty list of numbers"),
        ({"a": [], "b": []}, "the vector of a must be a non-empty list of numbers"),
        ([[1, 2]], "must be a JSON object mapping task names to lists of numbers"),
        ("{not json", "is not valid JSON"),
    ],
)
def test_bad_embeddings_files_are_one_clear_error(tmp_path, content, message):
    with pytest.raises(ValueError) as error:
        load_task_embeddings(write(tmp_path, content), ("a", "b"))
    text = str(error.value)
    assert text.startswith("agent.task_embeddings '") and message in text and "\n" not in text


# ------------------------------------------------------------------------------- presets
@pytest.mark.parametrize("benchmark", ["mt10", "mt50"])
@pytest.mark.parametrize("name", ["soft_modularization", "care", "moore", "paco"])
def test_model_presets_set_only_the_network_on_top_of_their_benchmark(benchmark, name):
    config = load_config(f"{benchmark}-{name}")
    changed = changed_keys(load_config(benchmark), config)
    assert changed and all(k.startswith(("agent.model", "agent.hidden_dims")) for k in changed)
    assert config.agent.model == name
    assert models.check(name, config.agent.model_options) == config.agent.model_options


def test_default_run_folder_names_the_model():
    assert default_run_dir(load_config("mt10-care")).name.startswith("mt10-care+none-s0-")
    assert default_run_dir(load_config("mt10-pcgrad")).name.startswith("mt10-pcgrad-s0-")


# ------------------------------------------------------------------------------- options
@pytest.mark.parametrize(
    "name,options,message",
    [
        ("care", {"experts": 3}, "unknown option(s) ['experts'] for model 'care'; allowed"),
        ("moore", {"num_experts": 0}, "option 'num_experts' must be an integer >= 1, got 0"),
        ("soft_modularization", {"num_layers": 1}, "must be an integer >= 2, got 1"),
        ("paco", {"identical_init": "yes"}, "must be True or False"),
        ("mlp", {"width": 3}, "model 'mlp' takes no options"),
        ("transformer", {}, "unknown model 'transformer'; allowed: mlp, multihead"),
    ],
)
def test_bad_model_options_say_what_is_allowed(name, options, message):
    with pytest.raises(ValueError) as error:
        models.check(name, options)
    assert message in str(error.value)
