"""The task runner that ``runner`` in the config names, and a ``submit`` that uses it.

The pipeline submits through this rather than ``task.submit`` so the runner is part of the run's
config (a deployment parameter, changeable per run in the Prefect UI), not fixed when the flow
is defined: ``task.submit`` would use the runner of the ``@flow`` decorator.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from prefect import Task
from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from prefect.utilities.callables import get_call_parameters

from robustops.config import RunnerConfig
from robustops.data import Dataset, Split


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


# Arguments sent to Dask workers by reference: the data. Everything else is small and pickled with
# each task.
_DATA = (Split, Dataset, np.ndarray)


class Submitter:
    """``submit(task, *args, **kwargs)``: a future from the configured runner. Futures passed as
    arguments become dependencies (waited for, and shown in the Prefect UI).

    On Dask, data arguments (a split, a dataset, an array) are scattered to the cluster once and
    passed by reference: every task that gets the same object reads one copy per worker instead
    of carrying its own pickled copy (about 50 tasks per model would otherwise each ship the whole
    split, 190 MB apiece for MNIST)."""

    def __init__(self, runner: TaskRunner):
        self.runner = runner
        self._sent: dict[int, tuple[Any, Any]] = {}  # id(obj) -> (obj, its Dask future)

    def _by_ref(self, value: Any) -> Any:
        if not isinstance(value, _DATA):
            return value
        if id(value) not in self._sent:
            # Held with the object, so the id is never reused while the future lives.
            self._sent[id(value)] = (value, self.runner.client.scatter(value, hash=False))
        return self._sent[id(value)][1]

    def __call__(self, task: Task, *args: Any, **kwargs: Any) -> PrefectFuture:
        params = get_call_parameters(task.fn, args, kwargs)
        if hasattr(self.runner, "client"):  # a DaskTaskRunner
            params = {k: self._by_ref(v) for k, v in params.items()}
        return self.runner.submit(task, params)


@contextmanager
def task_runner(cfg: RunnerConfig) -> Iterator[Submitter]:
    with make_runner(cfg) as runner:
        yield Submitter(runner)
