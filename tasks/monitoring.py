"""Monitoring tasks: load the champion and its reference, score a batch, test drift, log it, and
tell Prefect when it drifted."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import task

from adapters import handoff, registered, tracking
from adapters.caching import fingerprint
from adapters.events import DRIFT_EVENT
from adapters.log import logger
from adapters.retries import RETRY, is_io_error
from robustops.config import Config, LimitsConfig
from robustops.data.loaders import load_batch
from robustops.monitoring.drift import DriftResult, DriftSettings
from robustops.monitoring.monitor import Expectation, Scored, batch_scores, drift, expect, score, verdict
from robustops.monitoring.reference import Reference
from robustops.serving import GuardedModel
from robustops.spreadsheet import write_csv


@task(name="load-champion", **RETRY)
def load_champion(cfg: Config, uri: str) -> tuple[GuardedModel, Reference, dict[str, Any]]:
    """The guarded model a URI names and its drift reference."""
    return registered.load_champion(cfg.mlflow, uri)


@task(name="load-batch", retries=2, retry_delay_seconds=1, retry_condition_fn=is_io_error)
def read_batch(
    path: str,
    guarded: GuardedModel,
    limits: LimitsConfig = LimitsConfig(),  # noqa: B008
    convert: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The batch in the model's input shape; taken from the CLI's pre-flight check when it read it."""
    s = guarded.settings
    held = handoff.take(handoff.batch_key(path, s.shape, s.classes, limits, convert))
    return held if held is not None else load_batch(path, tuple(s.shape), s.classes, limits, convert)


@task(name="score-batch")
def score_batch(guarded: GuardedModel, ref: Reference, x: np.ndarray, chunk: int) -> Scored:
    return score(guarded, ref, x, chunk)


@task(name="expect-accuracy")
def expect_accuracy(
    ref: Reference, scored: Scored, cfg: Config, y: np.ndarray | None = None
) -> Expectation | None:
    """The batch's expected accuracy without labels, and the accuracy alerts."""
    out = expect(ref, scored, cfg.monitor, y, cfg.seed)
    if out is None:
        logger().info("expected accuracy: the model was logged without estimators")
    else:
        logger().info("%s%s", out.line(), "; ALERT: " + "; ".join(out.reasons) if out.alert else "")
    return out


@task(name="detect-drift")
def detect_drift(
    ref: Reference, features: pd.DataFrame, cfg: Config, batch: str = "the batch"
) -> DriftResult:
    m = cfg.monitor
    result = drift(ref, features, DriftSettings(m.alpha, m.mmd_threshold, m.embeddings), m.min_batch, batch)
    logger().info(
        "drift %s: %s",
        "DETECTED" if result.drift else "none",
        "; ".join(result.reasons) or "every test passed",
    )
    return result


@task(name="log-monitoring", **RETRY)
def log_monitoring(
    cfg: Config, batch: str, champion: dict[str, Any], predictions: pd.DataFrame, features: pd.DataFrame,
    y: np.ndarray | None, result: DriftResult, flow_run_id: str | None, expectation: Expectation | None = None,
) -> str:  # fmt: skip
    """One MLflow run per monitored batch: drift metrics, the expected accuracy, the Evidently
    report (the expected accuracy at its top), predictions, features."""
    m = cfg.mlflow
    drift_or_alert, reasons = verdict(result, expectation)
    tags = {"robustops.kind": "monitor", "robustops.batch": batch, "robustops.model_uri": champion["uri"],
            "robustops.source_run": champion["run_id"],
            "robustops.drift": "detected" if drift_or_alert else "none"}  # fmt: skip
    if flow_run_id:
        tags["prefect.flow_run_id"] = flow_run_id
    run_id = tracking.start_run(m, f"monitor {Path(batch).name}", tags=tags, flow="robustness-monitor")
    ok = False
    try:
        # Coverage, accuracy on the answered images and the plain model's: abstentions are not errors.
        metrics = result.metrics() | batch_scores(predictions, y).metrics()
        metrics["batch/mean_confidence"] = float(features["confidence"].mean()) if len(features) else 0.0
        if expectation is not None:
            metrics |= expectation.metrics()
        tracking.log_metrics(m, run_id, metrics)
        tracking.log_params(m, run_id, {"batch": batch, "model_uri": champion["uri"], "model_version": champion["version"],
                                        "monitor.alpha": cfg.monitor.alpha, "monitor.mmd_threshold": cfg.monitor.mmd_threshold})  # fmt: skip
        tracking.log_json(m, run_id, {"drift": drift_or_alert, "reasons": reasons, "p_values": result.p_values,
                                      "embedding_mmd": result.embedding_mmd, "share": result.share,
                                      "distribution_drift": result.drift,
                                      "accuracy_alert": expectation is not None and expectation.alert}, "drift/decision.json")  # fmt: skip
        if expectation is not None:
            tracking.log_json(m, run_id, expectation.as_json(), "estimate/expected_accuracy.json")
        with tempfile.TemporaryDirectory() as tmp:
            result.save_html(Path(tmp) / "report.html", expectation.html() if expectation is not None else "")
            tracking.log_file(m, run_id, Path(tmp) / "report.html", "drift")
            write_csv(predictions, Path(tmp) / "predictions.csv")
            write_csv(features, Path(tmp) / "features.csv")
            tracking.log_file(m, run_id, Path(tmp) / "predictions.csv", "batch")
            tracking.log_file(m, run_id, Path(tmp) / "features.csv", "batch")
        ok = True
    finally:
        tracking.end_run(m, run_id, ok)
    return run_id


@task(name="emit-drift-event")
def emit_drift(
    batch: str, champion: dict[str, Any], reasons: list[str], run_id: str, labelled: bool
) -> str | None:
    """Emits ``robustops.drift.detected`` with the batch as its resource; the retrain deployment's
    trigger listens for it. Returns the event id (None when Prefect did not take it)."""
    from prefect.events import emit_event

    digest = fingerprint(str(Path(batch).resolve()))[:16]
    event = emit_event(
        event=DRIFT_EVENT,
        resource={
            "prefect.resource.id": f"robustops.batch.{digest}",
            "prefect.resource.name": Path(batch).name,
        },
        related=[{"prefect.resource.id": f"mlflow.run.{run_id}", "prefect.resource.role": "monitor-run"}],
        payload={
            "batch": str(Path(batch).resolve()),
            "model": champion["uri"],
            "model_version": champion["version"],
            "reasons": reasons,
            "labelled": labelled,
            "mlflow_run_id": run_id,
        },  # fmt: skip
    )
    logger().info("emitted %s for %s", DRIFT_EVENT, batch)
    return str(event.id) if event is not None else None
