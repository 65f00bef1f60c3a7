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


def severity_rows(x: torch.Tensor, names: list[str], seed: int) -> dict[str, np.ndarray]:
    """One row per corruption: the same image at severities 1..5."""
    return {n: np.concatenate([CORRUPTIONS.get(n)(x, s, seed).numpy() for s in range(1, 6)]) for n in names}


__all__ = [
    "CORRUPTIONS",
    "SEVERITIES",
    "Corruption",
    "Family",
    "add_gaussian_noise",
    "corrupt",
    "describe",
    "severity_rows",
]
