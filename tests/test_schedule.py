"""The training loop's schedule against the reference loops: when a run evaluates (both paper
protocols) and how many updates it runs (the mtrl family's update burst at the end of the
warm-up), as pure functions and in a real run."""

import pytest
from helpers import tiny_mt1

from mtrl.cli import train_main
from mtrl.config import load_config
from mtrl.logger import read_metrics
from mtrl.train import evaluation_steps, final_evaluation_step, updates_due


def mtrl_family_evaluations(tasks: int) -> list[int]:
    """facebookresearch/mtrl mtrl/experiment/multitask.py, run(): the loop ``for step in
    range(start_step, num_train_steps)`` (line 153) evaluates at the top of an iteration when
    ``step % self.max_episode_steps == 0`` (line 155) and ``step % exp_config.eval_freq == 0``
    (line 179), with max_episode_steps = 150 (experiment/metaworld.py line 60), eval_freq =
    10000 (CAGrad mtrl_files/metaworld.yaml line 7) and num_train_steps = 2000000 (run.sh);
    nothing after the loop. Written in mtrl's steps: transitions stored before it, K per step."""
    return [step * tasks for step in range(2_000_000) if step % 150 == 0 and step % 10_000 == 0]


def mwplus_evaluations(tasks: int) -> list[int]:
    """metaworld-algorithms rl/algorithms/base.py, OffPolicyAlgorithm.train(): after the env
    step of ``global_step`` (all K episodes end together every 500 steps, terminate_on_success
    False), with ``global_step > warmstart_steps`` (4000; line 644), it evaluates when
    ``episodes_ended % evaluation_frequency == 0`` and an episode just ended (lines 658-663);
    evaluation_frequency = 200_000 // 500 episodes (config/rl.py line 24), total_steps // K
    iterations. In mtrl's steps: the transitions stored, K per step."""
    evaluations, episodes_ended = [], 0
    for global_step in range(100_000_000 // 50 if tasks == 50 else 20_000_000 // tasks):
        ended = (global_step + 1) % 500 == 0
        episodes_ended += tasks if ended else 0
        if global_step > 4000 and ended and episodes_ended % (200_000 // 500) == 0:
            evaluations.append((global_step + 1) * tasks)
    return evaluations


@pytest.mark.parametrize("preset,tasks", [("mt10", 10), ("mt50", 50)])
def test_mtrl_protocol_evaluates_as_the_mtrl_family_code(preset, tasks):
    train = load_config(preset).train
    steps = evaluation_steps(train)
    assert steps == mtrl_family_evaluations(tasks)
    assert len(steps) == 67 and steps[0] == 0 and steps[-1] == 1_980_000 * tasks
    assert final_evaluation_step(train) == steps[-1]  # no evaluation at the end of training


@pytest.mark.parametrize("preset,tasks", [("mt10-mwplus", 10), ("mt50-mwplus", 50)])
def test_mwplus_protocol_evaluates_as_metaworld_algorithms(preset, tasks):
    train = load_config(preset).train
    steps = evaluation_steps(train)
    assert steps[-1] == train.total_steps == final_evaluation_step(train)
    assert len(steps) == train.total_steps // 200_000
    # The reference evaluates only once it updates: on MT50 (an extrapolation) its first
    # evaluation time, 200k transitions = 4000 vector steps, falls on the warm-up's end.
    warmup = train.warmup_steps
    assert [s for s in steps if s > warmup] == mwplus_evaluations(tasks)
    assert [s for s in steps if s <= warmup] == ([200_000] if tasks == 50 else [])


def test_evaluation_steps_without_a_paper_protocol():
    train = load_config(None, ["train.total_steps=1000", "train.eval_every=300"]).train
    assert evaluation_steps(train) == [300, 600, 900, 1000]
    last = load_config(
        None, ["train.total_steps=900", "train.eval_every=300", "train.eval_final=false"]
    )
    assert evaluation_steps(last.train) == [300, 600] and final_evaluation_step(last.train) == 600


def test_the_warm_up_ends_with_a_burst_of_updates():
    """facebookresearch/mtrl multitask.py lines 218-223: ``num_updates = init_steps if step ==
    init_steps else 1``: 1500 updates at once when the 1500 warm-up steps end, then one per
    step. Meta-World+ has no burst."""
    mtrl = load_config("mt10").train
    assert [updates_due(done, mtrl) for done in (0, 1, 1500, 1501)] == [1500, 1, 1, 1]
    mwplus = load_config("mt10-mwplus").train
    assert [updates_due(done, mwplus) for done in (0, 1)] == [1, 1]


def reference_update_count(steps: int, warmup: int) -> list[int]:
    """Updates done after each iteration of the mtrl family's loop (multitask.py lines
    202-224: act, update, then step the envs): the number the lagged collector reproduces."""
    done, counts = 0, []
    for step in range(steps):
        if step >= warmup:
            done += warmup if step == warmup else 1
        counts.append(done)
    return counts


@pytest.mark.parametrize("collector", ["serial", "serial_lagged"])
def test_a_run_evaluates_and_updates_on_the_paper_schedule(tmp_path, collector):
    """A tiny run (one task, K = 1) with the mtrl family's schedule: an evaluation before the
    first step and every 100 steps, none at the end (the last periodic one is final); a burst of
    40 updates when the 40 warm-up steps end. serial_lagged acts, updates and steps as the
    reference loop does, so its update counts are the reference's; serial updates after
    storing, one update more."""
    run = tmp_path / "run"
    paper = [
        "train.eval_at_start=true",
        "train.eval_final=false",
        "train.warmup_updates=40",
        f"train.collector={collector}",
    ]
    assert train_main(tiny_mt1(300, run, *paper)) == 0
    records = read_metrics(run)
    evals = [r for r in records if "eval/success" in r]
    config = load_config(str(run / "config.yaml"))
    assert [r["step"] for r in evals] == evaluation_steps(config.train) == [0, 100, 200]
    assert [bool(r.get("final")) for r in evals] == [False, False, True]
    assert [r["eval/episodes"] for r in evals] == [1, 1, 2]  # the final one: final_eval_episodes
    updates = {r["step"]: r["train/updates"] for r in records if "train/updates" in r}
    reference = reference_update_count(301, 40)
    # after s steps: the reference's count after its iteration s - 1 (lagged) or s (serial)
    ahead = 0 if collector == "serial_lagged" else 1
    assert updates == {step: reference[step - 1 + ahead] for step in updates}
    assert updates[60] - updates[20] == 40 + 19 + ahead  # the burst of 40, then one per step
