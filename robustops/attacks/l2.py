"""PGD in the L2 ball under the attack contract of :mod:`robustops.attacks.base`."""

from __future__ import annotations

import torch

from robustops.attacks.base import ATTACKS, ThreatModel
from robustops.attacks.gradient import PGD

# Guards divisions by a per-example norm: a zero gradient (saturated softmax) or a zero
# perturbation must give a zero step, not NaN.
TINY = 1e-12


def l2_norms(t: torch.Tensor) -> torch.Tensor:
    """Per-example L2 norms, shaped to broadcast against ``t``."""
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.ndim - 1)))


def project_l2(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """Scales each example's perturbation back onto the L2 ball of radius ``eps`` if it left it."""
    return delta * (eps / l2_norms(delta).clamp_min(TINY)).clamp(max=1.0)


@ATTACKS.register("pgd_l2")
class PGDL2(PGD):
    """Projected gradient descent in the L2 ball (Madry et al., 2018).

    Each step moves along the per-example normalized gradient, projects onto the ball, then
    clamps to [0, 1]; clamping moves pixels towards x, so the result stays inside the ball.
    Arguments as for :class:`~robustops.attacks.gradient.PGD`; eps may exceed 1 (the norm sums
    over all pixels).
    """

    name = "pgd_l2"
    threat = ThreatModel.L2

    def _start(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        # A Gaussian direction is uniform on the sphere; radius eps * U^(1/d) makes the point
        # uniform in the ball rather than bunched at its centre. Drawn on the CPU so a seed gives
        # the same start on every device.
        d = x[0].numel()
        direction = torch.randn(x.shape, generator=gen, device="cpu", dtype=x.dtype)
        direction = direction / l2_norms(direction).clamp_min(TINY)
        u = torch.rand((len(x),) + (1,) * (x.ndim - 1), generator=gen, device="cpu", dtype=x.dtype)
        delta = (direction * self.eps * u.pow(1.0 / d)).to(x.device)
        return (x + delta).clamp(0, 1)

    def _step(self, x_adv: torch.Tensor, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        x_adv = x_adv + self.step_size * grad / l2_norms(grad).clamp_min(TINY)
        return (x + project_l2(x_adv - x, self.eps)).clamp(0, 1)


class L2Ball:
    """The L2 ball's hooks for the AutoAttack members written for L-inf (APGD, APGD-T): mixed in
    before them, it replaces their random start, ascent direction and projection, as the
    reference's L2 version does."""

    threat = ThreatModel.L2
    eps: float

    def _start(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """A random point on the sphere of radius eps (a Gaussian direction), clamped to [0, 1]."""
        t = torch.randn(x.shape, generator=gen).to(x.device, x.dtype)
        return (x + self.eps * t / l2_norms(t).clamp_min(TINY)).clamp(0, 1)

    def _ascent(self, grad: torch.Tensor) -> torch.Tensor:
        return grad / l2_norms(grad).clamp_min(TINY)

    def _project(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # Clamping to [0, 1] after the projection only moves pixels towards x: it stays in the ball.
        return (x + project_l2(z - x, self.eps)).clamp(0, 1)
