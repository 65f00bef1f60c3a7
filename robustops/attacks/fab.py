"""FAB-T: the targeted Fast Adaptive Boundary attack in the L-inf and the L2 ball (Croce & Hein, 2020),
AutoAttack's standard-version member that looks for the smallest perturbation instead of the
highest loss, so it does not rely on a loss that a model may flatten.

Each step linearizes the boundary between the true class and the target at the current point,
projects both the current point and the original image onto that hyperplane (the smallest L-inf
step that reaches it inside [0, 1], in the ball's norm), and moves to a convex combination of the two projections,
weighted towards the original by how far each is, with a small overshoot. A point past the
boundary is kept if it is the closest found so far, then pulled back towards the original image,
so the search homes in on the boundary. An input counts as broken only if the closest point
found lies within ``eps``.

Written here from the paper: the projection with box constraints is solved exactly, on the
L-inf radius or on the L2 step's multiplier (the hyperplane's offset is piecewise linear and
monotone in either: one sort finds the piece).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustops.attacks.base import ATTACKS, Attack, ThreatModel, like, over_targets
from robustops.attacks.l2 import TINY, l2_norms
from robustops.stop import raise_if_stopped


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (x.ndim - 1)))


def smallest_reaching(breaks: torch.Tensor, slope: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per row, the smallest ``t >= 0`` with ``sum_i slope_i * min(t, breaks_i) = target``: each
    coordinate's share grows linearly in ``t`` until its own break, then holds. Where even the
    largest break falls short, the largest break (every coordinate at its bound).

    The sum is piecewise linear and non-decreasing in ``t``, with its kinks at the breaks, so one
    sort finds the segment that reaches the target and one division the point on it. Written here
    rather than bisected: exact, and a handful of tensor operations where bisection takes dozens
    of passes over the image per projection, twice in every step of the attack."""
    breaks, order = breaks.sort(dim=1)
    slope = slope.gather(1, order)
    # Before the k-th break: the coordinates below it hold their full share, the rest still grow.
    held = torch.cumsum(slope * breaks, 1)
    held = torch.cat([torch.zeros_like(held[:, :1]), held[:, :-1]], 1)
    growing = slope.flip(1).cumsum(1).flip(1)
    passed = ((held + breaks * growing) < target[:, None]).sum(1, keepdim=True)
    k = passed.clamp(max=breaks.shape[1] - 1)
    t = (target - held.gather(1, k)[:, 0]) / growing.gather(1, k)[:, 0].clamp_min(TINY)
    return torch.where(passed[:, 0] == breaks.shape[1], breaks[:, -1], t.clamp_min(0))


def project_linf(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The smallest L-inf step ``d`` (per row) with ``w . d = b`` and ``x + d`` in [0, 1]; where
    the box does not allow it, the step that gets closest (every free coordinate at its bound).

    With radius r the best step moves each coordinate by r towards increasing ``sign(b) * w``,
    clipped to the box, so ``w . d(r) = sum_i |w_i| min(r, room_i)``: :func:`smallest_reaching`
    finds r."""
    s = torch.sign(b)
    direction = _bcast(s, w) * torch.sign(w)  # per coordinate: +1 up, -1 down, 0 idle
    room = torch.where(direction > 0, 1 - x, x)  # how far each coordinate may move that way
    r = smallest_reaching(room.flatten(1), w.abs().flatten(1), b.abs())
    return direction * torch.minimum(_bcast(r, x).expand_as(x), room)


def project_l2(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The smallest L2 step ``d`` (per row) with ``w . d = b`` and ``x + d`` in [0, 1]; where the
    box does not allow it, the step that gets closest (every coordinate at its bound).

    The minimiser is ``d(l) = clip(l * sign(b) * w, -x, 1 - x)`` for the multiplier ``l`` that
    meets the hyperplane; coordinate i adds ``min(l |w_i|^2, |w_i| room_i)``, its room the distance
    to the wall it moves towards, so :func:`smallest_reaching` finds ``l`` with breaks at
    ``room_i / |w_i|``."""
    s = _bcast(torch.sign(b), w)
    lo_box, hi_box = -x, 1 - x
    aw = w.abs().flatten(1)
    room = torch.where((s * w) > 0, hi_box, x).flatten(1)
    # A coordinate with no weight adds nothing at any multiplier: a break at 0 says so.
    breaks = torch.where(aw > TINY, room / aw.clamp_min(TINY), torch.zeros_like(aw))
    lam = smallest_reaching(breaks, aw.pow(2), b.abs())
    return torch.minimum(torch.maximum(s * _bcast(lam, x) * w, lo_box), hi_box)


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

    @staticmethod
    def _project(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return project_linf(x, w, b)

    @staticmethod
    def _dist(d: torch.Tensor) -> torch.Tensor:
        """Per row, the size of a step in the ball's norm."""
        return d.flatten(1).abs().amax(1)

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
                d_cur = self._project(cur, grad, -gap)
                d_orig = self._project(x, grad, -gap - (grad * (x - cur)).flatten(1).sum(1))
                n_cur, n_orig = self._dist(d_cur), self._dist(d_orig)
                alpha = torch.clamp(n_cur / (n_cur + n_orig).clamp_min(1e-12), max=self.alpha_max)
                a = _bcast(alpha, x)
                cur = ((1 - a) * (cur + self.eta * d_cur) + a * (x + self.eta * d_orig)).clamp(0, 1)
                logits = model(like(x, cur))
                fooled = logits.argmax(1) != y
                dist = self._dist(cur - x)
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
            within = self._dist(found - x[idx]) <= self.eps + 1e-6
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


@ATTACKS.register("fab_t_l2")
class FABTL2(FABT):
    """Targeted FAB in the L2 ball: AutoAttack's L2 version of FAB-T; arguments as for
    :class:`FABT`, eps the L2 radius a broken input's closest adversarial point must lie in."""

    name = "fab_t_l2"
    threat = ThreatModel.L2

    @staticmethod
    def _project(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return project_l2(x, w, b)

    @staticmethod
    def _dist(d: torch.Tensor) -> torch.Tensor:
        return l2_norms(d).flatten()
