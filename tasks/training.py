"""Training tasks."""

from __future__ import annotations

from prefect import task
from prefect.logging import get_run_logger

from robustops.config import ModelConfig, TrainConfig
from robustops.data import Split
from robustops.training import TrainResult, train_baseline
from tasks.caching import hash_inputs


@task(name="train-baseline", cache_key_fn=hash_inputs, persist_result=True)
def train_model(
    split: Split, model_cfg: ModelConfig, train_cfg: TrainConfig, seed: int, device: str
) -> TrainResult:
    """Trains the baseline; a rerun with the same data, config, seed and code reuses the result."""
    result = train_baseline(split.train, split.val, model_cfg, train_cfg, seed, device)
    get_run_logger().info(
        "trained %s: best epoch %d, val acc %.4f, %.1fs%s",
        model_cfg.name,
        result.best_epoch,
        result.best_val_acc,
        result.seconds,
        " (early stop)" if result.stopped_early else "",
    )
    return result
