"""Scale-out: the pipeline on a Dask LocalCluster of two worker processes scores every model
exactly as the default runner does, and a fixed test file replaces the test fraction."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_TASKS_REFRESH_CACHE, temporary_settings

from adapters.runner import task_runner
from flows.pipeline import robustness_pipeline
from robustops.catalog import load_config
from robustops.config import RunnerConfig
from robustops.data import load_digits, split_dataset
from tasks.data import load_data
from tests.helpers.runs import TINY_CONFIG

# On top of tests/tiny.yaml: two models (one with certificates) and every scorecard part; no
# registry, one epoch, fewer images and one severity, to stay quick (the runners must agree on
# whatever they score).
SMALL = [
    "defences=[{name: smoothing, n0: 10, n: 50, max_samples: 16}]",
    "train.epochs=1",
    "evaluation.max_samples=32",
    "evaluation.severities=[3]",
    "mlflow.register_model=false",
    "gate={enabled: false}",
    "adversarial_set.enabled=false",
]
TIMES = ("eval/seconds", "train/seconds")


def _run(tmp_path, tag: str, *extra: str) -> dict:
    store = [f"mlflow.tracking_uri=sqlite:///{tmp_path}/{tag}.db", f"mlflow.artifact_root={tmp_path}/{tag}"]
    return robustness_pipeline(load_config(TINY_CONFIG, SMALL + store + list(extra)))


def _task_states(flow_run_id: str) -> dict[str, str]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as c:
        runs = c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {r.name: r.state.name for r in runs}


@pytest.fixture(scope="module")
def harness(prefect_harness):
    """The session's Prefect test server (tests/conftest.py)."""


def test_dask_local_cluster_gives_the_same_scorecards(harness, tmp_path, monkeypatch):
    # Worker processes read these at start: no cached results (every task really runs there), and
    # the same torch thread count as this process, so the numbers can be compared bit for bit.
    monkeypatch.setenv("PREFECT_TASKS_REFRESH_CACHE", "true")
    # Both runners resolve the digits to one torch thread per task (robustops.cpus), so the
    # numbers can be compared bit for bit.
    with temporary_settings({PREFECT_TASKS_REFRESH_CACHE: True}):
        local = _run(tmp_path, "threads")
        dask = _run(tmp_path, "dask", "runner.kind=dask", "runner.workers=2")
        states = _task_states(dask["flow_run_id"])
    assert set(local["models"]) == set(dask["models"]) == {"baseline", "smoothing"}
    for name, m in local["models"].items():
        a = {k: v for k, v in m["metrics"].items() if k not in TIMES}
        b = {k: v for k, v in dask["models"][name]["metrics"].items() if k not in TIMES}
        assert a.keys() == b.keys()
        assert len(a) > 80  # every dimension is there: attacks, noise, corruptions, post, spec
        diff = {
            k: (a[k], b[k]) for k in a if not np.isclose(a[k], b[k], rtol=1e-6, atol=1e-9, equal_nan=True)
        }
        assert not diff, f"{name}: scores differ between runners: {diff}"
    scored = {n: s for n, s in states.items() if n.startswith(("score-", "train-"))}
    assert len(scored) > 20 and all(s == "Completed" for s in scored.values()), scored  # none Cached


@task
def _where(split, k: int) -> tuple[int, int, int]:
    return os.getpid(), id(split), k


def test_dask_gets_the_data_by_reference(harness):
    """Tasks handed the same split on Dask read one copy in the worker (scattered once), not a
    pickled copy each: with one worker every task sees the very same object."""
    split = split_dataset(load_digits(), 0.1, 0.2, 0)

    @flow
    def probe() -> list[tuple[int, int, int]]:
        with task_runner(RunnerConfig(kind="dask", workers=1), 64) as submit:
            futures = [submit(_where, split, k) for k in range(3)]
            return [f.result() for f in futures]

    seen = probe()
    assert [k for *_, k in seen] == [0, 1, 2]
    assert len({pid for pid, *_ in seen}) == 1 and seen[0][0] != os.getpid()  # ran in the worker
    assert len({ref for _, ref, _ in seen}) == 1, seen


@task
def _torch_threads() -> int:
    return torch.get_num_threads()


@task(name="train-model")
def _training_span(k: int) -> tuple[float, float, int]:
    start = time.monotonic()
    time.sleep(0.3)
    return start, time.monotonic(), torch.get_num_threads()


def test_small_images_get_one_thread_per_task_and_a_task_per_cpu(monkeypatch):
    """Small images: one torch thread per task, one scoring task per CPU beside the training
    lane; large ones: two scoring tasks sharing the CPUs. Set values are kept."""
    from adapters.runner import resolve
    from robustops import cpus

    monkeypatch.setattr(cpus, "usable_cpus", lambda: 8)
    assert resolve(RunnerConfig(), 64) == (8, 1)  # the digits: 8 scoring beside training, 1 thread
    assert resolve(RunnerConfig(), 3 * 32 * 32) == (2, 4)  # CIFAR: two scoring, 4 threads each
    assert resolve(RunnerConfig(kind="dask"), 64) == (8, 1)
    assert resolve(RunnerConfig(kind="dask"), 3 * 224 * 224) == (2, 4)
    assert resolve(RunnerConfig(workers=3, torch_threads=2), 64) == (3, 2)
    monkeypatch.setattr(cpus, "usable_cpus", lambda: 1)
    assert resolve(RunnerConfig(), 64) == (1, 1)
    assert resolve(RunnerConfig(), 3 * 32 * 32) == (1, 1)  # never below one


