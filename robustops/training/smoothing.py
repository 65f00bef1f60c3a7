"""Gaussian-noise training for randomized smoothing (Cohen et al., 2019).

The base classifier learns to classify x + N(0, sigma^2 I); the smoothed classifier built on it
(:mod:`robustops.evaluation.certify`) then has certified L2 radii. Noisy inputs are not clipped
to [0, 1], as in Cohen et al.: the certificate assumes unclipped Gaussian noise.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robustops.data import Dataset
from robustops.training.augment import Transform
from robustops.training.standard import EpochProbe


class NoiseCE:
    """Cross-entropy on ``x + sigma * N(0, I)``, drawn from its own seeded stream."""

    def __init__(
        self, sigma: float, seed: int, transform: Transform | None = None, label_smoothing: float = 0.0
    ):
        self.sigma, self.transform, self.smoothing = sigma, transform, label_smoothing
        self.gen = torch.Generator().manual_seed(seed + 3)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.transform is not None:
            x = self.transform(x)
        noise = torch.randn(x.shape, generator=self.gen).to(x.device, x.dtype)
        return F.cross_entropy(model(x + self.sigma * noise), y, label_smoothing=self.smoothing)


def noise_probe(val: Dataset, sigma: float, seed: int, device: str, copies: int = 4) -> EpochProbe:
    """Validation accuracy under the training noise (``val_noise_acc``) on ``copies`` noisy copies
    of the validation split, drawn once, so every epoch is scored on the same draws (smoothing
    selects the best epoch on it)."""
    gen = torch.Generator().manual_seed(seed + 4)
    x = torch.from_numpy(val.x).repeat(copies, 1, 1, 1)
    noisy = (x + sigma * torch.randn(x.shape, generator=gen)).to(device)
    y = np.tile(val.y, copies)

    @torch.no_grad()
    def probe(model: nn.Module) -> dict[str, float]:
        model.eval()
        pred = torch.cat([model(noisy[i : i + 2048]).argmax(1).cpu() for i in range(0, len(noisy), 2048)])
        return {"val_noise_acc": float((pred.numpy() == y).mean())}

    return probe
