"""A user's own model, as the tests bring one: a small ResNet-like network."""

from __future__ import annotations

import torch
from torch import nn


class SmallResNet(nn.Module):
    """A ResNet-like block network, as a user's factory would build it."""

    def __init__(self, classes: int = 4, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.block = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.stem(x)))
        h = h + self.block(h)
        return self.head(h.mean(dim=(2, 3)))
