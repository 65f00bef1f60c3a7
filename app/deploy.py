"""``robustops deploy``: the pipeline, monitor and retrain deployments, registered to a work pool.

``robustops serve`` registers the three deployments and runs their flow runs in its own process.
``deploy`` registers the same three (the same parameters, schedules, drift trigger and concurrency
limits: they come from :func:`app.serve.deployments`) to a work pool, and a ``prefect worker``
of that pool runs them: the worker of the compose stack (``docker/compose.yaml``), or the jobs of
a Kubernetes work pool (``docs/deployment.md``). A missing pool is created as a process pool.

The worker finds the code by module path (``flows.pipeline.robustness_pipeline``), not by a file
path: robustops is installed wherever a worker runs it (the venv, the image), so a deployment
needs no pull steps, no code storage and no checkout, and the worker's working directory does not
matter.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from robustops.config import Config
from robustops.errors import RobustopsError


def module_entrypoint(entrypoint: str) -> str:
    """``flows/pipeline.py:robustness_pipeline`` -> ``flows.pipeline.robustness_pipeline``.

    ``to_deployment`` records the flow's file relative to the current directory; a worker
    elsewhere (another directory, another container) imports the installed module instead.
    """
    file, name = entrypoint.rsplit(":", 1)
    target = (Path.cwd() / file).resolve()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and module.__name__ != "__main__" and Path(path).resolve() == target:
            return f"{module.__name__}.{name}"
    raise RobustopsError(f"{entrypoint}: no imported module holds this flow; cannot deploy it by module path")


def ensure_pool(name: str) -> tuple[Any, bool]:
    """The work pool ``name``, created as a process pool when missing; (pool, created)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            return client.read_work_pool(name), False
        except ObjectNotFound:
            pass
        template = ProcessWorker.get_default_base_job_template()
        try:
            client.create_work_pool(WorkPoolCreate(name=name, type="process", base_job_template=template))
            created = True
        except ObjectAlreadyExists:  # a worker started with --type process created it meanwhile
            created = False
        return client.read_work_pool(name), created


def _runs_images(pool: Any) -> bool:
    return "image" in pool.base_job_template.get("variables", {}).get("properties", {})


def _when(d: Any) -> str:
    """How a deployment starts, in words: on demand, its cron schedules, its event triggers."""
    parts = ["on demand"]
    parts += [
        f"cron {s.schedule.cron} ({s.schedule.timezone or 'UTC'})"
        for s in d.schedules
        if getattr(s.schedule, "cron", None)
    ]
    parts += [f"on {', '.join(sorted(t.expect))}" for t in d.triggers]
    return "; ".join(parts)


def deploy(cfg: Config, pool: str, image: str | None = None) -> list[str]:
    """Register the three deployments to ``pool``; the lines that report what was registered.

    Args:
        cfg: the resolved config; it becomes the deployments' ``cfg`` parameter.
        pool: the work pool's name; a missing pool is created as a process pool.
        image: the robustops image for a pool that runs containers (docker, kubernetes).

    Raises:
        adapters.prefect_server.PrefectUnavailable: no Prefect server answers at PREFECT_API_URL.
        RobustopsError: ``image`` given to a process pool, or missing for a container pool.
    """
    from adapters.prefect_server import check_server
    from app.serve import deployments

    url = check_server()
    work_pool, created = ensure_pool(pool)
    if image and not _runs_images(work_pool):
        raise RobustopsError(
            f"work pool {pool!r} ({work_pool.type}) runs no containers: drop --image, "
            "or name a docker or kubernetes pool"
        )
    default_image = work_pool.base_job_template.get("variables", {}).get("properties", {}).get("image", {})
    if _runs_images(work_pool) and not image and not default_image.get("default"):
        raise RobustopsError(
            f"work pool {pool!r} ({work_pool.type}) runs containers: pass --image REGISTRY/robustops:TAG "
            "(Prefect's own image has no robustops)"
        )
    lines = [
        f"robustops: work pool {pool!r} ({work_pool.type}{', created' if created else ''}) on {url}",
    ]
    width = 0
    rows = []
    for d in deployments(cfg):
        d.entrypoint = module_entrypoint(d.entrypoint)
        d.apply(work_pool_name=pool, image=image)
        rows.append((f"{d.flow_name}/{d.name}", _when(d)))
        width = max(width, len(rows[-1][0]))
    lines += [f"  {name:<{width}}  {when}" for name, when in rows]
    if work_pool.type == "process":
        lines.append(f"a worker runs them: prefect worker start --pool {pool}")
    return lines
