"""train.compile=inductor: the compiled gradients and forwards against the eager reference, when
``auto`` compiles, exact resume on the compiled path, and checkpoints crossing the two paths.

The compiled path computes the same arithmetic with other rounding (fused element-wise kernels,
Adam's fused kernel), so it is compared within float32 rounding, with the bound stated per test.
"""

import copy
import os
import signal

import pytest
import torch
from helpers import (
    ACT,
    STATE,
    TINY_MODEL_OPTIONS,
    K,
    assert_same_checkpoint,
    make_batch,
    tiny_mt1,
    without_timing,
)

from mtrl.agent import MTSAC, ActorInputs, CriticInputs, adam_step, flushing_denormals
from mtrl.checkpoint import load_checkpoint, step_file
from mtrl.cli import PREEMPTED, train_main
from mtrl.config import AgentConfig, SurgeryConfig, config_from_yaml, load_config
from mtrl.gradients import ComponentGradients
from mtrl.logger import read_metrics
from mtrl.train import COMPILE_PAYS_AFTER, compile_mode, planned_updates

CPU = torch.device("cpu")


def make_agent(compiled: bool, surgery: str = "none", every: int = 0, model: str = "mlp") -> MTSAC:
    torch.manual_seed(0)
    options = TINY_MODEL_OPTIONS[model]
    config = AgentConfig(hidden_dims=[32, 32], model=model, model_options=options)
    surgery_config = SurgeryConfig(surgery, diagnostics_every=every)
    return MTSAC(STATE + K, ACT, K, config, seed=0, surgery=surgery_config, compiled=compiled)


def component_inputs(agent: MTSAC, name: str):
    batch = make_batch(1)
    if name == "critic":
        target = agent.critic_target_values(batch)
        return CriticInputs(batch.obs, batch.action, target, batch.drawn)
    noise = torch.randn(batch.action.shape, generator=torch.Generator().manual_seed(2))
    alpha = torch.full((K, batch.obs.shape[1]), 0.3)
    return ActorInputs(batch.obs, noise, alpha, batch.drawn)


