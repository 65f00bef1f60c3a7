"""Plain training under the augmentation policy: what the baseline gets."""

from __future__ import annotations

from typing import Literal

from robustops.config import DefenceConfig
from robustops.data import Dataset
from robustops.defences.base import Context, Defence, build_and_fit, register
from robustops.training.augment import make_loss
from robustops.training.standard import TrainResult


class StandardConfig(DefenceConfig):
    """Plain training under the augmentation policy (what the baseline gets)."""

    name: Literal["standard"] = "standard"


@register
class Standard(Defence):
    name, settings = "standard", StandardConfig

    def train(self, train: Dataset, val: Dataset, ctx: Context, cfg: StandardConfig) -> TrainResult:
        """Cross-entropy under the augmentation policy (AugMix's JSD loss included): the baseline."""
        reg = cfg.regularize or ctx.regularize
        return build_and_fit(train, val, ctx, cfg, make_loss(ctx.augment, ctx.seed, reg.label_smoothing))
