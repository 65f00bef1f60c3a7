"""FGSM from a random start ("Fast is better than free", Wong et al., 2020), stopped on
catastrophic overfitting."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from robustops.attacks import PGD, Attack
from robustops.data import Dataset
from robustops.defences.adversarial import AdversarialConfig, AdversarialDefence
from robustops.defences.base import Context, register
from robustops.training.adversarial import AdversarialObjective
from robustops.training.standard import StopRule, TrainResult


class FGSMRSConfig(AdversarialConfig):
    """FGSM from a random start ("Fast is better than free", Wong et al., 2020)."""

    name: Literal["fgsm_rs"] = "fgsm_rs"
    clean_weight: float = Field(
        0.0, ge=0, le=1, description="mixed batches: loss = w * clean CE + (1 - w) * adversarial CE"
    )
    alpha: float = Field(1.25, gt=0, description="FGSM step size as a multiple of eps")
    clip_start: bool = Field(
        False,
        description="clip the random start to [0, 1] before the gradient; False (default) takes it "
        "at x + noise unclipped, as Wong et al. do (a clipped start on black backgrounds drifts into "
        "gradient masking)",
    )
    grad_align: float = Field(
        0.0,
        ge=0,
        description="weight of GradAlign's gradient-alignment term (Andriushchenko & Flammarion, 2020: "
        "1 - cosine of the input gradients at x and at a random point of the ball); 0 (default): off",
    )
    overfit_samples: int = Field(
        256, ge=1, description="training images PGD and FGSM attack each epoch to watch for overfitting"
    )
    overfit_drop: float = Field(
        0.5, gt=0, le=1, description="stop when their PGD accuracy falls below (1 - overfit_drop) x its best"
    )
    overfit_gap: float = Field(
        0.3, ge=0, le=1, description="... and FGSM accuracy exceeds PGD accuracy by more than this"
    )
    overfit_min: float = Field(
        0.1, ge=0, le=1, description="... once that PGD accuracy has reached this (nothing collapses before)"
    )


@register
class FGSMRS(AdversarialDefence):
    name, settings = "fgsm_rs", FGSMRSConfig

    def objective(self, cfg: FGSMRSConfig, ctx: Context) -> AdversarialObjective:
        def inner(eps: float, gen: torch.Generator) -> Attack:
            # FGSM from a uniform start in the ball (unclipped unless clip_start), step
            # alpha * eps, projected back onto the ball and the image range.
            return PGD(eps, steps=1, step_size=cfg.alpha * eps, generator=gen, clip_start=cfg.clip_start)

        return AdversarialObjective(
            cfg.eps, inner, clean_weight=cfg.clean_weight, grad_align=cfg.grad_align, **self.common(cfg, ctx)
        )

    def watch_batch(self, train: Dataset, cfg: FGSMRSConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """A fixed, seeded sample of ``overfit_samples`` training images, watched for overfitting."""
        n = min(cfg.overfit_samples, len(train.y))
        idx = np.sort(np.random.default_rng(seed).permutation(len(train.y))[:n])
        return train.x[idx], train.y[idx]

    def stop_rule(self, cfg: FGSMRSConfig) -> StopRule:
        return overfitting_stop(cfg)

    def extras(self, result: TrainResult, cfg: FGSMRSConfig) -> dict[str, float]:
        return {"train/overfitting_stopped": float(result.stop_reason is not None)}


def overfitting_stop(cfg: FGSMRSConfig) -> StopRule:
    """Catastrophic overfitting: within an epoch or two, FGSM training can lose its robustness to
    PGD while accuracy under FGSM soars, the model having learnt to defeat the one step it is
    trained on (Wong et al., 2020). On the watched batch of training images that shows as PGD
    accuracy collapsing while FGSM accuracy stays high, so the rule needs both, once PGD accuracy
    has reached ``overfit_min``: PGD accuracy below (1 - ``overfit_drop``) times its best, and
    FGSM accuracy above PGD accuracy by more than ``overfit_gap``. The gap keeps the rule quiet
    when noisy training merely dips both. :func:`~robustops.training.standard.fit` then rolls back
    to the best epoch (selected on validation PGD accuracy) and stops."""

    def stop(history: list[dict[str, float]]) -> str | None:
        pgd = [h["watch_pgd_acc"] for h in history]
        fgsm = history[-1]["watch_fgsm_acc"]
        best = max(pgd)
        # Early FGSM training often starts with no PGD robustness at all and grows it as the
        # learning rate settles: nothing has collapsed until something grew.
        if best < cfg.overfit_min:
            return None
        if pgd[-1] < (1 - cfg.overfit_drop) * best and fgsm - pgd[-1] > cfg.overfit_gap:
            return (
                f"catastrophic overfitting at epoch {len(pgd)}: PGD accuracy on the watched training "
                f"images fell from {best:.3f} to {pgd[-1]:.3f} while FGSM accuracy is {fgsm:.3f}"
            )
        return None

    return stop
