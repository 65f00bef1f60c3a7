"""``robustops serve``: the pipeline, monitor and retrain deployments, served by this process.

Against a running Prefect server (``PREFECT_API_URL``), it registers three deployments and runs
their flow runs itself (Prefect's ``serve``: no separate work pool or worker needed):

- ``robustness-pipeline/pipeline``: on demand;
- ``robustness-monitor/monitor``: on demand, and on ``monitor.cron`` (UTC) for ``monitor.batch_path``;
- ``robustness-retrain/retrain``: on ``retrain.cron`` in ``retrain.timezone``, and triggered by every
  ``robustops.drift.detected`` event with the drifted batch as its parameter. Its concurrency
  limit of 1 (later runs queue) keeps two alerts from retraining at once; the gate's
  compare-and-set keeps a stale decision from moving the champion.

The server check lives in :mod:`adapters.prefect_server`.
"""

from __future__ import annotations

from typing import Any

from adapters.events import DRIFT_EVENT
from robustops.config import Config
from robustops.errors import ConfigError


def _cron_schedule(section: str, cron: str, timezone: str | None) -> Any:
    """A cron schedule in ``timezone`` (IANA, e.g. Europe/Berlin; None: UTC); a cron string or
    timezone that Prefect refuses is a ConfigError naming the key, before anything is registered."""
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        return CronSchedule(cron=cron, timezone=timezone)
    except ValidationError as e:
        first = e.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "cron"
        raise ConfigError(f"{section}.{key}: {first['msg'].removeprefix('Value error, ')}") from None


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
    monitor_cron = cfg.monitor.cron if cfg.monitor.batch_path else None
    retrain_cron = cfg.retrain.cron
    return [
        robustness_pipeline.to_deployment(
            name="pipeline", parameters=params, concurrency_limit=one_at_a_time
        ),
        robustness_monitor.to_deployment(
            name="monitor",
            parameters=monitor_params,
            schedule=_cron_schedule("monitor", monitor_cron, None) if monitor_cron else None,
        ),
        robustness_retrain.to_deployment(
            name="retrain",
            parameters=params,
            schedule=_cron_schedule("retrain", retrain_cron, cfg.retrain.timezone) if retrain_cron else None,
            triggers=triggers,
            concurrency_limit=one_at_a_time,
        ),
    ]


def serve(cfg: Config) -> None:  # pragma: no cover - blocks until interrupted; tests call deployments()
    import prefect

    from adapters.prefect_server import check_server

    check_server()
    prefect.serve(*deployments(cfg))
