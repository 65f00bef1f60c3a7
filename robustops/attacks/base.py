"""The one attack contract: ``attack(model, x, y) -> x_adv``.

As in torchattacks and CleverHans: x is a batch in [0, 1], the model is attacked in eval mode
(and put back in its previous mode afterwards), eps = 0 returns x unchanged, and a bad eps or an
input outside [0, 1] raises ValueError.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from enum import StrEnum
from typing import Any

import torch
from torch import nn

from robustops.registry import Registry


class ThreatModel(StrEnum):
    LINF = "Linf"
    L2 = "L2"


ATTACKS: Registry[type[Attack]] = Registry("attack")


@contextmanager
def eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def check_input(x: torch.Tensor, y: torch.Tensor) -> None:
    if not torch.is_floating_point(x):
        raise ValueError(f"x must be a float tensor in [0, 1], got {x.dtype}")
    if x.numel() and (not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1):
        raise ValueError("x must lie in [0, 1] with no NaN/inf: attacks work in pixel space")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"y must hold one label per input: x has {len(x)}, y has shape {tuple(y.shape)}")


class Attack:
    """Base class: subclasses implement :meth:`perturb` for eps > 0."""

    name: str = "attack"
    threat: ThreatModel = ThreatModel.LINF

    def __init__(self, eps: float) -> None:
        if not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
            raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
        if self.threat is ThreatModel.LINF and eps > 1:
            raise ValueError(f"L-inf eps must be <= 1 for pixels in [0, 1], got {eps}")
        self.eps = float(eps)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        check_input(x, y)
        if self.eps == 0:
            return x.clone()
        with eval_mode(model):
            x_adv = self.perturb(model, x.detach(), y)
        return x_adv.detach()

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def label(self) -> str:
        """The name in metric keys: the attack's name, plus its loss when that is not cross-entropy
        (``pgd_linf_cw``), so every (attack, loss) pair has its own stable key."""
        loss = getattr(self, "loss", "ce")
        return self.name if loss == "ce" else f"{self.name}_{loss}"

    def settings(self) -> dict[str, Any]:
        """The hyperparameters that define this attack, for logging next to its score."""
        return {"attack": self.name, "threat": self.threat.value, "eps": self.eps}


def input_grad(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "ce", ref: torch.Tensor | None = None
) -> torch.Tensor:
    """Gradient of a summed attack loss (see :mod:`robustops.attacks.losses`) w.r.t. the input;
    parameter gradients are untouched."""
    from robustops.attacks.losses import LOSSES

    x = x.clone().requires_grad_(True)
    value = LOSSES.get(loss)(model(x), y, ref).sum()
    (grad,) = torch.autograd.grad(value, x)
    return grad
