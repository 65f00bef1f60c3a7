"""``robustops serve``: the pipeline, monitor and retrain deployments, served by this process.

Against a running Prefect server (``PREFECT_API_URL``), it registers three deployments and runs
their flow runs itself (Prefect's ``serve``: no separate work pool or worker needed):

- ``robustness-pipeline/pipeline``: on demand;
- ``robustness-monitor/monitor``: on demand, and on ``monitor.cron`` for ``monitor.batch_path``;
- ``robustness-retrain/retrain``: on ``retrain.cron``, and triggered by every
  ``robustops.drift.detected`` event with the drifted batch as its parameter. Its concurrency
  limit of 1 (later runs queue) keeps two alerts from retraining at once; the gate's
  compare-and-set keeps a stale decision from moving the champion.
"""

from __future__ import annotations

from typing import Any

from robustops.config import Config
from robustops.errors import RobustopsError

DRIFT_EVENT = "robustops.drift.detected"


class PrefectUnavailable(RobustopsError):
    """No Prefect server answers at PREFECT_API_URL."""


def check_server() -> str:
    """The API URL of a reachable Prefect server; a clear error otherwise."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise PrefectUnavailable(
            "PREFECT_API_URL is not set: start a server (make prefect-ui) and "
            "export PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    try:
        httpx.get(f"{url.rstrip('/')}/health", timeout=5).raise_for_status()
    except httpx.HTTPError as e:
        raise PrefectUnavailable(
            f"no Prefect server answers at {url} ({type(e).__name__}); start one with make prefect-ui"
        ) from None
    return url


def check_configured_server() -> str | None:
    """The API URL when ``PREFECT_API_URL`` names a server that answers, None when none is named
    (a flow run then starts a temporary local server). A named server that refuses the connection
    or times out is a clear error at once, instead of Prefect's ``Failed to reach API`` after about
    20 s of retries, mid-way into a flow call."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        return None
    try:
        httpx.get(f"{url.rstrip('/')}/health", timeout=5)
    except httpx.TransportError as e:  # only "nobody answers": an HTTP status is the server's business
        raise PrefectUnavailable(
            f"no Prefect server answers at PREFECT_API_URL={url} ({type(e).__name__}); start one with "
            "make prefect-ui, or unset PREFECT_API_URL to run with a temporary local server"
        ) from None
    return url


def own_temporary_server() -> None:
    """Makes the temporary Prefect server that a flow run starts without ``PREFECT_API_URL`` run in
    a session of its own.

    Ctrl-C in a terminal sends SIGINT to the whole foreground process group, and a service
    manager may send SIGTERM to all of a unit's processes: the temporary server, a child in our
    group, stopped at once, and the run's teardown then hung on API retries for minutes instead
    of marking its runs. In its own session only this process stops it (at exit), and the
    watchdog (``flows.watchdog``) ends it if this process dies. Prefect's test harness registers
    its server the same way (under the ``None`` key that every client looks up).
    """
    import functools
    import subprocess
    from unittest import mock

    from prefect.server.api.server import SubprocessASGIServer

    class OwnSessionServer(SubprocessASGIServer):
        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            popen = functools.partial(subprocess.Popen, start_new_session=True)
            with mock.patch.object(subprocess, "Popen", popen):
                return super()._run_uvicorn_command()

    current = SubprocessASGIServer._instances.get(None)
    if current is None or not current.running:
        SubprocessASGIServer._instances.pop(None, None)
        OwnSessionServer()  # registers itself under None; Prefect starts it on first use


def deployments(cfg: Config) -> list[Any]:
    """The three deployments, their parameters carrying the resolved config."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.events import DeploymentEventTrigger

    from flows.monitor import robustness_monitor
    from flows.pipeline import robustness_pipeline
    from flows.retrain import robustness_retrain

    params = {"cfg": cfg.model_dump(mode="json")}
    monitor_params = params | ({"batch": str(cfg.monitor.batch_path)} if cfg.monitor.batch_path else {})
    triggers = []
    if cfg.retrain.on_drift:
        triggers.append(
            DeploymentEventTrigger(
                name="retrain-on-drift",
                expect={DRIFT_EVENT},
                match={"prefect.resource.id": "robustops.batch.*"},
                parameters={"batch": "{{ event.payload.batch }}"},
            )
        )
    one_at_a_time = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)
    return [
        robustness_pipeline.to_deployment(
            name="pipeline", parameters=params, concurrency_limit=one_at_a_time
        ),
        robustness_monitor.to_deployment(
            name="monitor",
            parameters=monitor_params,
            cron=cfg.monitor.cron if cfg.monitor.cron and cfg.monitor.batch_path else None,
        ),
        robustness_retrain.to_deployment(
            name="retrain",
            parameters=params,
            cron=cfg.retrain.cron,
            triggers=triggers,
            concurrency_limit=one_at_a_time,
        ),
    ]


def serve(cfg: Config) -> None:  # pragma: no cover - blocks until interrupted; tests call deployments()
    import prefect

    check_server()
    prefect.serve(*deployments(cfg))
