"""Training tasks: the baseline and every configured defence, one task run each."""

from __future__ import annotations

from typing import Any

from prefect import task

from adapters import handoff, sources
from adapters.caching import hash_inputs
from adapters.log import logger
from adapters.retries import is_io_error
from robustops.config import (
    AugmentConfig,
    Config,
    DefenceConfig,
    FinetuneConfig,
    ModelConfig,
    RegularizeConfig,
    TrainConfig,
)
from robustops.data import Dataset, Split
from robustops.defences import Context, train_defence
from robustops.models import Blueprint
from robustops.sources import SourceModel
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
    start: SourceModel | None = None,
    start_blueprint: Blueprint | None = None,
    finetune: FinetuneConfig | None = None,
) -> TrainResult:
    """Trains one model (the baseline is the ``standard`` defence); a rerun with the same data,
    settings, seed and code reuses the result. ``start``: a user's model (prepared), which every
    defence fine-tunes under ``finetune`` and the baseline keeps as it is."""
    ctx = Context(
        model_cfg,
        train_cfg,
        augment,
        regularize,
        seed,
        device,
        start,
        finetune or FinetuneConfig(),
        start_blueprint,
    )
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


@task(name="prepare-model-source", retries=2, retry_delay_seconds=1, retry_condition_fn=is_io_error)
def prepare_source(cfg: Config, split: Split) -> tuple[SourceModel, Blueprint, dict[str, Any], Split]:
    """The user's model (``model.source``) prepared on the training split (preprocessing folded
    in, output contract checked), the blueprint its fine-tuned copies are saved under, facts
    about it (lineage, what the check found), and the split labelled with its classes. Taken
    from the CLI's pre-flight check when it prepared them."""
    held = handoff.take(handoff.source_split_key(cfg.model, cfg.data, cfg.seed, cfg.limits))
    model, blueprint, info, split = held or sources.open_for_split(cfg, split)
    for note in info["report"].warnings:
        logger().warning("%s: %s", info["model"], note)
    return model, blueprint, info, split
