"""One check of a config before a run starts, beyond what its types and ranges allow.

:func:`mtrl.config.validate` checks each value on its own; here the values are checked against
the benchmark's tasks and against the registries, each of which validates its own section
(:func:`mtrl.surgery.validate`, :func:`mtrl.models.validate`, :func:`mtrl.balancers.validate`).
"""

from __future__ import annotations

from mtrl import balancers, models, surgery
from mtrl.benchmarks import Benchmark, parse_benchmark
from mtrl.config import Config, ConfigError, check_task_multiples
from mtrl.logger import require_wandb


def validate_run(config: Config) -> Benchmark:
    """The parsed benchmark of a config a run can start from; ``ConfigError`` (one line)
    otherwise."""
    try:
        benchmark = parse_benchmark(config.env.benchmark)
        check_task_multiples(config, benchmark.num_tasks)
        surgery.validate(config.surgery.name, config.surgery.options)
        models.validate(config.agent, benchmark.task_names)
        balancers.validate(config.balancer, config.surgery)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    require_wandb(config.logger)
    return benchmark
