"""Benchmark names: parsed and spelled one way in :mod:`mtrl.benchmarks`, without Meta-World's
envs or any other mtrl module."""

import subprocess
import sys

import pytest
from helpers import MT10_TASKS

from mtrl.benchmarks import canonical_benchmark, parse_benchmark

PAIR = "mt50:reach-v3,button-press-topdown-v3"


def test_parse_benchmark_names():
    assert parse_benchmark("mt10").task_names == MT10_TASKS
    assert parse_benchmark("MT50").num_tasks == 50
    assert parse_benchmark("mt25").num_tasks == 25
    assert set(parse_benchmark("mt25").task_names) < set(parse_benchmark("mt50").task_names)
    assert parse_benchmark("mt1:reach-v3").task_names == ("reach-v3",)


def test_task_sets_keep_the_order_given_in_one_spelling():
    spaced = parse_benchmark(" MT50: Button-Press-Topdown-v3 , reach-v3 ")
    assert spaced.name == "mt50:button-press-topdown-v3,reach-v3"
    assert spaced.task_names == ("button-press-topdown-v3", "reach-v3")
    assert parse_benchmark(PAIR).task_names == ("reach-v3", "button-press-topdown-v3")
    assert parse_benchmark("mt50:shelf-place-v3").num_tasks == 1


@pytest.mark.parametrize(
    "name,message",
    [
        ("mt20", "unknown benchmark 'mt20'; allowed: mt10, mt25, mt50, a task set mt50:<task>"),
        ("mt1:fly-v3", "unknown Meta-World env 'fly-v3'; v3 envs: assembly-v3"),
        ("mt1:", "unknown Meta-World env ''"),
        ("mt50:reach-v3,fly-v3,jump-v3", "unknown MT50 task(s) 'fly-v3', 'jump-v3'; MT50 tasks:"),
        ("mt50:reach-v3,push-v3,reach-v3", "task(s) listed more than once: reach-v3"),
        ("mt50:", "a task set lists its tasks after 'mt50:', comma-separated, none empty"),
        ("mt50:reach-v3,,push-v3", "none empty"),
        ("mt10:reach-v3", "unknown benchmark 'mt10:reach-v3'"),
    ],
)
def test_unknown_benchmarks_list_what_is_allowed(name, message):
    with pytest.raises(ValueError) as info:
        parse_benchmark(name)
    assert message in str(info.value)


def test_canonical_spelling_is_idempotent():
    name = canonical_benchmark(" MT50: Reach-v3 ,  push-v3")
    assert name == "mt50:reach-v3,push-v3" == canonical_benchmark(name)


def test_reading_a_config_imports_no_envs():
    """The config names benchmarks through mtrl.benchmarks alone: no Meta-World until parsed."""
    code = (
        "import sys, mtrl.config, mtrl.protocols; "
        "print('metaworld' in sys.modules, 'mtrl.envs' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
