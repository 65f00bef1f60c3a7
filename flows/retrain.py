"""The ``robustness-retrain`` flow: the pipeline again, with a drifted batch's labelled images
added to the training split. The drift event's trigger and the cron schedule both run it; the
promotion gate decides whether its best model replaces the champion."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.pipeline import robustness_pipeline
from robustops.config import Config, with_batch


@flow(name="robustness-retrain", log_prints=True)
def robustness_retrain(batch: str | None = None, cfg: Config = Config()) -> dict[str, Any]:  # noqa: B008
    """Retrains every model (with ``batch``'s labelled images when given), scores them and lets the
    gate decide on the champion."""
    print(f"retraining{' with ' + batch if batch else ' on schedule'}")
    return robustness_pipeline(with_batch(cfg, batch))
