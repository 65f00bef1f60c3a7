"""The ``robustness-monitor`` flow: score a production batch with the champion, test it for drift
against the champion's reference, log everything to MLflow and, on drift, emit the Prefect event
that triggers retraining."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.runtime import flow_run

from adapters import tracking
from adapters.flow_runs import checked_flow, name_after_verdict, run_name
from robustops.config import Config
from robustops.cpus import torch_threads, use_threads
from tasks.monitoring import detect_drift, emit_drift, load_champion, log_monitoring, read_batch, score_batch


@checked_flow(name="robustness-monitor", flow_run_name=run_name, log_prints=True)
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
    name_after_verdict(batch, result.drift)
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
