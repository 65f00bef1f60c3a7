"""Concurrent promotions (issue 8, item 3): two runs that reach the gate at once never both promote,
and the champion is always a version that passed the gate and beat every champion before it.

Real parts only: separate worker processes (spawned once, reused across trials) and threads call
the promotion task (``promote.fn``) against one real sqlite MLflow store, released together by a
barrier. Every promotion tags the new champion with the version it replaced
(``robustops.promoted_from``): that chain is the alias history the trials are checked against.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import random
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

PRIMARY = "adv/autoattack/eps_0.1/acc"
GATE = (
    "gate={primary: adv/autoattack/eps_0.1/acc, min: {clean/acc: 0.5}, max: {}, "
    "require_masking: false, spec_checks: [], margin: 0}"  # the locking, not the noise test, is under test
)
PROCESS_TRIALS = 20  # the slow run; the default suite runs a few (spawning the workers costs ~10 s)
THREAD_TRIALS = 10
THREADS = 4


def _overrides(root: Path, model: str) -> list[str]:
    return [
        f"mlflow.tracking_uri=sqlite:///{root}/mlflow.db",
        f"mlflow.artifact_root={root}/mlartifacts",
        "mlflow.experiment=concurrency",
        f"mlflow.registered_model={model}",
        GATE,
    ]


def _promote(job: dict[str, Any]) -> dict[str, Any]:
    """One run's promotion step, as the pipeline calls it; the outcome and when it ran."""
    from robustops.catalog import load_config
    from robustops.evaluation.scorecard import Scorecard
    from tasks.gate import promote

    cfg = load_config(None, job["overrides"])
    cards = {
        name: Scorecard({PRIMARY: p, "clean/acc": clean}, np.zeros((1, 1)), ["x"])
        for name, (p, clean) in job["cards"].items()
    }
    if job.get("barrier") is not None:
        job["barrier"].wait()
    time.sleep(job["delay"])
    start = time.monotonic()
    try:
        d = promote.fn(cfg, job["parent"], cards, job["versions"])
        out = {"promote": d.promote, "challenger": d.challenger, "summary": d.summary, "error": None}
    except Exception as e:  # noqa: BLE001 - reported to the test, which fails on any
        out = {"promote": False, "challenger": None, "summary": "", "error": f"{type(e).__name__}: {e}"}
    return out | {"start": start, "end": time.monotonic(), "worker": job["worker"]}


def _worker(inbox: Any, outbox: Any, barrier: Any) -> None:
    """A long-lived worker process: promotes each job it is sent, in step with the other worker."""
    import tasks.gate  # noqa: F401 - import before the first trial, not inside its timing

    outbox.put("ready")
    while (job := inbox.get()) is not None:
        outbox.put(_promote(job | {"barrier": barrier}))


def _registry(root: Path):
    from mlflow.tracking import MlflowClient

    from adapters import tracking
    from robustops.catalog import load_config

    cfg = load_config(None, _overrides(root, "unused"))
    return MlflowClient(tracking.tracking_uri(cfg.mlflow)), tracking.experiment_id(cfg.mlflow)


def _version(c: Any, exp: str, model: str, primary: float, clean: float) -> str:
    from mlflow.entities import Metric

    run = c.create_run(exp, run_name=f"{model} {primary:.3f}")
    rid = run.info.run_id
    c.log_batch(rid, metrics=[Metric(PRIMARY, primary, 0, 0), Metric("clean/acc", clean, 0, 0)])
    c.set_terminated(rid)
    return str(c.create_model_version(model, f"{run.info.artifact_uri}/guarded_model", run_id=rid).version)


