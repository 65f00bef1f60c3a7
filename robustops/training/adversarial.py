"""Adversarial training, the min-max optimisation: PGD-AT, FGSM-RS and TRADES.

The inner maximisation uses the same attack classes as evaluation and the adversarial-set export
(:mod:`robustops.attacks`), given a generator so every batch gets a fresh random start. The
attack runs in eval mode (dropout off) and the outer step in train mode.

Epoch selection and early stopping follow robust validation accuracy (PGD on the validation
split), not clean accuracy: robust accuracy peaks and then falls while clean accuracy still rises
("robust overfitting", Rice et al., 2020).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robustops.attacks import FGSM, PGD
from robustops.config import AdversarialConfig, FGSMRSConfig, PGDATConfig, TRADESConfig
from robustops.data import Dataset
from robustops.evaluation.adversarial import robust_accuracy
from robustops.training.augment import Transform
from robustops.training.standard import Monitor, StopRule


class AdversarialObjective:
    """``loss(model, x, y)`` of one adversarial-training method, with an eps warm-up.

    Args:
        cfg: the defence's settings.
        seed: seeds the attack's random starts.
        transform: the augmentation policy, applied before the attack.
        label_smoothing: of every cross-entropy term.
    """

    def __init__(
        self,
        cfg: AdversarialConfig,
        seed: int,
        transform: Transform | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        self.cfg = cfg
        self.gen = torch.Generator().manual_seed(seed + 2)
        self.transform = transform
        self.smoothing = label_smoothing
        self.eps = cfg.eps

    def begin_epoch(self, epoch: int, epochs: int) -> None:
        """Linear eps warm-up: eps * epoch / warmup_epochs until warmup_epochs, then eps."""
        w = self.cfg.warmup_epochs
        self.eps = self.cfg.eps * min(1.0, epoch / w) if w else self.cfg.eps

    def attack(self) -> PGD:
        """The inner attack at the current eps."""
        c = self.cfg
        if isinstance(c, FGSMRSConfig):
            # FGSM from a uniform start in the ball (not clipped to [0, 1], as Wong et al. do), step
            # alpha * eps, projected back onto the ball and the image range.
            return PGD(
                self.eps, steps=1, step_size=c.alpha * self.eps, generator=self.gen, clip_start=c.clip_start
            )
        loss = "kl" if isinstance(c, TRADESConfig) else "ce"
        return PGD(
            self.eps, steps=c.steps, step_size=c.rel_step * self.eps / c.steps, loss=loss, generator=self.gen
        )

    def ce(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, label_smoothing=self.smoothing)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.transform is not None:
            x = self.transform(x)
        x_adv = self.attack()(model, x, y)  # eval mode inside, train mode restored
        if isinstance(self.cfg, TRADESConfig):
            clean = model(x)
            robust = F.kl_div(F.log_softmax(model(x_adv), 1), F.softmax(clean, 1), reduction="batchmean")
            return self.ce(clean, y) + self.cfg.beta * robust
        w = getattr(self.cfg, "clean_weight", 0.0)
        loss = self.ce(model(x_adv), y)
        return (1 - w) * loss + w * self.ce(model(x), y) if w else loss


def robust_monitor(
    val: Dataset,
    cfg: AdversarialConfig,
    seed: int,
    device: str,
    guard: tuple[np.ndarray, np.ndarray] | None = None,
) -> Monitor:
    """Per-epoch PGD accuracy on the validation split (``val_pgd_acc``, selects the best epoch)
    and, for FGSM-RS, PGD and FGSM accuracy on a fixed batch of training images
    (``guard_pgd_acc``, ``guard_fgsm_acc``)."""

    def attack() -> PGD:
        return PGD(cfg.eps, steps=cfg.select_steps, step_size=2.5 * cfg.eps / cfg.select_steps, seed=seed)

    def monitor(model: nn.Module) -> dict[str, float]:
        out = {"val_pgd_acc": robust_accuracy(model, attack(), val.x, val.y, device=device)}
        if guard is not None:
            # Both: catastrophic overfitting shows as FGSM accuracy high while PGD accuracy collapses.
            out["guard_pgd_acc"] = robust_accuracy(model, attack(), guard[0], guard[1], device=device)
            out["guard_fgsm_acc"] = robust_accuracy(model, FGSM(cfg.eps), guard[0], guard[1], device=device)
        return out

    return monitor


def overfitting_guard(cfg: FGSMRSConfig) -> StopRule:
    """Catastrophic overfitting: within an epoch or two, FGSM training can lose its robustness to
    PGD while accuracy under FGSM soars, the model having learnt to defeat the one step it is
    trained on (Wong et al., 2020). On the guard batch that shows as PGD accuracy collapsing while
    FGSM accuracy stays high, so both must hold, once PGD accuracy has reached ``guard_min``: PGD accuracy below (1 - guard_drop) times its best,
    and FGSM accuracy above PGD accuracy by more than guard_gap. The gap keeps the guard quiet when
    noisy training merely dips both. :func:`~robustops.training.standard.fit` then rolls back to
    the best epoch (selected on validation PGD accuracy) and stops."""

    def stop(history: list[dict[str, float]]) -> str | None:
        pgd = [h["guard_pgd_acc"] for h in history]
        fgsm = history[-1]["guard_fgsm_acc"]
        best = max(pgd)
        # Early FGSM training often starts with no PGD robustness at all and grows it as the
        # learning rate settles (MNIST at eps 0.3 does): nothing has collapsed until something grew.
        if best < cfg.guard_min:
            return None
        if pgd[-1] < (1 - cfg.guard_drop) * best and fgsm - pgd[-1] > cfg.guard_gap:
            return (
                f"catastrophic overfitting at epoch {len(pgd)}: PGD accuracy on the guard batch fell from "
                f"{best:.3f} to {pgd[-1]:.3f} while FGSM accuracy is {fgsm:.3f}"
            )
        return None

    return stop


def guard_batch(train: Dataset, cfg: FGSMRSConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed, seeded sample of training images for the overfitting guard."""
    n = min(cfg.guard_samples, len(train.y))
    idx = np.sort(np.random.default_rng(seed).permutation(len(train.y))[:n])
    return train.x[idx], train.y[idx]


__all__ = [
    "AdversarialObjective",
    "FGSMRSConfig",
    "PGDATConfig",
    "TRADESConfig",
    "guard_batch",
    "overfitting_guard",
    "robust_monitor",
]
