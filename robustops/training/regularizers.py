"""Regularizers for any training method (label smoothing lives in the losses themselves).

Two Lipschitz controls: spectral normalization of every conv and dense layer (Miyato et al.,
2018), and a penalty on the squared input-gradient norm of the loss (Ross & Doshi-Velez, 2018;
"double backpropagation"). :mod:`robustops.evaluation.lipschitz` measures their effect.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

# loss(model, x, y), as robustops.training.standard.fit takes it.
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def apply_spectral_norm(model: nn.Module) -> nn.Module:
    """Spectral-normalizes every Conv2d and Linear layer in place (torch's parametrization).

    For a conv layer torch normalizes the reshaped kernel matrix, which bounds the operator norm
    only up to a factor that depends on the kernel size; robustops.evaluation.lipschitz.lipschitz_bound measures the
    operator itself.
    """
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, (nn.Conv2d, nn.Linear)):
                setattr(module, name, nn.utils.parametrizations.spectral_norm(child))
    return model


def with_grad_penalty(loss_fn: LossFn, weight: float) -> LossFn:
    """``loss_fn`` plus ``weight`` times the batch mean of ||d CE / d x||^2 on the clean batch."""
    if weight <= 0:
        return loss_fn

    def penalized(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        xg = x.clone().requires_grad_(True)
        # In float32 under mixed precision too: an fp16 input gradient can underflow to zero.
        with torch.autocast(x.device.type, enabled=False):
            ce = F.cross_entropy(model(xg), y, reduction="sum")
            (grad,) = torch.autograd.grad(ce, xg, create_graph=True)
        return loss_fn(model, x, y) + weight * grad.flatten(1).pow(2).sum(1).mean()

    if hasattr(loss_fn, "begin_epoch"):
        penalized.begin_epoch = loss_fn.begin_epoch  # type: ignore[attr-defined]
    return penalized
