"""The task runner that ``runner`` in the config names, and a ``submit`` that uses it.

The pipeline submits through this rather than ``task.submit`` so the runner is part of the run's
config (a deployment parameter, changeable per run in the Prefect UI), not fixed when the flow
is defined: ``task.submit`` would use the runner of the ``@flow`` decorator.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np
import torch
from prefect import Task
from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from prefect.utilities.callables import get_call_parameters

from robustops import cpus, stop
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


def resolve(cfg: RunnerConfig, values_per_image: int) -> tuple[int, int]:
    """``(workers, torch_threads)`` with ``auto`` resolved for images of ``values_per_image``
    values (see :mod:`robustops.cpus`). On threads, the workers score beside one training lane:
    scoring is most of the work, and once the models are trained the lane idles, so the workers
    alone fill the CPUs (while it trains, one-thread tasks share the cores by time slices, which
    costs them nothing like an OpenMP team short of cores)."""
    at_once = cpus.tasks_at_once(values_per_image)
    workers = cfg.workers if cfg.workers != "auto" else at_once
    auto = cpus.torch_threads(values_per_image, workers)
    return workers, cfg.torch_threads if cfg.torch_threads != "auto" else auto


def make_runner(cfg: RunnerConfig, workers: int, torch_threads: int) -> TaskRunner:
    if cfg.kind == "threads":
        return ThreadRunner(workers, torch_threads)
    from prefect_dask import DaskTaskRunner

    if cfg.address:
        return DaskTaskRunner(address=cfg.address)
    threads = str(torch_threads)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": workers,
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


# Tasks that seed and draw from torch's global generator: on threads they run one at a time in a
# lane of their own, so a run gives the same models however many scoring workers run beside them.
# Scoring draws from generators of its own (seeded per part), so it may run at any concurrency.
TRAINING_TASKS = frozenset({"train-model", "synthesize-minority-classes"})


class Submitter:
    """``submit(task, *args, **kwargs)``: a future from the configured runner. Futures passed as
    arguments become dependencies (waited for, and shown in the Prefect UI).

    On Dask, data arguments (a split, a dataset, an array) are scattered to the cluster once and
    passed by reference: every task that gets the same object reads one copy per worker instead
    of carrying its own pickled copy (about 50 tasks per model would otherwise each ship the whole
    split, 190 MB apiece for MNIST)."""

    def __init__(self, runner: TaskRunner, training: TaskRunner | None = None):
        self.runner = runner
        self.training = training  # the training lane (threads), or None: training runs on runner
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
        if self.training is not None and task.name in TRAINING_TASKS:
            return self.training.submit(task, params)
        return self.runner.submit(task, params)


@contextmanager
def task_runner(cfg: RunnerConfig, values_per_image: int) -> Iterator[Submitter]:
    """The configured runner for images of ``values_per_image`` values, started, and a
    ``submit`` for it.

    Open it inside ``cpus.use_threads(1)`` for the flow's thread, before that thread runs any
    torch op: the flow thread only records (MLflow, plots, reference features), and an OpenMP team
    it made would stay beside the workers' teams. Each task runs torch on the resolved number of
    threads (see :mod:`robustops.cpus` for why small images get one thread and the cores get
    several tasks instead). On threads, training runs in a lane of its own, one model at a time,
    beside ``workers`` scoring threads.
    """
    workers, threads = resolve(cfg, values_per_image)
    lane = ThreadRunner(1, threads) if cfg.kind == "threads" else nullcontext(None)
    with stop.scope() as request, make_runner(cfg, workers, threads) as runner, lane as training:
        try:
            yield Submitter(runner, training)
        except BaseException as e:
            # Before the runners' exit waits for their threads: a signal or a failed task ends
            # the flow, so the tasks still running stop at their next batch instead of
            # training on to their last epoch.
            request.request(f"the flow is ending ({type(e).__name__})")
            raise