def _setup_trial(c: Any, exp: str, root: Path, model: str, n_jobs: int, rng: random.Random) -> list[dict]:
    """A registered model with a champion (primary 0.5) and one job per concurrent run, each with
    a challenger that beats the champion alone (distinct primaries in (0.55, 0.95)); the first job
    also holds a version that fails the gate (clean/acc 0.2) with the best primary of all."""
    from adapters.registry import PROMOTED_FROM

    c.create_registered_model(model)
    v1 = _version(c, exp, model, 0.5, 0.9)
    c.set_model_version_tag(model, v1, "gate", "passed")
    c.set_model_version_tag(model, v1, PROMOTED_FROM, "none")
    c.set_registered_model_alias(model, "champion", v1)
    primaries = rng.sample(range(55, 95), n_jobs)
    jobs = []
    for i, p in enumerate(primaries):
        cards = {f"m{i}": (p / 100, 0.9)} | ({"failing": (0.99, 0.2)} if i == 0 else {})
        versions = {name: _version(c, exp, model, *score) for name, score in cards.items()}
        parent = c.create_run(exp, run_name=f"{model} run {i}").info.run_id
        jobs.append({"overrides": _overrides(root, model), "cards": cards, "versions": versions,
                     "parent": parent, "worker": i, "delay": rng.uniform(0, 0.005)})  # fmt: skip
    return jobs


def _check_trial(c: Any, model: str, jobs: list[dict], results: list[dict]) -> dict[str, int]:
    """Checks one trial against the registry; returns its double promotions and whether the runs
    overlapped in time."""
    from adapters.registry import PROMOTED_FROM

    assert [r["error"] for r in results if r["error"]] == []
    versions = {str(mv.version): mv for mv in c.search_model_versions(f"name='{model}'")}
    score = {v: c.get_run(mv.run_id).data.metrics[PRIMARY] for v, mv in versions.items()}
    replaced = [mv.tags[PROMOTED_FROM] for mv in versions.values() if PROMOTED_FROM in mv.tags]
    doubles = len(replaced) - len(set(replaced))  # two promotions decided against one champion
    # Walk the alias history back from the champion: each link beat the one it replaced.
    champion = c.get_model_version_by_alias(model, "champion")
    chain = [str(champion.version)]
    while (prev := versions[chain[-1]].tags[PROMOTED_FROM]) != "none":
        assert score[chain[-1]] > score[prev], (chain, score)
        chain.append(prev)
    assert sorted(chain) == sorted(v for v in versions if PROMOTED_FROM in versions[v].tags)
    assert champion.tags["gate"] == "passed"
    passing = [str(v) for j in jobs for n, v in j["versions"].items() if j["cards"][n][1] >= 0.5]
    assert chain[0] == max(passing, key=score.__getitem__)
    assert sum(r["promote"] for r in results) == len(chain) - 1  # every decision left its link
    for job in jobs:  # every decision is logged on its run
        assert "robustops.gate" in c.get_run(job["parent"]).data.tags
    first_end = min(r["end"] for r in results)
    overlapped = sum(r["start"] < first_end for r in results) > 1
    return {"doubles": doubles, "overlapped": int(overlapped)}


@pytest.fixture()
def workers():
    """Two spawned worker processes (no fork of a process that holds MLflow and Prefect threads)."""
    ctx = mp.get_context("spawn")
    barrier, outbox = ctx.Barrier(2), ctx.Queue()
    inboxes = [ctx.Queue(), ctx.Queue()]
    procs = [ctx.Process(target=_worker, args=(q, outbox, barrier), daemon=True) for q in inboxes]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            assert outbox.get(timeout=120) == "ready"
        yield inboxes, outbox
    finally:
        for q in inboxes:
            q.put(None)
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()


@pytest.mark.parametrize("n_trials", [5, pytest.param(PROCESS_TRIALS, marks=pytest.mark.slow)])
def test_two_processes_never_both_promote(tmp_path, workers, n_trials):
    inboxes, outbox = workers
    c, exp = _registry(tmp_path)
    rng = random.Random(n_trials)
    trials = doubles = overlapped = 0
    for t in range(n_trials):
        model = f"conc-p{t}"
        jobs = _setup_trial(c, exp, tmp_path, model, 2, rng)
        for q, job in zip(inboxes, jobs, strict=True):
            q.put(job)
        results = [outbox.get(timeout=120) for _ in jobs]
        out = _check_trial(c, model, jobs, results)
        trials, doubles, overlapped = trials + 1, doubles + out["doubles"], overlapped + out["overlapped"]
    print(f"\nprocess trials: {trials}, double promotions: {doubles}, trials that overlapped: {overlapped}")
    assert trials == n_trials and doubles == 0
    assert overlapped >= trials // 2  # the runs really raced (both inside promote at once)


