"""Corruptions: realistic noise, blur, weather, digital and geometric shifts, five severities each."""

from __future__ import annotations

import numpy as np
import torch

from robustops.corruptions import library  # noqa: F401  (registers the corruptions)
from robustops.corruptions.base import CORRUPTIONS, SEVERITIES, Corruption, Family, corrupt, describe


def add_gaussian_noise(
    image: np.ndarray | torch.Tensor, severity: int, seed: int = 0
) -> np.ndarray | torch.Tensor:
    """Gaussian noise at ``severity`` 1..5, then clip to [0, 1]; one image or a batch."""
    return corrupt(image, "gaussian_noise", severity, seed)


__all__ = ["CORRUPTIONS", "SEVERITIES", "Corruption", "Family", "add_gaussian_noise", "corrupt", "describe"]
