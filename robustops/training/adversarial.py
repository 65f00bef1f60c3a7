"""Adversarial training, the min-max optimisation: PGD-AT, FGSM-RS and TRADES.

The inner maximisation uses the same attack classes as evaluation and the adversarial-set export
(:mod:`robustops.attacks`), given a generator so every batch gets a fresh random start. The
attack runs in eval mode (dropout off) and the outer step in train mode.

Epoch selection and early stopping follow robust validation accuracy (PGD or APGD-CE on the
validation split), not clean accuracy: robust accuracy peaks and then falls while clean accuracy still rises
("robust overfitting", Rice et al., 2020).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robustops.attacks import APGD, FGSM, PGD, Attack
from robustops.data import Dataset
from robustops.inference import robust_accuracy
from robustops.training.augment import Transform
from robustops.training.standard import EpochProbe


class AdversarialObjective:
    """``loss(model, x, y)`` of one adversarial-training method, with an eps warm-up.

    Args:
        eps: the L-inf radius of the inner attack once warmed up.
        inner: builds the inner attack at a radius, drawing its random starts from a generator.
        seed: seeds that generator.
        warmup_epochs: eps ramps linearly from 0 over this many epochs.
        transform: the augmentation policy, applied before the attack.
        label_smoothing: of every cross-entropy term.
        clean_weight: mixed batches: w * clean CE + (1 - w) * adversarial CE.
        kl_beta: TRADES: clean CE + beta * KL(clean || adversarial) instead.
        grad_align: weight of GradAlign's term (:func:`misalignment`), added to the loss; 0: none.
    """

    def __init__(
        self,
        eps: float,
        inner: Callable[[float, torch.Generator], Attack],
        seed: int,
        warmup_epochs: int = 0,
        transform: Transform | None = None,
        label_smoothing: float = 0.0,
        clean_weight: float = 0.0,
        kl_beta: float | None = None,
        grad_align: float = 0.0,
    ) -> None:
        self.target, self.inner, self.warmup = eps, inner, warmup_epochs
        self.gen = torch.Generator().manual_seed(seed + 2)
        self.transform = transform
        self.smoothing = label_smoothing
        self.clean_weight, self.kl_beta = clean_weight, kl_beta
        self.grad_align = grad_align
        self.eps = eps

    def begin_epoch(self, epoch: int, epochs: int) -> None:
        """Linear eps warm-up: eps * epoch / warmup_epochs until warmup_epochs, then eps."""
        w = self.warmup
        self.eps = self.target * min(1.0, epoch / w) if w else self.target

    def attack(self) -> Attack:
        """The inner attack at the current eps."""
        return self.inner(self.eps, self.gen)

    def ce(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, label_smoothing=self.smoothing)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.transform is not None:
            x = self.transform(x)
        # Eval mode inside, train mode restored; in float32 even under mixed precision: fp16
        # input gradients underflow to zero, and sign(0) would quietly weaken the attack.
        with torch.autocast(x.device.type, enabled=False):
            x_adv = self.attack()(model, x, y)
        if self.kl_beta is not None:
            clean = model(x)
            robust = F.kl_div(F.log_softmax(model(x_adv), 1), F.softmax(clean, 1), reduction="batchmean")
            return self.ce(clean, y) + self.kl_beta * robust
        w = self.clean_weight
        loss = self.ce(model(x_adv), y)
        loss = (1 - w) * loss + w * self.ce(model(x), y) if w else loss
        if self.grad_align and self.eps > 0:
            with torch.autocast(x.device.type, enabled=False):
                loss = loss + self.grad_align * misalignment(model, x, y, self.eps, self.gen)
        return loss


def misalignment(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, gen: torch.Generator
) -> torch.Tensor:
    """GradAlign's regulariser (Andriushchenko & Flammarion, 2020): the batch's mean of 1 - the
    cosine between the input gradient of the loss at x and at a uniform random point of the eps
    ball around it, differentiable in the weights through the second. Where the loss is locally
    linear the two agree and FGSM's one step finds what PGD finds; catastrophic overfitting is the
    loss bending inside the ball, so the term keeps a single-step attack honest."""
    at_x = x.detach().requires_grad_(True)
    g_x = torch.autograd.grad(F.cross_entropy(model(at_x), y), at_x)[0].detach()
    noise = (torch.rand(x.shape, generator=gen, device="cpu").to(x.device, x.dtype) * 2 - 1) * eps
    at_noise = (x.detach() + noise).requires_grad_(True)
    g_noise = torch.autograd.grad(F.cross_entropy(model(at_noise), y), at_noise, create_graph=True)[0]
    # cosine_similarity's own floor on the norms keeps an all-zero gradient (a saturated image)
    # from dividing by zero.
    return (1 - F.cosine_similarity(g_x.flatten(1), g_noise.flatten(1), dim=1)).mean()


def robust_probe(
    val: Dataset,
    eps: float,
    steps: int,
    seed: int,
    device: str,
    watch: tuple[np.ndarray, np.ndarray] | None = None,
    attack: str = "pgd",
    samples: int = 0,
) -> EpochProbe:
    """Per-epoch robust accuracy at ``eps`` on the validation split, under PGD (``val_pgd_acc``)
    or APGD-CE (``val_apgd_acc``) of ``steps`` steps, over a seeded sample of ``samples`` images
    (0: all); the adversarial defences select the best epoch on it. Given a fixed batch of training
    images to watch, also PGD and FGSM accuracy on it (``watch_pgd_acc``, ``watch_fgsm_acc``: what
    FGSM-RS's catastrophic-overfitting stop reads)."""
    if attack not in ("pgd", "apgd"):
        raise ValueError(f"the validation attack must be pgd or apgd, got {attack!r}")
    vx, vy = val.x, val.y
    if 0 < samples < len(vy):
        idx = np.sort(np.random.default_rng(seed).permutation(len(vy))[:samples])
        vx, vy = vx[idx], vy[idx]

    def pgd() -> PGD:
        return PGD(eps, steps=steps, step_size=2.5 * eps / steps, seed=seed)

    def selecting() -> Attack:
        return APGD(eps, steps=steps, seed=seed) if attack == "apgd" else pgd()

    def probe(model: nn.Module) -> dict[str, float]:
        out = {f"val_{attack}_acc": robust_accuracy(model, selecting(), vx, vy, device=device)}
        if watch is not None:
            # Both: catastrophic overfitting shows as FGSM accuracy high while PGD accuracy collapses.
            out["watch_pgd_acc"] = robust_accuracy(model, pgd(), watch[0], watch[1], device=device)
            out["watch_fgsm_acc"] = robust_accuracy(model, FGSM(eps), watch[0], watch[1], device=device)
        return out

    return probe


__all__ = ["AdversarialObjective", "misalignment", "robust_probe"]
