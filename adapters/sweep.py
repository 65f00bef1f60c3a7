"""Sweeping up after killed pipelines: every parent run records its owner process (``OWNER_TAG``);
:func:`sweep` marks the RUNNING parent runs of owner processes that are gone (and their nested
runs) KILLED and deletes the model versions they registered. Runs owned by another host are left
alone: only that host can tell whether they still run."""

from __future__ import annotations

import socket

import psutil
from mlflow.entities import RunStatus

from adapters import tracking
from adapters.log import logger
from robustops.config import MlflowConfig

OWNER_TAG = "robustops.owner"


def owner() -> str:
    """``host:pid:start``: the start time tells a live process from a later one with the same pid."""
    p = psutil.Process()
    return f"{socket.gethostname()}:{p.pid}:{p.create_time():.2f}"


def _dead(tag: str) -> bool:
    host, _, rest = tag.partition(":")
    pid, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        return f"{psutil.Process(int(pid)).create_time():.2f}" != start
    except psutil.NoSuchProcess:
        return True


def sweep(cfg: MlflowConfig) -> list[str]:
    """Marks the RUNNING parent runs of dead processes (and their nested runs) KILLED and deletes
    the model versions they registered; returns the swept parent run ids. MLflow's errors come
    through untranslated: call it inside ``tracking.translated``."""
    c = tracking.client(cfg)
    exp = c.get_experiment_by_name(cfg.experiment)
    if exp is None:
        return []
    running = c.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'", max_results=1000)
    stale = [r.info.run_id for r in running if _dead(r.data.tags.get(OWNER_TAG, ""))]
    if not stale:
        return []
    killed = RunStatus.to_string(RunStatus.KILLED)
    swept = set(stale)
    for parent in stale:
        children = tracking.child_runs(cfg, parent)
        swept |= set(children)
        for run_id, status in children.items():
            if status == "RUNNING":
                c.set_terminated(run_id, killed)
        c.set_terminated(parent, killed)
    deleted = tracking.delete_unaliased(cfg, swept)
    logger().warning(
        "marked %d run(s) of killed pipeline(s) KILLED (%s) and deleted their model version(s) %s",
        len(swept),
        ", ".join(stale),
        deleted or "none",
    )
    return stale
