"""Training tasks."""

from __future__ import annotations

from prefect import task
from prefect.logging import get_run_logger

from robustops.config import AugmentConfig, ModelConfig, TrainConfig
from robustops.data import Dataset
from robustops.training import TrainResult, train_baseline
from robustops.training.augment import make_loss
from tasks.caching import hash_inputs


@task(name="train-model", cache_key_fn=hash_inputs, persist_result=True)
def train_model(
    train: Dataset,
    val: Dataset,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    augment: AugmentConfig,
    seed: int,
    device: str,
) -> TrainResult:
    """Trains under the augmentation policy; a rerun with the same data, config, seed and code
    reuses the result."""
    result = train_baseline(train, val, model_cfg, train_cfg, seed, device, loss_fn=make_loss(augment, seed))
    get_run_logger().info(
        "trained %s (augment: %s): best epoch %d, val acc %.4f, %.1fs%s",
        model_cfg.name,
        augment.policy.value,
        result.best_epoch,
        result.best_val_acc,
        result.seconds,
        " (early stop)" if result.stopped_early else "",
    )
    return result
