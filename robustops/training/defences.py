"""The defence registry: each defence is a config class plus a training function.

A config names defences (``defences: [pgd_at, trades, ...]``); each is trained on the same split
as the baseline and scored with the same scorecard. A plug-in registers its own::

    @register("my_defence", MyDefenceConfig)
    def train_my_defence(train, val, ctx, cfg) -> TrainResult: ...

where ``MyDefenceConfig`` subclasses :class:`robustops.config.DefenceConfig`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from robustops.config import (
    AdversarialConfig,
    AugmentConfig,
    DefenceConfig,
    DistillationConfig,
    FGSMRSConfig,
    ModelConfig,
    PGDATConfig,
    RegularizeConfig,
    SmoothingConfig,
    StandardConfig,
    TRADESConfig,
    TrainConfig,
)
from robustops.data import Dataset
from robustops.registry import Registry
from robustops.training.adversarial import (
    AdversarialObjective,
    guard_batch,
    overfitting_guard,
    robust_monitor,
)
from robustops.training.augment import make_loss, make_transform
from robustops.training.distillation import SoftLabelCE, TemperatureCE
from robustops.training.regularizers import with_grad_penalty
from robustops.training.smoothing import NoiseCE, noise_monitor
from robustops.training.standard import LossFn, TrainResult, build, fit


@dataclass(frozen=True)
class Context:
    """What every defence trains with: the shared model, training and augmentation settings."""

    model: ModelConfig
    train: TrainConfig
    augment: AugmentConfig
    regularize: RegularizeConfig
    seed: int = 0
    device: str = "cpu"


Trainer = Callable[[Dataset, Dataset, Context, DefenceConfig], TrainResult]


@dataclass(frozen=True)
class Defence:
    name: str
    config: type[DefenceConfig]
    train: Trainer


DEFENCES: Registry[Defence] = Registry("defence")


def register(name: str, config: type[DefenceConfig]) -> Callable[[Trainer], Trainer]:
    def add(fn: Trainer) -> Trainer:
        DEFENCES.register(name)(Defence(name, config, fn))
        return fn

    return add


def _settings(ctx: Context, cfg: DefenceConfig) -> tuple[TrainConfig, RegularizeConfig]:
    train = ctx.train if cfg.epochs is None else ctx.train.model_copy(update={"epochs": cfg.epochs})
    return train, cfg.regularize or ctx.regularize


def _fit(
    train: Dataset,
    val: Dataset,
    ctx: Context,
    cfg: DefenceConfig,
    loss_fn: LossFn,
    model_cfg: ModelConfig | None = None,
    **kw,
) -> TrainResult:
    """Builds the model (spectral-normalized if asked), adds the gradient penalty, trains."""
    tcfg, reg = _settings(ctx, cfg)
    model, spec = build(train, model_cfg or ctx.model, ctx.seed, reg.spectral_norm)
    loss_fn = with_grad_penalty(loss_fn, reg.grad_penalty)
    result = fit(model, train, val, tcfg, ctx.seed, loss_fn, ctx.device, desc=f"train {cfg.run_name}", **kw)
    result.spec = spec
    return result


def train_defence(train: Dataset, val: Dataset, ctx: Context, cfg: DefenceConfig) -> TrainResult:
    """Trains the defence ``cfg`` names; the result's ``seconds`` cover the whole defence."""
    start = time.perf_counter()
    result = DEFENCES.get(cfg.name).train(train, val, ctx, cfg)
    result.seconds = time.perf_counter() - start
    return result


@register("standard", StandardConfig)
def train_standard(train: Dataset, val: Dataset, ctx: Context, cfg: DefenceConfig) -> TrainResult:
    """Cross-entropy under the augmentation policy (AugMix's JSD loss included): the baseline."""
    reg = _settings(ctx, cfg)[1]
    return _fit(train, val, ctx, cfg, make_loss(ctx.augment, ctx.seed, reg.label_smoothing))


def _adversarial(train: Dataset, val: Dataset, ctx: Context, cfg: AdversarialConfig) -> TrainResult:
    reg = _settings(ctx, cfg)[1]
    objective = AdversarialObjective(
        cfg, ctx.seed, make_transform(ctx.augment, ctx.seed), reg.label_smoothing
    )
    guard = guard_batch(train, cfg, ctx.seed) if isinstance(cfg, FGSMRSConfig) else None
    result = _fit(
        train,
        val,
        ctx,
        cfg,
        objective,
        monitor=robust_monitor(val, cfg, ctx.seed, ctx.device, guard),
        select="val_pgd_acc",
        stop=overfitting_guard(cfg) if isinstance(cfg, FGSMRSConfig) else None,
    )
    best = result.history[result.best_epoch - 1]
    result.extras["train/val_pgd_acc"] = best["val_pgd_acc"]
    if isinstance(cfg, FGSMRSConfig):
        result.extras["train/guard_triggered"] = float(result.stop_reason is not None)
    return result


register("pgd_at", PGDATConfig)(_adversarial)
register("fgsm_rs", FGSMRSConfig)(_adversarial)
register("trades", TRADESConfig)(_adversarial)


@register("distillation", DistillationConfig)
def train_distillation(train: Dataset, val: Dataset, ctx: Context, cfg: DistillationConfig) -> TrainResult:
    """Teacher at temperature T on hard labels, then the student on its soft labels at T."""
    reg = _settings(ctx, cfg)[1]
    transform = make_transform(ctx.augment, ctx.seed)
    teacher = _fit(train, val, ctx, cfg, TemperatureCE(cfg.temperature, transform, reg.label_smoothing))
    student = _fit(
        train,
        val,
        ctx,
        cfg,
        SoftLabelCE(teacher.model, cfg.temperature, make_transform(ctx.augment, ctx.seed + 10)),
        model_cfg=cfg.student,
    )
    student.extras["distill/teacher_val_acc"] = teacher.best_val_acc
    student.extras["distill/temperature"] = cfg.temperature
    return student


@register("smoothing", SmoothingConfig)
def train_smoothing(train: Dataset, val: Dataset, ctx: Context, cfg: SmoothingConfig) -> TrainResult:
    """The base classifier of randomized smoothing, trained under Gaussian noise at sigma."""
    reg = _settings(ctx, cfg)[1]
    loss = NoiseCE(cfg.sigma, ctx.seed, make_transform(ctx.augment, ctx.seed), reg.label_smoothing)
    result = _fit(
        train,
        val,
        ctx,
        cfg,
        loss,
        monitor=noise_monitor(val, cfg.sigma, ctx.seed, ctx.device),
        select="val_noise_acc",
    )
    result.extras["train/val_noise_acc"] = result.history[result.best_epoch - 1]["val_noise_acc"]
    return result
