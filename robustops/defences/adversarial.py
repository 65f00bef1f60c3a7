"""What the adversarial-training defences share: the inner attack's threat model, robust epoch
selection, and one trainer around :class:`~robustops.training.adversarial.AdversarialObjective`."""

from __future__ import annotations

import math
from typing import Any, Literal

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
    select_attack: Literal["pgd", "apgd"] = Field(
        "pgd",
        description="the validation attack that picks the best epoch: pgd (from a random start, step "
        "2.5 eps / steps) or apgd (APGD-CE, AutoAttack's first member, whose accuracy moves between "
        "epochs where PGD's barely does)",
    )
    select_steps: int = Field(
        10, ge=1, description="steps of the validation attack that picks the best epoch"
    )
    select_samples: int = Field(
        0, ge=0, description="validation images that attack scores, a seeded sample (0: all)"
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
        selected = f"val_{cfg.select_attack}_acc"
        result = build_and_fit(
            train,
            val,
            ctx,
            cfg,
            self.objective(cfg, ctx),
            probe=robust_probe(
                val,
                cfg.eps,
                cfg.select_steps,
                ctx.seed,
                ctx.device,
                watched,
                cfg.select_attack,
                cfg.select_samples,
            ),
            select=selected,
            stop=first_reason(collapse_stop(val, cfg), self.stop_rule(cfg)),
        )
        result.extras[f"train/{selected}"] = result.history[result.best_epoch - 1][selected]
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


# Two epochs, so a single bad epoch while the learning rate peaks does not end a run that recovers.
COLLAPSE_EPOCHS = 2


def collapse_stop(val: Dataset, cfg: AdversarialConfig) -> StopRule:
    """Collapse: an inner attack too strong for the untrained model (a large eps from the first
    epoch, a high learning rate) can leave adversarial training predicting one class, its loss
    stuck at a uniform guess's ln(classes), for the rest of a run that may take hours. The rule
    fires when, for ``COLLAPSE_EPOCHS`` epochs in a row, validation accuracy is no better than the
    largest class's share (plus 0.01) and the training loss is at least 0.98 ln(classes)."""
    majority = float(np.bincount(val.y).max() / len(val.y))
    uniform = math.log(val.num_classes)

    def stop(history: list[dict[str, float]]) -> str | None:
        last = history[-COLLAPSE_EPOCHS:]
        if len(last) < COLLAPSE_EPOCHS:
            return None
        if all(h["val_acc"] <= majority + 0.01 and h["loss"] >= 0.98 * uniform for h in last):
            return (
                f"training collapsed at epoch {len(history)}: for {COLLAPSE_EPOCHS} epochs the model "
                f"predicted one class (validation accuracy {last[-1]['val_acc']:.3f}, the largest "
                f"class's share {majority:.3f}) at a training loss of {last[-1]['loss']:.3f}, a uniform "
                f"guess's ln({val.num_classes}) = {uniform:.3f}. The inner attack at eps {cfg.eps} is "
                "too strong for the untrained model: ramp it up with warmup_epochs (e.g. 3) or lower "
                "train.lr"
            )
        return None

    return stop


def first_reason(*rules: StopRule | None) -> StopRule:
    """The stop rule that asks each of ``rules`` in turn and returns the first reason given."""
    present = [r for r in rules if r is not None]

    def stop(history: list[dict[str, float]]) -> str | None:
        return next((reason for r in present if (reason := r(history))), None)

    return stop
