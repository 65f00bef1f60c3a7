"""Models and their scoring, small enough for seconds."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from robustops.config import EvalConfig

# Small enough for seconds: every part of the scorecard runs, on few samples and iterations.
QUICK = {
    "eps": [0.05, 0.2],
    "l2_eps": [0.5],
    "pgd_steps": 5,
    "max_samples": 100,
    "autoattack": {"eps": [0.2], "apgd_steps": 10, "square_queries": 50},
    "masking": {"more_steps": 10},
}


def quick(**kw) -> EvalConfig:
    """The quick scorecard settings, with ``kw`` replacing whole fields."""
    return EvalConfig.model_validate(QUICK | kw)


class Linear(nn.Module):
    """A linear classifier over the pixels: whether an input can be broken in a ball is known in
    closed form (each margin against the dual norm of its weight difference: L1 for the L-inf
    ball, L2 for the L2 ball)."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.w, self.b = nn.Parameter(w, requires_grad=False), nn.Parameter(b, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w.T + self.b


def planted_linear(eps: float, norm: str = "Linf") -> tuple[Linear, np.ndarray, np.ndarray, np.ndarray]:
    """A 10-class linear model and 40 images placed so that half are provably robust at ``eps``
    in the ``norm`` ball (every margin 1.5 times eps times the dual norm of the weight
    difference) and half are not (one margin a third of that, reachable inside [0, 1]). Returns
    the model, the images, their labels and which are robust."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(10, 64, generator=gen, dtype=torch.float64) * 0.2
    x0 = torch.full((64,), 0.5, dtype=torch.float64)
    model = Linear(w.float(), (-w @ x0).float()).eval()  # every class ties at the grey image x0
    y = torch.arange(40) % 10
    robust = torch.arange(40) < 20
    xs = []
    for i in range(40):
        others = [j for j in range(10) if j != y[i]]
        a = w[y[i]] - w[others]  # (9, 64): the margins are a @ x
        dual = a.abs().sum(1) if norm == "Linf" else a.norm(dim=1)
        want = 1.5 * eps * dual
        if not robust[i]:
            want[i % 9] = eps * dual[i % 9] / 3
        x = x0 + a.T @ torch.linalg.solve(a @ a.T, want)  # the closest image to x0 with those margins
        xs.append(x)
    x = torch.stack(xs).view(40, 1, 8, 8)
    assert x.min() > 0.05 and x.max() < 0.95, (x.min(), x.max())  # every move of eps stays in [0, 1]
    return model, x.float().numpy(), y.numpy(), robust.numpy()
