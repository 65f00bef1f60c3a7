"""A user's declared preprocessing as the model's first layer.

Attacks, eps balls, corruptions, noise and the serving guard all work on images in [0, 1]; a
user's model expects its own input (a scale, a per-channel mean and std, BGR, another size).
Folding that into the model keeps the rest of robustops in one space, and the registered model
carries its preprocessing. Every step is differentiable, so gradients reach the pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812 - torch's convention
from torch import nn

from robustops.errors import ModelSourceError


class Preprocess(nn.Module):
    """Images in [0, 1] -> the model's input: resize (bilinear, with antialiasing when shrinking),
    channel order, ``x * scale``, then ``(x - mean) / std`` per channel."""

    def __init__(
        self,
        channels: int,
        scale: float = 1.0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        channel_order: str = "rgb",
        size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        for name, values in (("mean", mean), ("std", std)):
            if values is not None and len(values) not in (1, channels):
                raise ModelSourceError(
                    f"model.preprocess.{name} has {len(values)} values but the data has {channels} "
                    f"channel(s): give one value per channel (or one for all)"
                )
        if std is not None and any(s <= 0 for s in std):
            raise ModelSourceError(f"model.preprocess.std must be positive, got {list(std)}")
        if channel_order not in ("rgb", "bgr"):
            raise ModelSourceError(
                f"model.preprocess.channel_order must be rgb or bgr, got {channel_order!r}"
            )
        if channel_order == "bgr" and channels != 3:
            raise ModelSourceError(
                f"model.preprocess.channel_order bgr needs 3 channels, the data has {channels}"
            )
        self.channels, self.scale, self.bgr = channels, float(scale), channel_order == "bgr"
        self.size = tuple(size) if size is not None else None
        shape = (1, -1, 1, 1)
        self.register_buffer("mean", torch.tensor(mean if mean is not None else [0.0]).view(shape))
        self.register_buffer("std", torch.tensor(std if std is not None else [1.0]).view(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            shrink = x.shape[-2] > self.size[0] or x.shape[-1] > self.size[1]
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=shrink)
        if self.bgr:
            x = x.flip(1)
        return (x * self.scale - self.mean) / self.std

    def extra_repr(self) -> str:
        order = "bgr" if self.bgr else "rgb"
        return f"channels={self.channels}, scale={self.scale}, order={order}, size={self.size}"


def with_preprocess(model: nn.Module, preprocess: Preprocess) -> nn.Sequential:
    """The user's model behind its preprocessing: what robustops attacks, scores and serves."""
    return nn.Sequential(preprocess, model)
