"""Defensive distillation (Papernot et al., 2016): teacher and student at temperature T, the
student deployed at T = 1. It is the classic case of a defence that masks gradients: plain
cross-entropy PGD finds it robust, the margin-loss attacks and masking checks do not."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from robustops.config import DefenceConfig, ModelConfig
from robustops.data import Dataset
from robustops.defences.base import Context, Defence, build_and_fit, register
from robustops.training.augment import make_transform
from robustops.training.distillation import SoftLabelCE, TemperatureCE
from robustops.training.standard import TrainResult


class DistillationConfig(DefenceConfig):
    """Defensive distillation (Papernot et al., 2016): teacher and student trained at temperature T,
    the student deployed at T = 1."""

    name: Literal["distillation"] = "distillation"
    temperature: float = Field(50.0, gt=0, description="softmax temperature T of teacher and student")
    student: ModelConfig | None = Field(None, description="the student's architecture (default: model)")


@register
class Distillation(Defence):
    name, settings = "distillation", DistillationConfig

    def train(self, train: Dataset, val: Dataset, ctx: Context, cfg: DistillationConfig) -> TrainResult:
        """Teacher at temperature T on hard labels, then the student on its soft labels at T."""
        reg = cfg.regularize or ctx.regularize
        transform = make_transform(ctx.augment, ctx.seed)
        teacher = build_and_fit(
            train, val, ctx, cfg, TemperatureCE(cfg.temperature, transform, reg.label_smoothing)
        )
        student = build_and_fit(
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
