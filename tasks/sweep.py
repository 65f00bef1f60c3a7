"""Cleaning up after a killed run: MLflow runs a SIGKILLed pipeline left RUNNING are marked KILLED,
and the model versions they registered (none of which carries an alias) are deleted.

A killed process cannot clean up after itself, so the next pipeline run does it: every parent run
records its owner (host, pid and the process's start time) and a run whose owner process is gone
is stale. Runs owned by another host are left alone: only that host can tell whether they still
run. Finished stages are not lost: Prefect's result cache keeps them, and the rerun reuses them.
"""

from __future__ import annotations

from prefect import task

from adapters import tracking
from adapters.sweep import sweep
from robustops.config import MlflowConfig


@task(name="sweep-killed-runs")
def sweep_killed_runs(cfg: MlflowConfig) -> list[str]:
    """Marks the RUNNING parent runs of dead processes (and their nested runs) KILLED and deletes
    the model versions they registered; returns the swept parent run ids."""
    with tracking.translated(cfg):
        return sweep(cfg)