@pytest.mark.parametrize("n_trials", [3, pytest.param(THREAD_TRIALS, marks=pytest.mark.slow)])
def test_threads_never_both_promote(tmp_path, n_trials):
    c, exp = _registry(tmp_path)
    rng = random.Random(n_trials)
    trials = doubles = overlapped = 0
    for t in range(n_trials):
        model = f"conc-t{t}"
        jobs = _setup_trial(c, exp, tmp_path, model, THREADS, rng)
        barrier, results = threading.Barrier(THREADS), queue.Queue()
        threads = [
            threading.Thread(target=lambda j=j, b=barrier, r=results: r.put(_promote(j | {"barrier": b})))
            for j in jobs
        ]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=120)
        out = _check_trial(c, model, jobs, [results.get_nowait() for _ in jobs])
        trials, doubles, overlapped = trials + 1, doubles + out["doubles"], overlapped + out["overlapped"]
    print(
        f"\nthread trials: {trials} x {THREADS} threads, double promotions: {doubles}, overlapped: {overlapped}"
    )
    assert trials == n_trials and doubles == 0 and overlapped >= trials // 2


@pytest.mark.slow
def test_without_the_lock_the_same_trials_do_race(tmp_path, monkeypatch):
    """The control: with the lock taken out, the same thread trials double-promote (both
    compare-and-sets read the old champion before either writes) or collide (PromotionConflict),
    so the zero above is the lock's doing, not the trials'."""
    import contextlib

    import tasks.gate

    monkeypatch.setattr(tasks.gate, "promotion_lock", lambda m, timeout=0: contextlib.nullcontext())
    from adapters.registry import PROMOTED_FROM

    c, exp = _registry(tmp_path)
    rng = random.Random(1)
    doubles = conflicts = 0
    for t in range(THREAD_TRIALS):
        model = f"race-t{t}"
        jobs = _setup_trial(c, exp, tmp_path, model, THREADS, rng)
        barrier, results = threading.Barrier(THREADS), queue.Queue()
        threads = [
            threading.Thread(target=lambda j=j, b=barrier, r=results: r.put(_promote(j | {"barrier": b})))
            for j in jobs
        ]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=120)
        conflicts += sum("PromotionConflict" in (results.get_nowait()["error"] or "") for _ in jobs)
        replaced = [
            mv.tags[PROMOTED_FROM]
            for mv in c.search_model_versions(f"name='{model}'")
            if PROMOTED_FROM in mv.tags
        ]
        doubles += len(replaced) - len(set(replaced))
    print(f"\nwithout the lock: {THREAD_TRIALS} trials, {doubles} double promotions, {conflicts} conflicts")
    assert doubles + conflicts > 0


def test_a_champion_moved_during_the_decision_is_not_overwritten(tmp_path):
    """The compare-and-set: someone outside the lock (the MLflow UI) moves the alias between the
    decision and the write; the stale decision does not land and leaves no history link."""
    from adapters import tracking
    from adapters.registry import PROMOTED_FROM
    from robustops.catalog import load_config
    from robustops.errors import PromotionConflict

    c, exp = _registry(tmp_path)
    jobs = _setup_trial(c, exp, tmp_path, "conc-cas", 1, random.Random(2))
    m = load_config(None, jobs[0]["overrides"]).mlflow
    v1 = c.get_model_version_by_alias("conc-cas", "champion").version
    by_hand = _version(c, exp, "conc-cas", 0.6, 0.9)
    c.set_registered_model_alias("conc-cas", "champion", by_hand)  # moved after v1 was read
    with pytest.raises(PromotionConflict, match=f"moved to version {by_hand} while this run was deciding"):
        tracking.set_alias(m, "champion", jobs[0]["versions"]["m0"], v1)
    assert str(c.get_model_version_by_alias("conc-cas", "champion").version) == by_hand
    # Through the task: the decision is made inside the lock, against the champion of that moment.
    out = _promote(jobs[0])
    assert out["error"] is None and out["promote"] == (jobs[0]["cards"]["m0"][0] > 0.6)
    champion = c.get_model_version_by_alias("conc-cas", "champion")
    assert champion.tags.get(PROMOTED_FROM, "none") in {"none", by_hand}


