"""Training tasks: the baseline and every configured defence, one task run each."""

from __future__ import annotations

from prefect import task

from adapters.caching import hash_inputs
from adapters.log import logger
from robustops.config import AugmentConfig, DefenceConfig, ModelConfig, RegularizeConfig, TrainConfig
from robustops.data import Dataset
from robustops.defences import Context, train_defence
from robustops.training import TrainResult


@task(
    name="train-model",
    task_run_name="train-{defence.run_name}",
    cache_key_fn=hash_inputs,
    persist_result=True,
)
def train_model(
    train: Dataset,
    val: Dataset,
    defence: DefenceConfig,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    augment: AugmentConfig,
    regularize: RegularizeConfig,
    seed: int,
    device: str,
) -> TrainResult:
    """Trains one model (the baseline is the ``standard`` defence); a rerun with the same data,
    settings, seed and code reuses the result."""
    ctx = Context(model_cfg, train_cfg, augment, regularize, seed, device)
    result = train_defence(train, val, ctx, defence)
    logger().info(
        "trained %s (%s, augment: %s): best epoch %d of %d, val acc %.4f, %.1fs%s",
        defence.run_name,
        defence.name,
        augment.policy.value,
        result.best_epoch,
        len(result.history),
        result.best_val_acc,
        result.seconds,
        f" ({result.stop_reason})" if result.stop_reason else " (early stop)" if result.stopped_early else "",
    )
    return result
