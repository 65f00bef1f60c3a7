"""PGD in the L2 ball under the attack contract of :mod:`robustops.attacks.base`."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustops.attacks.base import ATTACKS, Attack, ThreatModel, input_grad

# Guards divisions by a per-example norm: a zero gradient (saturated softmax) or a zero
# perturbation must give a zero step, not NaN.
TINY = 1e-12


def _norms(t: torch.Tensor) -> torch.Tensor:
    """Per-example L2 norms, shaped to broadcast against ``t``."""
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.ndim - 1)))


def project_l2(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """Scales each example's perturbation back onto the L2 ball of radius ``eps`` if it left it."""
    return delta * (eps / _norms(delta).clamp_min(TINY)).clamp(max=1.0)


@ATTACKS.register("pgd_l2")
class PGDL2(Attack):
    """Projected gradient descent in the L2 ball (Madry et al., 2018).

    Each step moves along the per-example normalized gradient, projects onto the ball, then
    clamps to [0, 1]; clamping moves pixels towards x, so the result stays inside the ball.

    Args:
        eps: radius of the L2 ball (may exceed 1: the norm sums over all pixels).
        steps: gradient steps per restart.
        step_size: absolute step size; default 2.5 * eps / steps.
        random_start: start from a uniform point in the ball (else from x).
        restarts: independent runs; an input counts as broken if any run breaks it.
        seed: seeds the random starts, so a score is reproducible.
    """

    name = "pgd_l2"
    threat = ThreatModel.L2

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
        # A Gaussian direction is uniform on the sphere; radius eps * U^(1/d) makes the point
        # uniform in the ball rather than bunched at its centre. Drawn on the CPU so a seed gives
        # the same start on every device.
        d = x[0].numel()
        direction = torch.randn(x.shape, generator=gen, device="cpu", dtype=x.dtype)
        direction = direction / _norms(direction).clamp_min(TINY)
        u = torch.rand((len(x),) + (1,) * (x.ndim - 1), generator=gen, device="cpu", dtype=x.dtype)
        delta = (direction * self.eps * u.pow(1.0 / d)).to(x.device)
        return (x + delta).clamp(0, 1)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x_adv = self._start(x, gen) if self.random_start else x.clone()
        for _ in range(self.steps):
            grad = input_grad(model, x_adv, y)
            x_adv = x_adv + self.step_size * grad / _norms(grad).clamp_min(TINY)
            x_adv = (x + project_l2(x_adv - x, self.eps)).clamp(0, 1)
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
