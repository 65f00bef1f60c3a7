"""The task runner that ``runner`` in the config names, and a ``submit`` that uses it.

The pipeline submits through this rather than ``task.submit`` so the runner is part of the run's
config (a deployment parameter, changeable per run in the Prefect UI), not fixed when the flow
is defined: ``task.submit`` would use the runner of the ``@flow`` decorator.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect import Task
from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from prefect.utilities.callables import get_call_parameters

from robustops.config import RunnerConfig


def make_runner(cfg: RunnerConfig) -> TaskRunner:
    if cfg.kind == "threads":
        return ThreadPoolTaskRunner(max_workers=cfg.workers)
    from prefect_dask import DaskTaskRunner

    if cfg.address:
        return DaskTaskRunner(address=cfg.address)
    threads = str(cfg.threads_per_worker)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": cfg.workers,
            "threads_per_worker": 1,  # one task per process: training seeds torch's global generator
            "processes": True,
            "dashboard_address": ":0",  # any free port: two clusters never clash
            # torch reads these at import: without them each worker takes every core.
            "env": {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads},
        }
    )


class Submitter:
    """``submit(task, *args, **kwargs)``: a future from the configured runner. Futures passed as
    arguments become dependencies (waited for, and shown in the Prefect UI)."""

    def __init__(self, runner: TaskRunner):
        self.runner = runner

    def __call__(self, task: Task, *args: Any, **kwargs: Any) -> PrefectFuture:
        return self.runner.submit(task, get_call_parameters(task.fn, args, kwargs))


@contextmanager
def task_runner(cfg: RunnerConfig) -> Iterator[Submitter]:
    with make_runner(cfg) as runner:
        yield Submitter(runner)
