"""Plain training under the augmentation policy: what the baseline gets."""

from __future__ import annotations

import copy
from typing import Literal

from robustops.config import DefenceConfig
from robustops.data import Dataset
from robustops.defences.base import Context, Defence, build_and_fit, register
from robustops.inference import predict
from robustops.training.augment import make_loss
from robustops.training.standard import TrainResult


class StandardConfig(DefenceConfig):
    """Plain training under the augmentation policy (what the baseline gets)."""

    name: Literal["standard"] = "standard"


@register
class Standard(Defence):
    name, settings = "standard", StandardConfig

    def train(self, train: Dataset, val: Dataset, ctx: Context, cfg: StandardConfig) -> TrainResult:
        """Cross-entropy under the augmentation policy (AugMix's JSD loss included): the baseline.
        With a model of the user's, the baseline is that model as it is: no training."""
        if ctx.start is not None and ctx.start_blueprint is not None:
            model = copy.deepcopy(ctx.start).to(ctx.device).eval()
            acc = float((predict(model, val.x, device=ctx.device).argmax(1) == val.y).mean())
            return TrainResult(model, best_val_acc=acc, blueprint=ctx.start_blueprint)
        reg = cfg.regularize or ctx.regularize
        return build_and_fit(train, val, ctx, cfg, make_loss(ctx.augment, ctx.seed, reg.label_smoothing))
