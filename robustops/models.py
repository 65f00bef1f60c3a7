"""Registered model architectures, each sized from the data's shape and class count.

Every model takes images in [0, 1] and normalizes them itself (a buffer, saved with the weights),
so attacks, the eps ball and serving all work in pixel space.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from robustops.registry import Registry

Builder = Callable[..., nn.Module]
MODELS: Registry[Builder] = Registry("model")


class Blueprint(BaseModel):
    """What rebuilds a trained model without its training run: the registered architecture and
    its settings, the input shape, the class names, and the settings of the defence that trained
    it (so it can be scored and served as that defence). Saved as JSON beside the weights (see
    :mod:`robustops.training.checkpoint`)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    shape: tuple[int, int, int]
    classes: list[str]
    width: int
    hidden: int
    dropout: float
    spectral_norm: bool = False
    defence: dict[str, Any] | None = None
    # A user's model (``model.source``): its model settings (source, preprocessing, class map) and
    # its output kind; the network itself is saved beside the checkpoint (robustops.sources.saved).
    source: dict[str, Any] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class Normalize(nn.Module):
    """Per-channel (x - mean) / std with statistics from the training split."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.reshape(1, -1, 1, 1).float())
        self.register_buffer("std", std.reshape(1, -1, 1, 1).float().clamp_min(1e-3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


@MODELS.register("cnn")
def small_cnn(
    shape: tuple[int, int, int], num_classes: int, width: int = 32, hidden: int = 128, dropout: float = 0.25
) -> nn.Sequential:
    """Two conv blocks, each followed by 2x2 max pooling unless that would leave less than 2x2
    (tiny images), then two dense layers with dropout."""
    c, h, w = shape
    layers: list[nn.Module] = []
    cin, side_h, side_w = c, h, w
    for cout in (width, 2 * width):
        layers += [
            nn.Conv2d(cin, cout, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(cout, cout, 3, padding=1),
            nn.ReLU(),
        ]
        if min(side_h, side_w) >= 4:  # pool while at least 2x2 remains
            layers.append(nn.MaxPool2d(2))
            side_h, side_w = side_h // 2, side_w // 2
        cin = cout
    return nn.Sequential(
        *layers,
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(cin * side_h * side_w, hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )


@MODELS.register("mlp")
def mlp(
    shape: tuple[int, int, int], num_classes: int, width: int = 32, hidden: int = 256, dropout: float = 0.25
) -> nn.Sequential:
    """Two hidden layers of ``hidden`` units; ``width`` is unused (kept for one config shape)."""
    c, h, w = shape
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(c * h * w, hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )


@MODELS.register("cnn_strided")
def strided_cnn(
    shape: tuple[int, int, int], num_classes: int, width: int = 16, hidden: int = 100, dropout: float = 0.0
) -> nn.Sequential:
    """The small MNIST network of Wong et al. (2020): two 4x4 convolutions of stride 2 (``width``
    and 2 * ``width`` channels) and one hidden dense layer; fast enough for adversarial training
    of 28x28 images on a CPU."""
    c, h, w = shape
    side_h, side_w = h // 2 // 2, w // 2 // 2  # each conv halves (rounding down); images are >= 4x4
    return nn.Sequential(
        nn.Conv2d(c, width, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(2 * width * side_h * side_w, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


def build_model(
    name: str,
    shape: tuple[int, int, int],
    num_classes: int,
    mean: torch.Tensor | None = None,
    std: torch.Tensor | None = None,
    **kwargs: object,
) -> nn.Sequential:
    """Builds a registered model behind a :class:`Normalize` layer.

    Args:
        name: a name in :data:`MODELS`.
        shape: (C, H, W) of one image.
        num_classes: number of output logits.
        mean, std: per-channel training statistics; default to 0 and 1 (no-op).
        **kwargs: the model's own settings (width, hidden, dropout).
    """
    c = shape[0]
    mean = torch.zeros(c) if mean is None else torch.as_tensor(mean)
    std = torch.ones(c) if std is None else torch.as_tensor(std)
    return nn.Sequential(Normalize(mean, std), MODELS.get(name)(shape, num_classes, **kwargs))
