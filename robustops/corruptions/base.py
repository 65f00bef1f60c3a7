"""The corruption contract and registry.

A corruption maps a batch ``x`` (N, C, H, W), float in [0, 1], C in {1, 3}, any H, W >= 4, to a batch
of the same shape and dtype in [0, 1]. It has five severities, each a documented parameter, and
draws all randomness from a seeded ``torch.Generator`` so the same seed gives the same images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import torch

from robustops.registry import Registry

Fn = Callable[[torch.Tensor, Any, torch.Generator], torch.Tensor]
SEVERITIES = (1, 2, 3, 4, 5)


class Family(StrEnum):
    NOISE = "noise"
    BLUR = "blur"
    WEATHER = "weather"
    DIGITAL = "digital"
    GEOMETRIC = "geometric"


@dataclass(frozen=True)
class Corruption:
    """A registered corruption: ``params[s - 1]`` is the parameter at severity ``s``."""

    name: str
    family: Family
    params: tuple[Any, ...]
    unit: str
    fn: Fn

    def __call__(self, x: torch.Tensor, severity: int, seed: int | torch.Generator = 0) -> torch.Tensor:
        if severity not in SEVERITIES:
            raise ValueError(f"severity must be an integer 1..5, got {severity!r}")
        if x.ndim != 4 or x.shape[1] not in (1, 3) or not torch.is_floating_point(x):
            raise ValueError(
                f"expected a float batch (N, C, H, W) with C = 1 or 3, got {tuple(x.shape)} {x.dtype}"
            )
        gen = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
        if x.numel() == 0:
            return x.clone()
        out = self.fn(x, self.params[severity - 1], gen)
        return out.clamp_(0, 1).to(x.dtype)


CORRUPTIONS: Registry[Corruption] = Registry("corruption")


def register(name: str, family: Family, params: tuple[Any, ...], unit: str) -> Callable[[Fn], Fn]:
    """Registers ``fn(x, param, generator)`` as a corruption with five severity parameters."""
    if len(params) != 5:
        raise ValueError(f"corruption {name!r} needs 5 severity parameters, got {len(params)}")

    def add(fn: Fn) -> Fn:
        CORRUPTIONS.register(name)(Corruption(name, family, params, unit, fn))
        return fn

    return add


def corrupt(
    x: np.ndarray | torch.Tensor, name: str, severity: int, seed: int = 0
) -> np.ndarray | torch.Tensor:
    """Applies a registered corruption to one image (C, H, W) or a batch; numpy in, numpy out."""
    is_np = isinstance(x, np.ndarray)
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) if is_np else x
    single = t.ndim == 3
    out = CORRUPTIONS.get(name)(t[None] if single else t, severity, seed)
    out = out[0] if single else out
    return out.numpy() if is_np else out


def describe() -> list[dict[str, Any]]:
    """Name, family, unit and the five severity parameters of every corruption (for docs and logs)."""
    out = []
    for name in CORRUPTIONS.names():
        c = CORRUPTIONS.get(name)
        out.append({"name": name, "family": c.family.value, "unit": c.unit, "params": list(c.params)})
    return out
