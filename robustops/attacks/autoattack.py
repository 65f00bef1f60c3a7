"""AutoAttack's gradient members (Croce & Hein, 2020): APGD on cross-entropy and on DLR, and
targeted APGD-T, in the L-inf ball and (``APGDL2``, ``APGDTL2``) the L2 ball, under the attack
contract. FAB-T is in :mod:`robustops.attacks.fab`, Square in :mod:`robustops.attacks.square`.

Written here rather than wrapped from torchattacks: its implementations reseed torch's global
random stream, and ours draw from a seeded generator of their own so a score is reproducible
without side effects on training. ``tests/test_scorecard.py`` checks them against torchattacks.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from robustops.attacks.base import ATTACKS, Attack, like, over_targets
from robustops.attacks.gradient import check_loss
from robustops.attacks.l2 import L2Ball
from robustops.attacks.losses import LOSSES
from robustops.stop import raise_if_stopped


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (x.ndim - 1)))


def _checkpoints(steps: int) -> list[int]:
    """APGD's step-size checkpoints: p0 = 0, p1 = 0.22, p(j+1) = p(j) + max(p(j) - p(j-1) - 0.03, 0.06)."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(q * steps) for q in p if 0 < q < 1})


@ATTACKS.register("apgd")
class APGD(Attack):
    """Auto-PGD in the L-inf ball: PGD with momentum and a step size that halves at a checkpoint
    where the loss has stalled, the halved inputs restarting from the best point found (Croce &
    Hein, 2020).

    Args:
        eps: radius of the L-inf ball.
        steps: iterations per restart (AutoAttack uses 100).
        restarts: random restarts; each runs only on inputs the previous ones left unbroken.
        loss: "ce" (APGD-CE) or "dlr" (APGD-DLR), or any name in ``LOSSES``.
        rho: the share of steps since the last checkpoint in which the loss must have risen.
        seed: seeds the random starts.
    """

    name = "apgd"

    def __init__(
        self,
        eps: float,
        steps: int = 100,
        restarts: int = 1,
        loss: str = "ce",
        rho: float = 0.75,
        seed: int = 0,
    ) -> None:
        super().__init__(eps)
        if steps < 1 or restarts < 1:
            raise ValueError(f"steps and restarts must be >= 1, got {steps} and {restarts}")
        self.steps, self.restarts, self.rho, self.seed = steps, restarts, rho, seed
        self.loss = check_loss(loss)

    def _losses(
        self, model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, x: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        x_adv = like(x, x_adv).requires_grad_(True)  # the clean input's memory layout, see like()
        logits = model(x_adv)
        loss = LOSSES.get(self.loss)(logits, y, None)
        (grad,) = torch.autograd.grad(loss.sum(), x_adv)
        return loss.detach(), grad, logits.detach().argmax(1) != y

    # The ball's three hooks; the L2 members (autoattack's ``L2Ball``) replace them.
    def _project(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.min(torch.max(z, x - self.eps), x + self.eps).clamp(0, 1)

    def _start(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """A random point on the ball's surface (AutoAttack's start), clamped to [0, 1]."""
        t = (2 * torch.rand(x.shape, generator=gen) - 1).to(x.device, x.dtype)
        t = t / _bcast(t.flatten(1).abs().amax(1).clamp_min(1e-12), x)
        return (x + self.eps * t).clamp(0, 1)

    def _ascent(self, grad: torch.Tensor) -> torch.Tensor:
        """The steepest-ascent direction of unit size in the ball's norm."""
        return grad.sign()

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n = len(x)
        x_adv = self._start(x, gen)
        loss, grad, fooled = self._losses(model, x_adv, y, x)
        x_best, loss_best, grad_best = x_adv.clone(), loss.clone(), grad.clone()
        x_found = torch.where(_bcast(fooled, x), x_adv, x)
        found = fooled.clone()
        eta = torch.full((n,), 2.0 * self.eps, device=x.device, dtype=x.dtype)
        x_prev = x_adv.clone()
        checkpoints = set(_checkpoints(self.steps))
        last_check, increased = 0, torch.zeros(n, device=x.device)
        loss_at_check, reduced_at_check = loss_best.clone(), torch.ones(n, dtype=torch.bool, device=x.device)
        loss_prev = loss.clone()
        for i in range(self.steps):
            raise_if_stopped()
            with torch.no_grad():
                z = self._project(x_adv + _bcast(eta, x) * self._ascent(grad), x)
                alpha = 1.0 if i == 0 else 0.75  # momentum on the previous move
                new = self._project(x_adv + alpha * (z - x_adv) + (1 - alpha) * (x_adv - x_prev), x)
                x_prev, x_adv = x_adv, new
            loss, grad, fooled = self._losses(model, x_adv, y, x)
            with torch.no_grad():
                x_found = torch.where(_bcast(fooled & ~found, x), x_adv, x_found)
                found |= fooled
                increased += (loss > loss_prev).float()
                loss_prev = loss
                better = loss > loss_best
                x_best = torch.where(_bcast(better, x), x_adv, x_best)
                grad_best = torch.where(_bcast(better, x), grad, grad_best)
                loss_best = torch.where(better, loss, loss_best)
                if i + 1 in checkpoints:
                    k = i + 1 - last_check
                    stalled = increased < self.rho * k
                    no_gain = ~reduced_at_check & (loss_at_check >= loss_best)
                    halve = stalled | no_gain
                    eta = torch.where(halve, eta / 2, eta)
                    # Restart the halved ones from their best point so far.
                    x_adv = torch.where(_bcast(halve, x), x_best, x_adv)
                    grad = torch.where(_bcast(halve, x), grad_best, grad)
                    reduced_at_check, loss_at_check = halve, loss_best.clone()
                    last_check, increased = i + 1, torch.zeros(n, device=x.device)
        # A fooling point if one was ever found, else the highest-loss point.
        return torch.where(_bcast(found, x), x_found, x_best)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed)
        best = x.clone()
        with torch.no_grad():
            todo = model(x).argmax(1) == y
        for _ in range(self.restarts):
            idx = torch.nonzero(todo).flatten()
            if len(idx) == 0:
                break
            adv = self._run(model, x[idx], y[idx], gen)
            best[idx] = adv
            with torch.no_grad():
                todo[idx] = model(like(x[idx], adv)).argmax(1) == y[idx]
        return best

    def settings(self) -> dict[str, Any]:
        return super().settings() | {
            "steps": self.steps,
            "restarts": self.restarts,
            "loss": self.loss,
            "rho": self.rho,
            "seed": self.seed,
        }


def targeted_dlr(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR (Croce & Hein, 2020): (z_t - z_y) / (z_pi1 - (z_pi3 + z_pi4) / 2), rising as
    the target's logit overtakes the true one; scale-free like DLR. With fewer than 4 classes the
    plain margin z_t - z_y."""
    gap = logits.gather(1, target[:, None])[:, 0] - logits.gather(1, y[:, None])[:, 0]
    if logits.shape[1] < 4:
        return gap
    top = logits.sort(dim=1, descending=True).values
    return gap / (top[:, 0] - (top[:, 2] + top[:, 3]) / 2 + 1e-12)


@ATTACKS.register("apgd_t")
class APGDT(APGD):
    """Targeted APGD on the targeted DLR loss (APGD-T of AutoAttack's standard version): one run
    per target class, the clean prediction's 2nd, 3rd, ... most likely classes, each on the
    inputs the earlier targets left unbroken.

    Args:
        eps: radius of the L-inf ball.
        steps: iterations per target (AutoAttack uses 100).
        targets: how many target classes (AutoAttack uses 9; at most the number of classes - 1).
        rho: as :class:`APGD`.
        seed: seeds the random starts.
    """

    name = "apgd_t"

    def __init__(
        self, eps: float, steps: int = 100, targets: int = 9, rho: float = 0.75, seed: int = 0
    ) -> None:
        super().__init__(eps, steps=steps, restarts=1, loss="dlr", rho=rho, seed=seed)
        if targets < 1:
            raise ValueError(f"targets must be >= 1, got {targets}")
        self.targets = targets
        self._target: torch.Tensor | None = None  # the current run's target per input

    @property
    def label(self) -> str:
        return self.name

    def _losses(
        self, model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, x: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        assert self._target is not None  # set by perturb for each run
        x_adv = like(x, x_adv).requires_grad_(True)  # the clean input's memory layout, see like()
        logits = model(x_adv)
        loss = targeted_dlr(logits, y, self._target)
        (grad,) = torch.autograd.grad(loss.sum(), x_adv)
        return loss.detach(), grad, logits.detach().argmax(1) != y

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed)

        def run(idx: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            self._target = target
            return self._run(model, x[idx], y[idx], gen)

        try:
            return over_targets(model, x, y, self.targets, run)
        finally:
            self._target = None

    def settings(self) -> dict[str, Any]:
        out = super().settings() | {"targets": self.targets, "loss": "dlr_targeted"}
        out.pop("restarts")
        return out


@ATTACKS.register("apgd_l2")
class APGDL2(L2Ball, APGD):
    """APGD in the L2 ball: AutoAttack's L2 version of APGD-CE (and, with ``loss="dlr"``,
    APGD-DLR); arguments as for :class:`APGD`, eps the ball's L2 radius."""

    name = "apgd_l2"


@ATTACKS.register("apgd_t_l2")
class APGDTL2(L2Ball, APGDT):
    """APGD-T in the L2 ball: AutoAttack's L2 version of APGD-T; arguments as for :class:`APGDT`,
    eps the ball's L2 radius."""

    name = "apgd_t_l2"
