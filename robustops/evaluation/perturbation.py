"""The perturbation dimension: accuracy under random noise of rising strength, and how often
small noise flips a prediction. Noise is seeded, so every model sees the same draws."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from robustops.config import NoiseConfig
from robustops.inference import predict
from robustops.names import number

Noise = Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]


def _gaussian(x: torch.Tensor, s: float, g: torch.Generator) -> torch.Tensor:
    return x + s * torch.randn(x.shape, generator=g)


def _uniform(x: torch.Tensor, s: float, g: torch.Generator) -> torch.Tensor:
    return x + s * (2 * torch.rand(x.shape, generator=g) - 1)


def _salt_pepper(x: torch.Tensor, s: float, g: torch.Generator) -> torch.Tensor:
    u = torch.rand(x.shape, generator=g)
    return x.masked_fill(u < s, 1.0).masked_fill(u < s / 2, 0.0)


NOISES: dict[str, Noise] = {"gaussian": _gaussian, "uniform": _uniform, "salt_pepper": _salt_pepper}


def noise_curves(
    model: nn.Module, x: np.ndarray, y: np.ndarray, cfg: NoiseConfig, seed: int = 0, device: str = "cpu"
) -> dict[str, dict[float, float]]:
    """``{noise: {strength: accuracy}}``; noisy images are clipped to [0, 1] like real sensors."""
    out: dict[str, dict[float, float]] = {}
    xt = torch.from_numpy(x)
    for name, fn in NOISES.items():
        out[name] = {}
        for s in getattr(cfg, name):
            g = torch.Generator().manual_seed(seed * 7919 + int(s * 1e6))
            noisy = fn(xt, s, g).clamp(0, 1)
            out[name][s] = float((predict(model, noisy, device=device).argmax(1) == y).mean())
    return out


def flip_rate(model: nn.Module, x: np.ndarray, cfg: NoiseConfig, seed: int = 0, device: str = "cpu") -> float:
    """Share of (image, draw) pairs whose prediction changes under Gaussian noise of ``flip_sigma``."""
    clean = predict(model, x, device=device).argmax(1)
    g = torch.Generator().manual_seed(seed + 17)
    xt = torch.from_numpy(x)
    flips = []
    for _ in range(cfg.flip_draws):
        noisy = _gaussian(xt, cfg.flip_sigma, g).clamp(0, 1)
        flips.append(predict(model, noisy, device=device).argmax(1) != clean)
    return float(np.mean(flips))


def noise_metrics(curves: dict[str, dict[float, float]], flips: float) -> dict[str, float]:
    m = {f"noise/{name}/s_{number(s)}/acc": a for name, c in curves.items() for s, a in c.items()}
    m |= {f"noise/{name}/mean_acc": float(np.mean(list(c.values()))) for name, c in curves.items() if c}
    m["noise/flip_rate"] = flips
    return m
