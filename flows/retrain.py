"""The ``robustness-retrain`` flow: the pipeline again, with a drifted batch's labelled images
added to the training split. The drift event's trigger and the cron schedule both run it; the
promotion gate decides whether its best model replaces the champion."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.pipeline import robustness_pipeline
from robustops.config import Config
from robustops.errors import ConfigError


def with_batch(cfg: Config, batch: str | None) -> Config:
    """The config with the labelled data of a drifted batch appended to ``data.extra_train``."""
    if not batch:
        return cfg
    r = cfg.retrain
    if r.labels == "store":
        if r.label_store is None:
            raise ConfigError(
                "retrain.labels is 'store' but retrain.label_store is not set; point it at labelled images"
            )
        extra = r.label_store
    else:
        extra = batch
    data = cfg.data.model_copy(update={"extra_train": [*cfg.data.extra_train, extra]})
    return cfg.model_copy(update={"data": data})


@flow(name="robustness-retrain", log_prints=True)
def robustness_retrain(batch: str | None = None, cfg: Config = Config()) -> dict[str, Any]:  # noqa: B008
    """Retrains every model (with ``batch``'s labelled images when given), scores them and lets the
    gate decide on the champion."""
    print(f"retraining{' with ' + batch if batch else ' on schedule'}")
    return robustness_pipeline(with_batch(cfg, batch))
