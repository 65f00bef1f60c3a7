"""N-FGSM ("Make some noise", de Jorge et al., 2022): single-step adversarial training from a
wider noise start, its step not projected back onto the eps ball."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from robustops.attacks import Attack
from robustops.attacks.base import input_grad
from robustops.defences.adversarial import AdversarialConfig, AdversarialDefence
from robustops.defences.base import Context, register
from robustops.training.adversarial import AdversarialObjective


class NFGSMConfig(AdversarialConfig):
    """N-FGSM ("Make some noise", de Jorge et al., 2022)."""

    name: Literal["n_fgsm"] = "n_fgsm"
    noise: float = Field(2.0, gt=0, description="the start's uniform noise half-width, as a multiple of eps")
    alpha: float = Field(1.0, gt=0, description="FGSM step size as a multiple of eps")
    clean_weight: float = Field(
        0.0, ge=0, le=1, description="mixed batches: loss = w * clean CE + (1 - w) * adversarial CE"
    )


class NoisyFGSM(Attack):
    """N-FGSM's training perturbation: x plus uniform noise of half-width ``noise``, clipped to
    [0, 1]; one signed gradient step of ``step`` from there; clipped to [0, 1] again.

    It is not projected onto the eps ball: the perturbation reaches ``noise + step`` (3 eps by
    default). The wider noise, and keeping the whole step, is what keeps single-step training
    from catastrophic overfitting (de Jorge et al.): FGSM-RS projects its step back and needs a
    stop rule instead. Being outside the ball, it trains and never scores: it is not among the
    registered attacks."""

    name = "n_fgsm"

    def __init__(self, eps: float, noise: float, step: float, generator: torch.Generator) -> None:
        super().__init__(eps)
        self.noise, self.step, self.generator = noise, step, generator

    def perturb(self, model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # Drawn on the CPU so a seed gives the same noise on every device.
        u = torch.rand(x.shape, generator=self.generator, device="cpu").to(x.device, x.dtype)
        start = (x + (2 * u - 1) * self.noise).clamp(0, 1)
        return (start + self.step * input_grad(model, start, y).sign()).clamp(0, 1)


@register
class NFGSM(AdversarialDefence):
    name, settings = "n_fgsm", NFGSMConfig

    def objective(self, cfg: NFGSMConfig, ctx: Context) -> AdversarialObjective:
        def inner(eps: float, gen: torch.Generator) -> Attack:
            return NoisyFGSM(eps, cfg.noise * eps, cfg.alpha * eps, gen)

        return AdversarialObjective(cfg.eps, inner, clean_weight=cfg.clean_weight, **self.common(cfg, ctx))
