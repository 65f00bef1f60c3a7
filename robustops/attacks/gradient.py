"""FGSM and PGD (L-inf) under the attack contract of :mod:`robustops.attacks.base`."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustops.attacks.base import ATTACKS, Attack, input_grad


@ATTACKS.register("fgsm")
class FGSM(Attack):
    """Fast gradient sign method (Goodfellow et al., 2015): one step of size eps."""

    name = "fgsm"

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x + self.eps * input_grad(model, x, y).sign()).clamp(0, 1)


@ATTACKS.register("pgd_linf")
class PGD(Attack):
    """Projected gradient descent in the L-inf ball (Madry et al., 2018).

    Args:
        eps: radius of the L-inf ball.
        steps: gradient steps per restart.
        step_size: absolute step size; default 2.5 * eps / steps.
        random_start: start from a uniform point in the ball (else from x).
        restarts: independent runs; an input counts as broken if any run breaks it.
        seed: seeds the random starts, so a score is reproducible.
    """

    name = "pgd_linf"

    def __init__(
        self,
        eps: float,
        steps: int = 20,
        step_size: float | None = None,
        random_start: bool = True,
        restarts: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__(eps)
        if steps < 1 or restarts < 1:
            raise ValueError(f"steps and restarts must be >= 1, got {steps} and {restarts}")
        if step_size is not None and not step_size > 0:
            raise ValueError(f"step_size must be > 0, got {step_size}")
        self.steps = steps
        self.step_size = step_size if step_size is not None else 2.5 * self.eps / steps
        self.random_start = random_start
        self.restarts = restarts
        self.seed = seed

    def _start(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        # Drawn on the CPU so a seed gives the same start on every device.
        noise = torch.rand(x.shape, generator=gen, device="cpu").to(x.device, x.dtype)
        return (x + (2 * noise - 1) * self.eps).clamp(0, 1)

    def _step(self, x_adv: torch.Tensor, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """One ascent step along the sign of the gradient, projected onto the ball and [0, 1]."""
        x_adv = x_adv + self.step_size * grad.sign()
        return torch.min(torch.max(x_adv, x - self.eps), x + self.eps).clamp(0, 1)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x_adv = self._start(x, gen) if self.random_start else x.clone()
        for _ in range(self.steps):
            x_adv = self._step(x_adv, x, input_grad(model, x_adv, y))
        return x_adv

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed)
        best = self._run(model, x, y, gen)
        for _ in range(self.restarts - 1):
            with torch.no_grad():
                robust = model(best).argmax(1) == y
            if not robust.any():
                break
            cand = self._run(model, x, y, gen)
            best = torch.where(robust.view(-1, *([1] * (x.ndim - 1))), cand, best)
        return best

    def settings(self) -> dict[str, Any]:
        return super().settings() | {
            "steps": self.steps,
            "step_size": self.step_size,
            "random_start": self.random_start,
            "restarts": self.restarts,
            "seed": self.seed,
        }
