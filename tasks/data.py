"""Data tasks: load, validate and split."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.logging import get_run_logger

from robustops.config import DataConfig
from robustops.data import Split, load_dataset, split_dataset
from tasks.caching import file_fingerprint, hash_inputs


def _data_key(context: Any, parameters: dict[str, Any]) -> str:
    # The path alone does not identify the data: a rewritten file must not hit the cache.
    return f"{hash_inputs(context, parameters)}-{file_fingerprint(parameters['cfg'].path)}"


def _io_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only I/O failures; a validation error will fail the same way again."""
    try:
        state.result()
    except OSError:
        return True
    except Exception:
        return False
    return False


@task(
    name="load-and-validate-data",
    retries=2,
    retry_delay_seconds=1,
    retry_condition_fn=_io_error,
    cache_key_fn=_data_key,
    persist_result=True,
)
def load_data(cfg: DataConfig, seed: int) -> Split:
    """Loads and validates the configured data, then makes the seeded stratified split."""
    ds = load_dataset(cfg)
    split = split_dataset(ds, cfg.val_fraction, cfg.test_fraction, seed)
    get_run_logger().info(
        "data %s: %d images of shape %s, %d classes, split %s",
        ds.source,
        len(ds.y),
        ds.shape,
        ds.num_classes,
        split.sizes(),
    )
    return split