def test_tasks_run_on_the_resolved_threads_and_training_one_at_a_time(harness):
    """Every task runs torch on the resolved threads and the flow's thread keeps its own; two
    trainings never overlap (they seed torch's global generator), even with scoring workers free."""

    @flow
    def probe() -> tuple[int, list[int], list[tuple[float, float, int]]]:
        with task_runner(RunnerConfig(workers=4, torch_threads=2), 64) as submit:
            threads = [submit(_torch_threads) for _ in range(4)]
            spans = [submit(_training_span, k) for k in range(3)]
            return torch.get_num_threads(), [f.result() for f in threads], [f.result() for f in spans]

    before = torch.get_num_threads()
    flow_threads, task_threads, spans = probe()
    assert flow_threads == before == torch.get_num_threads()
    assert task_threads == [2, 2, 2, 2] and {n for *_, n in spans} == {2}
    spans.sort()
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False)), spans  # one after another


def test_usable_cpus_follow_the_affinity_mask_and_the_cgroup_quota(tmp_path, monkeypatch):
    import subprocess
    import sys

    from robustops import cpus

    one = subprocess.run(
        [sys.executable, "-c", "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
         "from robustops.cpus import usable_cpus; print(usable_cpus())"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert one.stdout.strip() == "1"
    monkeypatch.setattr(cpus, "_CGROUP", tmp_path)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpus._cgroup_quota() is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # a container's --cpus 1.5
    assert cpus._cgroup_quota() == 1.5
    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda pid: set(range(16)))
    assert cpus.usable_cpus() == 1
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu/cpu.cfs_quota_us").write_text("400000\n")  # cgroup v1: 4 CPUs
    (tmp_path / "cpu/cpu.cfs_period_us").write_text("100000\n")
    assert cpus.usable_cpus() == 4


def test_a_failing_flow_stops_its_running_training_within_a_batch(harness, digits_split):
    """A signal or a failed task ends the flow; the training still running in a worker thread
    stops at its next batch instead of running on to its last epoch (issue 14, item 9)."""
    from prefect.states import State

    from robustops.config import AugmentConfig, ModelConfig, RegularizeConfig, TrainConfig
    from robustops.defences.standard import StandardConfig
    from tasks.training import train_model

    long = TrainConfig(epochs=5000, patience=5000, progress=False, batch_size=16)  # minutes of training
    started: dict = {}

    @flow
    def failing() -> None:
        with task_runner(RunnerConfig(), 64) as submit:
            started["future"] = submit(
                train_model, digits_split.train, digits_split.val, StandardConfig(label="long"),
                ModelConfig(name="mlp", hidden=16), long, AugmentConfig(policy="none"), RegularizeConfig(), 7, "cpu",
            )  # fmt: skip
            time.sleep(2)  # training is under way
            raise RuntimeError("a task failed")

    t = time.monotonic()
    with pytest.raises(RuntimeError, match="a task failed"):
        failing()
    assert time.monotonic() - t < 20
    state: State = started["future"].state
    assert state.is_failed() and "stopped: the flow is ending (RuntimeError)" in str(state.message)


def test_fixed_test_file_is_the_test_split(tmp_path):
    ds = load_digits()
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(ds.y))
    test, rest = idx[:300], idx[300:]
    np.savez(tmp_path / "train.npz", x=ds.x[rest], y=ds.y[rest])
    np.savez(tmp_path / "test.npz", x=ds.x[test], y=ds.y[test])
    cfg = load_config(None, ["data.source=npz", f"data.path={tmp_path / 'train.npz'}",
                             f"data.test_path={tmp_path / 'test.npz'}", "data.val_fraction=0.1"])  # fmt: skip
    split = load_data.fn(cfg.data, 0)
    assert np.array_equal(split.test.x, ds.x[test]) and np.array_equal(split.test.y, ds.y[test])
    assert len(split.train.y) + len(split.val.y) == len(rest)  # nothing of data.path is dropped
    assert abs(len(split.val.y) - 0.1 * len(rest)) <= 10
    tr = {a.tobytes() for a in split.train.x}
    assert not any(a.tobytes() in tr for a in split.val.x[:50])  # train and validation are disjoint


def test_test_path_needs_a_file_source():
    from robustops.errors import ConfigError

    with pytest.raises(ConfigError, match="test_path"):
        load_config(None, ["data.test_path=/tmp/x.npz"])


def test_mnist_config_is_the_wong_setup():
    from pathlib import Path

    cfg = load_config(Path(__file__).parents[1] / "configs/mnist.yaml", [])
    fgsm, pgd = cfg.defences
    assert (fgsm.name, fgsm.eps, fgsm.eps * fgsm.alpha) == ("fgsm_rs", 0.3, pytest.approx(0.375))
    assert pgd.name == "pgd_at" and pgd.eps == 0.3
    assert cfg.model.name == "cnn_strided" and cfg.data.test_path.name == "mnist_test.npz"
    assert cfg.gate.primary == "adv/autoattack/eps_0.3/acc" and 0.3 in cfg.evaluation.autoattack.eps
