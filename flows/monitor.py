"""The ``robustness-monitor`` flow: score a production batch with the champion, test it for drift
against the champion's reference, log everything to MLflow and, on drift, emit the Prefect event
that triggers retraining."""

from __future__ import annotations

from typing import Any

from prefect import Flow
from prefect.runtime import flow_run

from robustops.config import Config
from robustops.cpus import torch_threads, use_threads
from tasks.monitoring import detect_drift, emit_drift, load_champion, log_monitoring, read_batch, score_batch


class _CheckedFlow(Flow):
    """A flow that, when called, first checks the Prefect server named by PREFECT_API_URL: a
    monitor run started against a server that is down fails at once with a clear error (exit 2
    from the CLI) rather than with Prefect's ``Failed to reach API`` after its retries. Served runs
    do not go through ``__call__``: the server that started them is up."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from flows.serve import check_configured_server

        check_configured_server()
        return super().__call__(*args, **kwargs)


def _checked_flow(**options: Any) -> Any:
    return lambda fn: _CheckedFlow(fn, **options)


@_checked_flow(name="robustness-monitor", log_prints=True)
def robustness_monitor(batch: str, cfg: Config = Config(), model: str | None = None) -> dict[str, Any]:  # noqa: B008
    """Monitors one batch (.npz with x and optional y, a class-folder tree, or a flat image folder)."""
    uri = model or cfg.monitored_model
    guarded, ref, champion = load_champion(cfg, uri)
    x, y = read_batch(batch, guarded, cfg.limits)
    with use_threads(torch_threads(x[0].size)):
        predictions, features = score_batch(guarded, ref, x, cfg.monitor.chunk)
    result = detect_drift(ref, features, cfg, batch)
    run_id = log_monitoring(cfg, batch, champion, predictions, features, y, result, flow_run.get_id())
    event = (
        emit_drift(batch, champion, result, run_id, y is not None)
        if result.drift and cfg.monitor.emit_event
        else None
    )
    return {
        "drift": result.drift,
        "reasons": result.reasons,
        "metrics": result.metrics(),
        "run_id": run_id,
        "event": event,
        "model": champion,
        "n": len(predictions),
    }