@pytest.mark.parametrize("model", list(TINY_MODEL_OPTIONS))
@pytest.mark.parametrize("name", ["critic", "actor"])
def test_compiled_gradients_equal_the_eager_ones_within_rounding(name, model):
    """Every model compiles (``auto`` compiles whatever model a run uses); batch-mean gradients
    and per-task rows within 1e-5 relative (+1e-6 absolute), and the rows' mean is the batch
    mean's gradient on a balanced batch."""
    agent = make_agent(compiled=False, model=model)
    component = agent.components[name]
    inputs = component_inputs(agent, name)
    eager = ComponentGradients(component.loss)
    compiled = ComponentGradients(component.loss, compiled=True)

    (mean_e, losses_e), (mean_c, losses_c) = (
        g.mean(component.params, inputs) for g in (eager, compiled)
    )
    torch.testing.assert_close(losses_c, losses_e, rtol=1e-5, atol=1e-6)
    for a, b in zip(mean_c, mean_e, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)

    (rows_e, _), (rows_c, _) = (g.per_task(component.params, inputs) for g in (eager, compiled))
    assert rows_c.shape == (K, sum(p.numel() for p in component.params.values()))
    torch.testing.assert_close(rows_c, rows_e, rtol=1e-5, atol=1e-6)
    flat_mean = torch.cat([g.reshape(-1) for g in mean_c])
    torch.testing.assert_close(rows_c.mean(0), flat_mean, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("surgery", ["none", "pcgrad"])
def test_a_compiled_agent_tracks_the_eager_one(surgery):
    """Ten updates with the diagnostics every third: every parameter within 1e-4 of the eager
    agent's (the rounding of fused kernels compounds over the updates; the eager path's
    steps are about 1e-3, lr 3e-4 and Adam's normalised moments), the same metric keys."""
    eager, compiled = make_agent(False, surgery, 3), make_agent(True, surgery, 3)
    keys = set()
    for step in range(10):
        batch = make_batch(step)
        out_e, out_c = eager.update(batch), compiled.update(batch)
        assert out_e.keys() == out_c.keys()
        keys |= out_c.keys()
    assert any(key.startswith("diag/") for key in keys)
    for module in ("actor", "critic", "critic_target", "temperature"):
        a, b = getattr(eager, module), getattr(compiled, module)
        for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
            torch.testing.assert_close(q, p, rtol=0, atol=1e-4, msg=f"{module}.{name}")
    for name in eager.components:
        fused = compiled.components[name].optimizer.param_groups[0]
        assert fused["fused"] and not eager.components[name].optimizer.param_groups[0]["fused"]


def test_compiled_and_eager_agents_load_each_others_state():
    """A checkpoint's agent state (optimizer moments included) has one format on both paths:
    the compiled agent continues from the eager one's state as the eager one does."""
    eager = make_agent(False)
    for step in range(3):
        eager.update(make_batch(step))
    state = {name: c.optimizer.state_dict() for name, c in eager.components.items()}
    twins = make_agent(False), make_agent(True)
    for twin in twins:
        twin.actor.load_state_dict(eager.actor.state_dict())
        twin.critic.load_state_dict(eager.critic.state_dict())
        twin.critic_target.load_state_dict(eager.critic_target.state_dict())
        twin.temperature.load_state_dict(eager.temperature.state_dict())
        for name, component in twin.components.items():
            component.optimizer.load_state_dict(copy.deepcopy(state[name]))
        twin.generator.set_state(eager.generator.get_state())
        twin.update(make_batch(7))
    # Adam's moments are linear in the gradients, so they keep the gradients' rounding (its
    # normalised step m / sqrt(v) does not, where v is tiny); the step counts are exact.
    for name in eager.components:
        states = [twin.components[name].optimizer.state_dict()["state"] for twin in twins]
        assert states[0].keys() == states[1].keys() == state[name]["state"].keys()
        for a, b in zip(states[0].values(), states[1].values(), strict=True):
            assert float(a["step"]) == float(b["step"]) == 4.0
            torch.testing.assert_close(b["exp_avg"], a["exp_avg"], rtol=1e-4, atol=1e-7)
            torch.testing.assert_close(b["exp_avg_sq"], a["exp_avg_sq"], rtol=1e-4, atol=1e-10)


def test_the_direct_fused_adam_step_is_optimizer_step_bit_for_bit():
    """``adam_step`` against ``optimizer.step()`` of the same fused Adam: the same parameters
    and moments after every step, from the first (which creates the state) on, and after the
    state is replaced by ``load_state_dict`` (as a checkpoint does). The compiled agent's
    components step without ``step()`` once their state exists; the eager agent's through it."""
    generator = torch.Generator().manual_seed(0)
    shapes = [(7, 5), (5,), (3, 7, 2), (1,)]
    start = [torch.randn(shape, generator=generator) for shape in shapes]
    twins = []
    for _ in range(2):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        twins.append((params, torch.optim.Adam(params, lr=1e-2, eps=1e-6, fused=True)))
    for step in range(12):
        grads = [torch.randn(shape, generator=generator) for shape in shapes]
        if step == 6:  # a checkpoint's optimizer state, loaded into both
            state = copy.deepcopy(twins[0][1].state_dict())
            for _, optimizer in twins:
                optimizer.load_state_dict(copy.deepcopy(state))
        for (params, _), grad_list in zip(twins, (grads, [g.clone() for g in grads]), strict=True):
            for param, grad in zip(params, grad_list, strict=True):
                param.grad = grad
        twins[0][1].step()
        adam_step(twins[1][1])
        for a, b in zip(twins[0][0], twins[1][0], strict=True):
            assert torch.equal(a, b), step
        for a, b in zip(twins[0][1].state.values(), twins[1][1].state.values(), strict=True):
            assert all(torch.equal(a[key], b[key]) for key in ("step", "exp_avg", "exp_avg_sq"))
    stepped = {True: [], False: []}
    for compiled, calls in stepped.items():
        agent = make_agent(compiled)
        agent.update(make_batch(0))  # creates Adam's state
        for component in agent.components.values():
            component.optimizer.step = lambda calls=calls: calls.append(1)
        agent.update(make_batch(1))
    assert stepped == {True: [], False: [1, 1, 1]}


DENORMAL = 1e-39  # below float32's smallest normal, 1.18e-38


def flushed() -> bool:
    """Whether this thread flushes denormals now: a denormal product comes out as zero."""
    return float(torch.tensor(DENORMAL) * 2) == 0.0


def test_flushing_denormals_is_scoped_to_its_block():
    assert not flushed()
    with flushing_denormals(True):
        assert flushed()
        state = torch.full((3,), DENORMAL) * 0.9  # Adam's decay of a dead unit's moment
        assert state.eq(0).all()
    assert not flushed()
    assert float(torch.tensor(DENORMAL) * 0.9) > 0
    with flushing_denormals(False):
        assert not flushed()
    with pytest.raises(RuntimeError), flushing_denormals(True):
        raise RuntimeError
    assert not flushed()


@pytest.mark.parametrize("compiled", [False, True])
def test_the_compiled_update_flushes_denormals_and_only_it(compiled, monkeypatch):
    """On a CPU the compiled path's update runs flushed (its rounding is its own anyway); the
    eager path keeps 0.3's arithmetic; neither leaves the flags set for the envs."""
    agent = make_agent(compiled)
    seen = []
    step = agent._step
    monkeypatch.setattr(agent, "_step", lambda *a: seen.append(flushed()) or step(*a))
    agent.update(make_batch(0))
    assert seen == [compiled]
    assert not flushed()


def test_auto_compiles_on_a_cpu_where_it_pays():
    long = load_config("pcgrad-fig4").train
    short = load_config("smoke").train
    assert planned_updates(long, 2) >= COMPILE_PAYS_AFTER > planned_updates(short, 10)
    assert compile_mode(long, CPU, 2) == "inductor"
    assert compile_mode(short, CPU, 10) == "none"
    assert compile_mode(long, torch.device("cuda"), 2) == "none"
    forced = load_config("smoke", ["train.compile=inductor"]).train
    assert compile_mode(forced, CPU, 10) == "inductor"


ARGS = ("checkpoint.every=100", "checkpoint.keep_last=5", "train.compile=inductor")


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """A compiled run never interrupted."""
    run = tmp_path_factory.mktemp("straight") / "run"
    assert train_main(tiny_mt1(300, run, *ARGS)) == 0
    return run


def test_planned_updates_counts_the_updates_a_run_makes(straight):
    made = load_checkpoint(step_file(straight, 300)).state["agent"]["updates"]
    config = config_from_yaml((straight / "config.yaml").read_text(), "config.yaml")
    assert planned_updates(config.train, 1) == made


def test_resume_on_the_compiled_path_is_exact(straight, tmp_path, monkeypatch, capsys):
    """A compiled run preempted in its update at step 200 and resumed in a new process state
    (compiled again) ends bit for bit as the uninterrupted compiled run: compiled code is
    deterministic, and the checkpoint holds what the eager path's does."""
    run, update = tmp_path / "run", MTSAC.update

    def update_and_signal(agent, *args):
        if agent.updates == 160:  # at step 200, an episode boundary (exact resume)
            os.kill(os.getpid(), signal.SIGTERM)
        return update(agent, *args)

    monkeypatch.setattr(MTSAC, "update", update_and_signal)
    assert train_main(tiny_mt1(300, run, *ARGS)) == PREEMPTED
    monkeypatch.setattr(MTSAC, "update", update)
    capsys.readouterr()
    assert train_main(["--resume", str(run), "--no-progress"]) == 0, capsys.readouterr().err
    assert_same_checkpoint(step_file(straight, 300), step_file(run, 300))
    a, b = read_metrics(straight), read_metrics(run)
    assert without_timing(a) == without_timing(b)
