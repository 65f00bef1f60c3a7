"""What the adversarial-training defences share: the inner attack's threat model, robust epoch
selection, and one trainer around :class:`~robustops.training.adversarial.AdversarialObjective`."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import Field

from robustops.attacks import PGD, Attack
from robustops.config import DefenceConfig
from robustops.data import Dataset
from robustops.defences.base import Context, Defence, build_and_fit
from robustops.training.adversarial import AdversarialObjective, robust_probe
from robustops.training.augment import make_transform
from robustops.training.standard import StopRule, TrainResult


class AdversarialConfig(DefenceConfig):
    """Settings shared by the adversarial-training defences: the inner attack's threat model."""

    eps: float = Field(0.1, gt=0, le=1, description="L-inf radius of the training attack")
    warmup_epochs: int = Field(0, ge=0, description="ramp eps linearly from 0 over this many epochs")
    select_steps: int = Field(
        10, ge=1, description="PGD steps of the validation attack that picks the best epoch"
    )


class IterativeConfig(AdversarialConfig):
    """Adversarial training whose inner maximisation is a multi-step PGD."""

    steps: int = Field(10, ge=1, description="PGD steps of the inner maximisation")
    rel_step: float = Field(2.5, gt=0, description="PGD step size as a multiple of eps / steps")


def iterative_pgd(cfg: IterativeConfig, loss: str = "ce"):
    """The inner attack of an iterative defence: PGD of ``cfg.steps`` steps at a given eps."""

    def inner(eps: float, gen: torch.Generator) -> Attack:
        return PGD(eps, steps=cfg.steps, step_size=cfg.rel_step * eps / cfg.steps, loss=loss, generator=gen)

    return inner


class AdversarialDefence(Defence):
    """An adversarial-training defence: subclasses give the objective, and may add a batch of
    training images to watch and a rule that stops training."""

    def objective(self, cfg: Any, ctx: Context) -> AdversarialObjective:
        raise NotImplementedError

    def watch_batch(self, train: Dataset, cfg: Any, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
        return None

    def stop_rule(self, cfg: Any) -> StopRule | None:
        return None

    def extras(self, result: TrainResult, cfg: Any) -> dict[str, float]:
        return {}

    def train(self, train: Dataset, val: Dataset, ctx: Context, cfg: AdversarialConfig) -> TrainResult:
        watched = self.watch_batch(train, cfg, ctx.seed)
        result = build_and_fit(
            train,
            val,
            ctx,
            cfg,
            self.objective(cfg, ctx),
            probe=robust_probe(val, cfg.eps, cfg.select_steps, ctx.seed, ctx.device, watched),
            select="val_pgd_acc",
            stop=self.stop_rule(cfg),
        )
        best = result.history[result.best_epoch - 1]
        result.extras["train/val_pgd_acc"] = best["val_pgd_acc"]
        result.extras |= self.extras(result, cfg)
        return result

    @staticmethod
    def common(cfg: AdversarialConfig, ctx: Context) -> dict[str, Any]:
        """The objective's arguments every adversarial defence passes the same way."""
        reg = cfg.regularize or ctx.regularize
        return {
            "seed": ctx.seed,
            "warmup_epochs": cfg.warmup_epochs,
            "transform": make_transform(ctx.augment, ctx.seed),
            "label_smoothing": reg.label_smoothing,
        }
