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
from robustops.monitoring.monitor import verdict
from tasks.monitoring import (
    detect_drift,
    emit_drift,
    expect_accuracy,
    load_champion,
    log_monitoring,
    read_batch,
    score_batch,
)


@checked_flow(name="robustness-monitor", flow_run_name=run_name, log_prints=True)
def robustness_monitor(
    batch: str,
    cfg: Config = Config(),  # noqa: B008
    model: str | None = None,
    convert: bool = False,
) -> dict[str, Any]:
    """Monitors one batch (.npz with x and optional y, a class-folder tree, or a flat image folder):
    drift tests and the expected accuracy, either of which can raise the drift event. A batch of
    other channels or size than the model takes fails (no drift test, no event) unless
    ``convert``."""
    uri = model or cfg.monitored_model
    guarded, ref, champion = load_champion(cfg, uri)
    x, y = read_batch(batch, guarded, cfg.limits, convert)
    with use_threads(torch_threads(x[0].size)):
        scored = score_batch(guarded, ref, x, cfg.monitor.chunk)
    predictions, features = scored.predictions, scored.features
    result = detect_drift(ref, features, cfg, batch)
    expectation = expect_accuracy(ref, scored, cfg, y)
    drift, reasons = verdict(result, expectation)
    run_id = log_monitoring(
        cfg, batch, champion, predictions, features, y, result, flow_run.get_id(), expectation
    )
    name_after_verdict(batch, drift)
    said = "DRIFT: " + "; ".join(reasons) if drift else "no drift"
    tracking.link_in_prefect(
        cfg.mlflow, run_id, "monitor", f"MLflow run monitor {Path(batch).name}",
        [f"{batch} against {champion['uri']} (version {champion['version']}): {said}"],
    )  # fmt: skip
    event = (
        emit_drift(batch, champion, reasons, run_id, y is not None)
        if drift and cfg.monitor.emit_event
        else None
    )
    return {
        "drift": drift,
        "reasons": reasons,
        "metrics": result.metrics() | (expectation.metrics() if expectation is not None else {}),
        "expected_accuracy": expectation.line() if expectation is not None else None,
        "run_id": run_id,
        "event": event,
        "model": champion,
        "n": len(predictions),
    }
