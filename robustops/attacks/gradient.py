"""FGSM and PGD (L-inf) under the attack contract of :mod:`robustops.attacks.base`."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustops.attacks.base import ATTACKS, Attack, input_grad


def _check_loss(loss: str) -> str:
    from robustops.attacks.losses import LOSSES

    if loss not in LOSSES:
        raise ValueError(f"unknown attack loss {loss!r}; known: {', '.join(LOSSES.names())}")
    return loss


@ATTACKS.register("fgsm")
class FGSM(Attack):
    """Fast gradient sign method (Goodfellow et al., 2015): one step of size eps.

    Args:
        eps: radius of the L-inf ball.
        loss: the loss ascended, a name in ``robustops.attacks.losses.LOSSES`` (default "ce").
    """

    name = "fgsm"

    def __init__(self, eps: float, loss: str = "ce") -> None:
        super().__init__(eps)
        self.loss = _check_loss(loss)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x + self.eps * input_grad(model, x, y, self.loss).sign()).clamp(0, 1)

    def settings(self) -> dict[str, Any]:
        return super().settings() | {"loss": self.loss}


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
        loss: the loss ascended, a name in ``robustops.attacks.losses.LOSSES``: "ce" (default),
            "cw" or "dlr" (logit margins, immune to softmax saturation), "kl" (TRADES).
        generator: a random stream to draw the starts from instead of reseeding with ``seed`` on
            every call; adversarial training passes one so each batch gets a fresh start.
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
        loss: str = "ce",
        generator: torch.Generator | None = None,
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
        self.loss = _check_loss(loss)
        self.generator = generator

    def _start(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        # Drawn on the CPU so a seed gives the same start on every device.
        if self.loss == "kl":
            # TRADES starts next to x: the KL to the clean prediction has zero gradient at x itself.
            noise = torch.randn(x.shape, generator=gen, device="cpu").to(x.device, x.dtype)
            return (x + 0.001 * noise).clamp(0, 1)
        noise = torch.rand(x.shape, generator=gen, device="cpu").to(x.device, x.dtype)
        return (x + (2 * noise - 1) * self.eps).clamp(0, 1)

    def _step(self, x_adv: torch.Tensor, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """One ascent step along the sign of the gradient, projected onto the ball and [0, 1]."""
        x_adv = x_adv + self.step_size * grad.sign()
        return torch.min(torch.max(x_adv, x - self.eps), x + self.eps).clamp(0, 1)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        ref = None
        if self.loss == "kl":
            with torch.no_grad():
                ref = model(x)
        x_adv = self._start(x, gen) if self.random_start or self.loss == "kl" else x.clone()
        for _ in range(self.steps):
            x_adv = self._step(x_adv, x, input_grad(model, x_adv, y, self.loss, ref))
        return x_adv

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        gen = self.generator or torch.Generator().manual_seed(self.seed)
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
            "loss": self.loss,
        }
