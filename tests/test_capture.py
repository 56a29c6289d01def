"""train.compile=cudagraph where no capture can happen: on the CPU the update runs eagerly with
a note; on CUDA a method that solves on the host is refused before anything runs. (The capture
itself is tested on a GPU: tests/test_cuda.py.)"""

import pytest
import torch
from helpers import ACT, STATE, TRAIN, K, run_module, tiny_mt1

from mtrl.agent import MTSAC, capturable_methods, capture_problem
from mtrl.cli import check_capture
from mtrl.config import AgentConfig, ConfigError, SurgeryConfig, load_config
from mtrl.train import use_cuda_graph

CUDA = torch.device("cuda")  # a device description only: nothing here touches a GPU


def test_cudagraph_on_the_cpu_runs_eagerly_with_a_note(capsys):
    assert not use_cuda_graph("cudagraph", torch.device("cpu"))
    assert "updates run eagerly on cpu" in capsys.readouterr().err
    assert not use_cuda_graph("none", CUDA)
    assert use_cuda_graph("cudagraph", CUDA)


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
    assert set(capturable_methods()) == expected | {"gradops", "mgda"}


def test_cli_refuses_a_capture_it_cannot_do():
    config = load_config(None, ["train.compile=cudagraph", "surgery.name=upgrad"])
    with pytest.raises(ConfigError, match=r"train\.compile=cudagraph: surgery 'upgrad'"):
        check_capture(config, CUDA)
    check_capture(config, torch.device("cpu"))  # eager there, no error


def test_training_with_cudagraph_on_the_cpu_completes(tmp_path):
    args = tiny_mt1(60, tmp_path / "run", "train.compile=cudagraph", "--surgery", "pcgrad")
    result = run_module(TRAIN, *args, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "train.compile=cudagraph needs CUDA" in result.stderr
