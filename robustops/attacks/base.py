"""The one attack contract: ``attack(model, x, y) -> x_adv``.

As in torchattacks and CleverHans: x is a batch in [0, 1], the model is attacked in eval mode
(and put back in its previous mode afterwards), eps = 0 returns x unchanged, and a bad eps or an
input outside [0, 1] raises ValueError.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
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
        """An adversarial example for every input, misclassified or not (adversarial training and
        the adversarial-set export need one per input)."""
        return self._guarded(self.perturb, model, x, y)

    def worst_case(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per input, the strongest example found, for scoring robust accuracy
        (:func:`robustops.evaluation.robust_mask` calls this). Same contract as calling the
        attack; by default the same result. Attacks that can stop early (PGD's ``early_stop``)
        leave inputs already misclassified as they are and return, for an input they fool, the
        first iterate that fooled it: the score is then "fooled by any iterate", never weaker."""
        return self._guarded(self.perturb_worst_case, model, x, y)

    def _guarded(self, fn, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        check_input(x, y)
        if self.eps == 0:
            return x.clone()
        with eval_mode(model):
            x_adv = fn(model, model_layout(x.detach()), y)
        return like(x, x_adv.detach())  # in the caller's memory layout

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def perturb_worst_case(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.perturb(model, x, y)

    @property
    def label(self) -> str:
        """The name in metric keys: the attack's name, plus its loss when that is not cross-entropy
        (``pgd_linf_cw``), so every (attack, loss) pair has its own stable key."""
        loss = getattr(self, "loss", "ce")
        return self.name if loss == "ce" else f"{self.name}_{loss}"

    def settings(self) -> dict[str, Any]:
        """The hyperparameters that define this attack, for logging next to its score."""
        return {"attack": self.name, "threat": self.threat.value, "eps": self.eps}


def model_layout(x: torch.Tensor) -> torch.Tensor:
    """The batch as attacks hand it to the model: on the CPU, a one-channel image batch strided
    channels-last; any other batch as given.

    One channel makes the two layouts the same bytes: the batch stays contiguous (``view``
    still works) and only the strides torch reads the layout from change. torch then runs its
    channels-last convolution and pooling kernels, which are faster for the registry's CNNs on
    CPU (``benchmarks/attack_speed.py`` times the attacks). The values, and so the attack, are the
    same. Not done for several channels (a real transpose, and a model's ``view`` could fail)
    nor on GPUs."""
    if x.device.type == "cpu" and x.ndim == 4 and x.shape[1] == 1 and x.is_contiguous():
        return torch.empty_like(x, memory_format=torch.channels_last).copy_(x)
    return x


def like(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A copy of ``t`` on x's device, in x's dtype and memory layout.

    Attacks hand the model every iterate in the layout of the batch they were given (see
    :func:`model_layout`). Without this the layout drifts: torch allocates the result of
    ``x + noise`` NCHW-strided whatever x had, and the model runs other kernels."""
    return torch.empty_like(x).copy_(t)


def loss_grad(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: str = "ce",
    ref: torch.Tensor | None = None,
    layout: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward and backward pass: the logits at ``x`` and the gradient of the summed attack
    loss (see :mod:`robustops.attacks.losses`) w.r.t. the input, with ``x`` in the memory layout
    of ``layout`` when given (see :func:`like`). Differentiating w.r.t. the input alone never
    computes or accumulates parameter gradients, and mutates nothing on the model (so threads
    may attack one model at once)."""
    from robustops.attacks.losses import LOSSES

    x = like(x if layout is None else layout, x).requires_grad_(True)
    logits = model(x)
    (grad,) = torch.autograd.grad(LOSSES.get(loss)(logits, y, ref).sum(), x)
    return logits.detach(), grad


def input_grad(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "ce", ref: torch.Tensor | None = None
) -> torch.Tensor:
    """Gradient of a summed attack loss w.r.t. the input; parameter gradients are untouched."""
    return loss_grad(model, x, y, loss, ref)[1]


def over_targets(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    targets: int,
    run: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """The loop of AutoAttack's targeted members: for the clean prediction's 2nd, 3rd, ...
    most likely classes (at most ``targets``), ``run(idx, target)`` attacks the inputs ``idx``
    still standing towards ``target`` and returns an example for each; the examples replace
    those inputs, and an input they fool is done. Misclassified inputs are not attacked."""
    best = x.clone()
    with torch.no_grad():
        clean = model(x)
    ranked = clean.argsort(dim=1, descending=True)
    todo = clean.argmax(1) == y
    for k in range(1, min(targets, clean.shape[1] - 1) + 1):
        idx = torch.nonzero(todo).flatten()
        if len(idx) == 0:
            break
        adv = run(idx, ranked[idx, k])
        best[idx] = adv
        with torch.no_grad():
            todo[idx] = model(like(x[idx], adv)).argmax(1) == y[idx]
    return best


def build_attack(name: str, eps: float, steps: int, rel_step: float, seed: int) -> Attack:
    """Builds a registered attack, passing only the arguments its constructor takes.

    FGSM takes only eps; the PGD attacks also take steps, a step size of ``rel_step * eps / steps``
    (as in the scorecard) and the seed of their random start.
    """
    cls = ATTACKS.get(name)
    # eps = 0 is the identity attack; a zero step size would be rejected for no reason.
    extra = {"steps": steps, "step_size": rel_step * eps / steps if eps > 0 else None, "seed": seed}
    accepted = inspect.signature(cls).parameters
    return cls(eps, **{k: v for k, v in extra.items() if k in accepted})
