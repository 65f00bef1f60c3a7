"""Lipschitz figures logged for every model.

An upper bound on the L2 Lipschitz constant of the logits (the product of the layers' operator
norms: loose, but it moves with spectral normalization and adversarial training), and the mean
input-gradient norm of the loss on real data (a local, lower view).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _operator_norm(layer: nn.Module, shape: tuple[int, ...], iters: int, gen: torch.Generator) -> float:
    """Largest singular value of a conv layer's linear map on inputs of ``shape``, by power
    iteration with the layer's own padding and stride (the bias does not change it)."""
    weight = layer.weight.detach()
    kw = {
        "stride": layer.stride,
        "padding": layer.padding,
        "dilation": layer.dilation,
        "groups": layer.groups,
    }
    v = torch.randn((1, *shape), generator=gen)
    v = v / v.norm()
    sigma = 0.0
    for _ in range(iters):
        u = F.conv2d(v, weight, **kw)
        sigma = float(u.norm())
        v = F.conv_transpose2d(u, weight, output_padding=_output_padding(layer, shape, u), **kw)
        v = v / v.norm().clamp_min(1e-12)
    return sigma


def _output_padding(layer: nn.Conv2d, shape: tuple[int, ...], u: torch.Tensor) -> tuple[int, int]:
    out = []
    for i in range(2):
        size = (u.shape[2 + i] - 1) * layer.stride[i] - 2 * layer.padding[i]
        size += layer.dilation[i] * (layer.kernel_size[i] - 1) + 1
        out.append(shape[1 + i] - size)
    return out[0], out[1]


@torch.no_grad()
def lipschitz_bound(model: nn.Module, shape: tuple[int, int, int], iters: int = 50, seed: int = 0) -> float:
    """An upper bound on the L2 Lipschitz constant of the logits w.r.t. the input pixels.

    The product of every layer's bound: the normalization's 1 / min(std), each conv's and dense
    layer's largest singular value (power iteration), 1 for ReLU, dropout, flatten and
    non-overlapping max pooling. Returns NaN for a layer it does not know.
    """
    gen = torch.Generator().manual_seed(seed)
    bound, x = 1.0, torch.zeros((1, *shape))
    was_training = model.training
    model.eval()
    try:
        for layer in _leaves(model):
            if isinstance(layer, nn.Conv2d):
                bound *= _operator_norm(layer, tuple(x.shape[1:]), iters, gen)
            elif isinstance(layer, nn.Linear):
                bound *= float(torch.linalg.matrix_norm(layer.weight.detach(), ord=2))
            elif type(layer).__name__ == "Normalize":
                bound *= float(1 / layer.std.min())
            elif isinstance(layer, nn.MaxPool2d):
                if layer.stride != layer.kernel_size:  # overlapping windows can exceed 1
                    return math.nan
            elif not isinstance(layer, (nn.ReLU, nn.Dropout, nn.Flatten, nn.Identity)):
                return math.nan
            x = layer(x)
    finally:
        model.train(was_training)
    return bound


def _leaves(model: nn.Module) -> list[nn.Module]:
    """Layers in forward order; a spectral-normalized layer counts as one leaf."""
    out = []
    for m in model.children():
        if isinstance(m, nn.Sequential):
            out += _leaves(m)
        else:
            out.append(m)
    return out


def input_grad_norm(
    model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 512, device: str = "cpu"
) -> float:
    """Mean L2 norm of the cross-entropy's gradient w.r.t. each input (eval mode)."""
    was_training = model.training
    model.eval()
    norms = []
    try:
        for i in range(0, len(y), batch_size):
            xb = torch.from_numpy(x[i : i + batch_size]).to(device).requires_grad_(True)
            yb = torch.from_numpy(y[i : i + batch_size]).to(device)
            (grad,) = torch.autograd.grad(F.cross_entropy(model(xb), yb, reduction="sum"), xb)
            norms.append(grad.flatten(1).norm(dim=1).cpu())
    finally:
        model.train(was_training)
    return float(torch.cat(norms).mean()) if norms else math.nan
