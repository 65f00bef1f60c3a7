"""FAB-T: the targeted Fast Adaptive Boundary attack in the L-inf ball (Croce & Hein, 2020),
AutoAttack's standard-version member that looks for the smallest perturbation instead of the
highest loss, so it does not rely on a loss that a model may flatten.

Each step linearizes the boundary between the true class and the target at the current point,
projects both the current point and the original image onto that hyperplane (the smallest L-inf
step that reaches it inside [0, 1]), and moves to a convex combination of the two projections,
weighted towards the original by how far each is, with a small overshoot. A point past the
boundary is kept if it is the closest found so far, then pulled back towards the original image,
so the search homes in on the boundary. An input counts as broken only if the closest point
found lies within ``eps``.

Written here from the paper: the projection with box constraints is solved by bisection on the
L-inf radius (the hyperplane's offset is monotone in it), which is exact to 1e-6 of eps.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustops.attacks.base import ATTACKS, Attack, like, over_targets
from robustops.stop import raise_if_stopped


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (x.ndim - 1)))


def project_linf(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, iters: int = 40) -> torch.Tensor:
    """The smallest L-inf step ``d`` (per row) with ``w . d = b`` and ``x + d`` in [0, 1]; where
    the box does not allow it, the step that gets closest (every free coordinate at its bound).

    With radius r the best step moves each coordinate by r towards increasing ``sign(b) * w``,
    clipped to the box, so ``w . d(r)`` grows monotonically in r: bisection finds r."""
    s = torch.sign(b)
    direction = _bcast(s, w) * torch.sign(w)  # per coordinate: +1 up, -1 down, 0 idle
    room = torch.where(direction > 0, 1 - x, x)  # how far each coordinate may move that way

    def step(r: torch.Tensor) -> torch.Tensor:
        return direction * torch.minimum(_bcast(r, x).expand_as(x), room)

    def reached(r: torch.Tensor) -> torch.Tensor:
        return (w * step(r)).flatten(1).sum(1) * s

    target = b.abs()
    hi = room.flatten(1).amax(1)
    full = reached(hi)
    lo = torch.zeros_like(hi)
    for _ in range(iters):
        mid = (lo + hi) / 2
        short = reached(mid) < target
        lo, hi = torch.where(short, mid, lo), torch.where(short, hi, mid)
    r = torch.where(full < target, room.flatten(1).amax(1), hi)
    return step(r)


@ATTACKS.register("fab_t")
class FABT(Attack):
    """Targeted FAB in the L-inf ball: one run per target class (the clean prediction's 2nd,
    3rd, ... most likely), each on the inputs the earlier ones left unbroken.

    Args:
        eps: radius of the L-inf ball a broken input's closest adversarial point must lie in.
        steps: iterations per target (AutoAttack uses 100).
        targets: how many target classes (AutoAttack uses 9).
        alpha_max: the largest weight on the original image's projection (0.1).
        eta: overshoot past the linearized boundary (1.05).
        beta: pull back towards the original after a success (0.9).
    """

    name = "fab_t"

    def __init__(
        self,
        eps: float,
        steps: int = 100,
        targets: int = 9,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
    ) -> None:
        super().__init__(eps)
        if steps < 1 or targets < 1:
            raise ValueError(f"steps and targets must be >= 1, got {steps} and {targets}")
        self.steps, self.targets = steps, targets
        self.alpha_max, self.eta, self.beta = alpha_max, eta, beta

    def _boundary(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, layout: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """At ``x``: the gap z_t - z_y, its input gradient, and whether ``x`` is misclassified."""
        x = like(layout, x).requires_grad_(True)
        logits = model(x)
        gap = logits.gather(1, t[:, None])[:, 0] - logits.gather(1, y[:, None])[:, 0]
        (grad,) = torch.autograd.grad(gap.sum(), x)
        return gap.detach(), grad, logits.detach().argmax(1) != y

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The closest adversarial point found for each input (the input itself where none)."""
        best = x.clone()
        best_dist = torch.full((len(x),), float("inf"), device=x.device)
        cur = x.clone()
        for _ in range(self.steps):
            raise_if_stopped()
            gap, grad, _ = self._boundary(model, cur, y, t, x)
            with torch.no_grad():
                # Both projections onto the hyperplane gap + grad . (v - cur) = 0.
                d_cur = project_linf(cur, grad, -gap)
                d_orig = project_linf(x, grad, -gap - (grad * (x - cur)).flatten(1).sum(1))
                n_cur = d_cur.flatten(1).abs().amax(1)
                n_orig = d_orig.flatten(1).abs().amax(1)
                alpha = torch.clamp(n_cur / (n_cur + n_orig).clamp_min(1e-12), max=self.alpha_max)
                a = _bcast(alpha, x)
                cur = ((1 - a) * (cur + self.eta * d_cur) + a * (x + self.eta * d_orig)).clamp(0, 1)
                logits = model(like(x, cur))
                fooled = logits.argmax(1) != y
                dist = (cur - x).flatten(1).abs().amax(1)
                closer = fooled & (dist < best_dist)
                best = torch.where(_bcast(closer, x), cur, best)
                best_dist = torch.where(closer, dist, best_dist)
                # After a success, back towards the original: the search closes in on the boundary.
                cur = torch.where(_bcast(fooled, x), x + self.beta * (cur - x), cur)
        return best

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        def run(idx: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            found = self._run(model, x[idx], y[idx], target)
            # Only a closest point within eps breaks an input; the others stay as they are.
            within = (found - x[idx]).flatten(1).abs().amax(1) <= self.eps + 1e-6
            return torch.where(_bcast(within, found), found, x[idx])

        return over_targets(model, x, y, self.targets, run)

    def settings(self) -> dict[str, Any]:
        return super().settings() | {
            "steps": self.steps,
            "targets": self.targets,
            "alpha_max": self.alpha_max,
            "eta": self.eta,
            "beta": self.beta,
        }
