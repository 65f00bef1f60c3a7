"""The ``robustness-monitor`` flow: score a production batch with the champion, test it for drift
against the champion's reference, log everything to MLflow and, on drift, emit the Prefect event
that triggers retraining."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import Flow
from prefect.runtime import flow_run

from adapters import tracking
from adapters.prefect_server import check_server
from robustops.config import Config
from robustops.cpus import torch_threads, use_threads
from tasks.monitoring import detect_drift, emit_drift, load_champion, log_monitoring, read_batch, score_batch


class _CheckedFlow(Flow):
    """A flow that, when called, first checks the Prefect server named by PREFECT_API_URL: a
    monitor run started against a server that is down fails at once with a clear error (exit 2
    from the CLI) rather than with Prefect's ``Failed to reach API`` after its retries. Served runs
    do not go through ``__call__``: the server that started them is up."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        check_server(temporary_ok=True)
        return super().__call__(*args, **kwargs)


def _checked_flow(**options: Any) -> Any:
    return lambda fn: _CheckedFlow(fn, **options)


def _run_name() -> str:
    """``monitor <batch file>``; the verdict is added once known (:func:`_name_after_verdict`)."""
    return f"monitor {Path(str(flow_run.parameters.get('batch', ''))).name}"


def _name_after_verdict(batch: str, drift: bool) -> None:
    """Renames the flow run ``monitor <batch file>: drift`` (or ``no drift``), so the Prefect UI's
    list of runs reads as a log of batches and verdicts. A failure is a warning."""
    from prefect.client.orchestration import get_client

    from adapters.log import logger

    name = f"monitor {Path(batch).name}: {'drift' if drift else 'no drift'}"
    try:
        with get_client(sync_client=True) as client:
            client.set_flow_run_name(flow_run.get_id(), name)
    except Exception as e:  # noqa: BLE001 - a name is a convenience: the verdict is logged anyway
        logger().warning("could not rename the flow run %r: %s", name, e)


@_checked_flow(name="robustness-monitor", flow_run_name=_run_name, log_prints=True)
def robustness_monitor(
    batch: str,
    cfg: Config = Config(),  # noqa: B008
    model: str | None = None,
    convert: bool = False,
) -> dict[str, Any]:
    """Monitors one batch (.npz with x and optional y, a class-folder tree, or a flat image folder).
    A batch of other channels or size than the model takes fails (no drift test, no event)
    unless ``convert``."""
    uri = model or cfg.monitored_model
    guarded, ref, champion = load_champion(cfg, uri)
    x, y = read_batch(batch, guarded, cfg.limits, convert)
    with use_threads(torch_threads(x[0].size)):
        predictions, features = score_batch(guarded, ref, x, cfg.monitor.chunk)
    result = detect_drift(ref, features, cfg, batch)
    run_id = log_monitoring(cfg, batch, champion, predictions, features, y, result, flow_run.get_id())
    _name_after_verdict(batch, result.drift)
    verdict = "DRIFT: " + "; ".join(result.reasons) if result.drift else "no drift"
    tracking.link_in_prefect(
        cfg.mlflow, run_id, "monitor", f"MLflow run monitor {Path(batch).name}",
        [f"{batch} against {champion['uri']} (version {champion['version']}): {verdict}"],
    )  # fmt: skip
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