def test_the_lock_makes_a_waiting_promotion_decide_against_the_new_champion(tmp_path):
    """While one promotion holds the lock, another waits, and then decides against the champion
    the first one left, not the one it saw before it waited."""
    from adapters.locks import file_lock, lock_path
    from adapters.registry import PROMOTED_FROM
    from robustops.catalog import load_config

    c, exp = _registry(tmp_path)
    jobs = _setup_trial(c, exp, tmp_path, "conc-wait", 1, random.Random(3))
    m = load_config(None, jobs[0]["overrides"]).mlflow
    done: queue.Queue = queue.Queue()
    with file_lock(lock_path(m)):
        th = threading.Thread(target=lambda: done.put(_promote(jobs[0])))
        th.start()
        time.sleep(1.0)
        assert done.empty()  # blocked on the lock
        better = _version(c, exp, "conc-wait", 0.97, 0.9)  # a better champion lands meanwhile
        c.set_model_version_tag("conc-wait", better, "gate", "passed")
        c.set_model_version_tag("conc-wait", better, PROMOTED_FROM, "1")
        c.set_registered_model_alias("conc-wait", "champion", better)
    th.join(timeout=60)
    out = done.get_nowait()
    assert out["error"] is None and not out["promote"] and "does not beat champion (version" in out["summary"]
    assert str(c.get_model_version_by_alias("conc-wait", "champion").version) == better


def test_lock_files_sit_beside_local_stores(tmp_path):
    from adapters.locks import lock_path
    from robustops.config import MlflowConfig

    db = tmp_path / "m.db"
    assert lock_path(MlflowConfig(tracking_uri=f"sqlite:///{db}")) == tmp_path / "m.db.promote.lock"
    assert lock_path(MlflowConfig(tracking_uri=str(tmp_path / "mlruns"))).parent == tmp_path / "mlruns"
    remote = lock_path(MlflowConfig(tracking_uri="http://mlflow.example:5000", registered_model="a"))
    assert remote != lock_path(MlflowConfig(tracking_uri="http://mlflow.example:5000", registered_model="b"))


@pytest.mark.slow
def test_prefect_global_concurrency_limit_excludes_promotions():
    """For a remote store with a shared Prefect server: the promotion lock creates a global
    concurrency limit of 1, which admits one holder at a time across clients (threads here, each
    with its own Prefect client, and no file lock in between)."""
    from prefect.client.orchestration import get_client
    from prefect.testing.utilities import prefect_test_harness

    from adapters.locks import prefect_lock, promotion_lock
    from robustops.config import MlflowConfig

    m = MlflowConfig(tracking_uri="http://127.0.0.1:9", registered_model="remote digits")
    name = "robustops-promote-remote-digits"
    inside, most, held = [0], [0], []
    guard = threading.Lock()

    def hold() -> None:
        with prefect_lock(name, timeout=60):
            with guard:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            held.append(time.monotonic())
            time.sleep(0.2)
            with guard:
                inside[0] -= 1

    with prefect_test_harness(server_startup_timeout=120):
        with promotion_lock(m, timeout=60):  # creates the limit on the shared server
            pass
        threads = [threading.Thread(target=hold) for _ in range(3)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=120)
        with get_client(sync_client=True) as client:
            limit = client.read_global_concurrency_limit_by_name(name)
    assert len(held) == 3 and most[0] == 1
    assert limit.limit == 1 and limit.active and limit.active_slots == 0
