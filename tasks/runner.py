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
import torch
from prefect import Task
from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from prefect.utilities.callables import get_call_parameters

from robustops import stop
from robustops.config import RunnerConfig
from robustops.data import Dataset, Split


class ThreadRunner(ThreadPoolTaskRunner):
    """Prefect's thread pool whose worker threads each run torch with ``torch_threads`` threads
    (see :func:`task_runner` for why)."""

    def __init__(self, max_workers: int, torch_threads: int) -> None:
        super().__init__(max_workers=max_workers)
        self.torch_threads = torch_threads

    def duplicate(self) -> ThreadRunner:
        return type(self)(self._max_workers, self.torch_threads)

    def _register_worker_thread(self) -> None:  # the pool's initializer: runs once in each worker
        super()._register_worker_thread()
        torch.set_num_threads(self.torch_threads)  # this thread's OpenMP team only


def make_runner(cfg: RunnerConfig, torch_threads: int = 1) -> TaskRunner:
    if cfg.kind == "threads":
        return ThreadRunner(cfg.workers, torch_threads)
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
    """The configured runner, started, and a ``submit`` for it.

    Open it before the flow's thread runs any torch op: inside, that thread runs torch on one
    thread and each of the ``threads`` runner's ``workers`` gets an equal share of the threads
    torch had (all of them with one worker); on exit the flow's thread gets them back.

    Why: CPU torch runs its parallel ops on OpenMP (libgomp), which keeps a team of threads for
    every thread that ever ran one. Once the process holds more OpenMP threads than there are
    cores (the flow thread's team and a worker's, say), libgomp stops spinning between parallel
    regions and puts its threads to sleep, and every small op then pays for waking them. Training
    the default CNN took 12-20 s in the pipeline against 6-8 s in a plain process (2 cores); with
    the flow's thread kept single-threaded it takes the same time in both. The flow thread only
    records (MLflow, plots, reference features), so one thread costs it little. A team, once
    made, stays: setting one thread after the flow's thread ran a parallel op does not help.
    """
    total = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with stop.scope() as request, make_runner(cfg, max(1, total // cfg.workers)) as runner:
            try:
                yield Submitter(runner)
            except BaseException as e:
                # Before the runner's exit waits for its threads: a signal or a failed task ends
                # the flow, so the tasks still running stop at their next batch instead of
                # training on to their last epoch.
                request.request(f"the flow is ending ({type(e).__name__})")
                raise
    finally:
        torch.set_num_threads(total)
