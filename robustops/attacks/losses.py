"""Losses an attack ascends: cross-entropy, logit margins and the TRADES divergence.

Each takes ``(logits, y, ref)`` and returns one loss per example (attacks sum them, so each
example's input gradient is independent of the batch size; APGD also tracks them per example).
``ref`` holds the clean logits, for losses that compare against the unperturbed prediction.

Margin losses matter because a model can hide behind a saturated softmax: cross-entropy's
gradient vanishes when one logit dwarfs the rest (defensive distillation at T=1 is the classic
case), while the margin between logits keeps a usable gradient (Carlini & Wagner, 2017).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from robustops.registry import Registry

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
LOSSES: Registry[LossFn] = Registry("attack loss")


def _other_max(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Largest logit among the wrong classes."""
    return logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)


@LOSSES.register("ce")
def cross_entropy(logits: torch.Tensor, y: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


@LOSSES.register("cw")
def cw_margin(logits: torch.Tensor, y: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
    """Carlini-Wagner margin: best wrong logit minus the true logit (positive once fooled)."""
    true = logits.gather(1, y[:, None])[:, 0]
    return _other_max(logits, y) - true


@LOSSES.register("dlr")
def dlr(logits: torch.Tensor, y: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
    """Difference of logits ratio (Croce & Hein, 2020): the CW margin divided by the spread of the
    top logits, so rescaling the logits (a temperature) cannot shrink the gradient. Needs >= 3
    classes; with 2 it falls back to the plain margin."""
    true = logits.gather(1, y[:, None])[:, 0]
    margin = _other_max(logits, y) - true
    if logits.shape[1] < 3:
        return margin
    top = logits.sort(dim=1, descending=True).values
    return margin / (top[:, 0] - top[:, 2] + 1e-12)


@LOSSES.register("kl")
def kl_to_clean(logits: torch.Tensor, y: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
    """KL(p_clean || p_adv), TRADES' inner objective (Zhang et al., 2019); needs the clean logits."""
    if ref is None:
        raise ValueError("the kl loss needs the clean logits (ref)")
    return F.kl_div(F.log_softmax(logits, 1), F.softmax(ref, 1), reduction="none").sum(1)
