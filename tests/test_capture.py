"""train.compile=cudagraph without a GPU: on the CPU the update runs eagerly with a note; on CUDA
a method that solves on the host is refused before anything runs; the capture's control flow
(warm-up, capture, replays, eager diagnostics updates, recapture after a load) with a fake CUDA
graph. The capture itself is tested on a GPU: tests/test_cuda.py."""

import contextlib

import pytest
import torch
from helpers import ACT, STATE, TRAIN, K, N, make_batch, run_module, tiny_mt1

import mtrl.checkpoint as ckpt
from mtrl.agent import MTSAC, capturable_methods, capture_problem
from mtrl.capture import WARMUP
from mtrl.cli import check_capture
from mtrl.config import AgentConfig, ConfigError, SurgeryConfig, load_config
from mtrl.train import compile_mode

CUDA = torch.device("cuda")  # a device description only: nothing here touches a GPU


def test_cudagraph_on_the_cpu_runs_eagerly_with_a_note(capsys):
    train = load_config("smoke", ["train.compile=cudagraph"]).train
    assert compile_mode(train, torch.device("cpu"), 10) == "none"
    assert "updates run eagerly on cpu" in capsys.readouterr().err
    assert compile_mode(train, CUDA, 10) == "cudagraph"
    none = load_config("smoke", ["train.compile=none"]).train
    assert compile_mode(none, CUDA, 10) == "none"


def test_a_graphed_agent_needs_a_cuda_device():
    with pytest.raises(ValueError, match="needs a CUDA device"):
        MTSAC(STATE + K, ACT, K, AgentConfig(hidden_dims=[8]), "cpu", cuda_graph=True)


@pytest.mark.parametrize(
    "surgery,problem",
    [
        (SurgeryConfig("none"), None),
        (SurgeryConfig("pcgrad"), None),
        (SurgeryConfig("cagrad"), None),
        (SurgeryConfig("nashmtl"), "surgery 'nashmtl' solves on the host"),
        (SurgeryConfig("mgda", options={"solver": "exact"}), "with surgery.options.solver=exact"),
    ],
)
def test_capture_problem_names_host_solvers(surgery, problem):
    found = capture_problem(surgery, CUDA)
    assert found == problem if problem is None else problem in found


def test_capturable_methods_are_the_sync_free_ones():
    expected = {"mean", "sum", "pcgrad", "gradvac", "graddrop", "cagrad", "cagrad_fast"}
    ablations = {"pcgrad_direction", "pcgrad_magnitude"}
    assert set(capturable_methods()) == expected | ablations | {"gradops", "mgda", "upgrad"}


def test_cli_refuses_a_capture_it_cannot_do():
    config = load_config(None, ["train.compile=cudagraph", "surgery.name=imtlg"])
    with pytest.raises(ConfigError, match=r"train\.compile=cudagraph: surgery 'imtlg'"):
        check_capture(config, CUDA)
    check_capture(config, torch.device("cpu"))  # eager there, no error


def test_training_with_cudagraph_on_the_cpu_completes(tmp_path):
    args = tiny_mt1(60, tmp_path / "run", "train.compile=cudagraph", "--surgery", "pcgrad")
    result = run_module(TRAIN, *args, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "train.compile=cudagraph needs CUDA" in result.stderr


class FakeGraph:
    """torch.cuda.CUDAGraph on the CPU: ``replay`` runs the recorded step again on the static
    inputs and writes into the recorded outputs, as a real replay does. (Unlike a real capture,
    the recording runs the step once: the fake checks the control flow, not the numbers.)"""

    recording: "FakeGraph | None" = None

    def __init__(self):
        self.generators, self.replays, self.step = [], 0, None

    def register_generator_state(self, generator):
        self.generators.append(generator)

    def replay(self):
        self.replays += 1
        for static, value in zip(self.outputs.values(), self.step().values(), strict=True):
            static.copy_(value)


class FakeCapture:
    def __init__(self, graph, stream, capture_error_mode):
        self.graph = graph

    def __enter__(self):
        FakeGraph.recording = self.graph

    def __exit__(self, *exc):
        FakeGraph.recording = None


@pytest.fixture
def fake_cuda(monkeypatch):
    class Stream:
        def wait_stream(self, other):
            pass

    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", Stream)
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", FakeCapture)


def graphed_agent(method: str, every: int = 0) -> MTSAC:
    """An agent whose update goes through GraphedUpdate (on the CPU only with fake_cuda)."""
    torch.manual_seed(0)
    config = AgentConfig(hidden_dims=[16, 16], batch_per_task=N)
    surgery = SurgeryConfig(method, diagnostics_every=every)
    agent = MTSAC(STATE + K, ACT, K, config, seed=0, surgery=surgery)
    agent.cuda_graph = True
    agent.release_graph()
    step = agent._graphed.step

    def recorded(batch):
        outputs = step(batch)
        if FakeGraph.recording is not None:
            FakeGraph.recording.step, FakeGraph.recording.outputs = lambda: step(batch), outputs
        return outputs

    agent._graphed.step = recorded
    return agent


def test_warm_up_then_one_capture_then_replays(fake_cuda):
    agent = graphed_agent("pcgrad")
    graphed = agent._graphed
    for _ in range(WARMUP):
        agent.update(make_batch(seed=0))
    assert graphed.captured is None and graphed.eager_calls == WARMUP
    first = agent.update(make_batch(seed=1))
    captured = graphed.captured
    assert captured.graph.replays == 1
    methods = agent.surgeries.values()  # critic and actor: on the CPU their own generators
    assert captured.graph.generators == [agent.generator, *(m.generator for m in methods)]
    assert torch.equal(captured.inputs.obs, make_batch(seed=1).obs)
    second = agent.update(make_batch(seed=2))
    assert captured.graph.replays == 2 and graphed.captured is captured
    assert torch.equal(captured.inputs.obs, make_batch(seed=2).obs)  # new batch copied in
    assert not torch.equal(first["critic_loss"], second["critic_loss"])  # fresh output tensors
    assert agent.updates == WARMUP + 2
    with pytest.raises(ValueError, match="batches of one shape"):
        agent.update(make_batch(seed=3)._replace(obs=torch.zeros(K, N + 1, STATE + K)))


def test_diagnostics_updates_bypass_the_graph(fake_cuda):
    agent = graphed_agent("pcgrad", every=WARMUP + 2)
    seen = ["diag/critic/cos" in agent.update(make_batch(seed=s)) for s in range(WARMUP + 3)]
    assert seen == [False] * (WARMUP + 1) + [True, False]
    assert agent._graphed.captured.graph.replays == 2  # updates WARMUP + 1 and WARMUP + 3


def test_loading_a_checkpoint_drops_the_graph(fake_cuda):
    agent = graphed_agent("pcgrad")
    for step in range(WARMUP + 1):
        agent.update(make_batch(seed=step))
    state = ckpt._agent_state(agent)
    ckpt._load_agent_state(agent, state)
    assert agent._graphed.captured is None and agent._graphed.eager_calls == 0
