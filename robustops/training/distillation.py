"""Defensive distillation (Papernot et al., 2016).

A teacher is trained on hard labels with its logits divided by T; a student is trained on the
teacher's soft labels at the same T and deployed at T = 1, i.e. with its raw logits. The deployed
softmax is saturated, so cross-entropy gradients all but vanish: plain PGD fails and the model
looks robust. It is not: a margin loss (CW, DLR) needs no softmax and breaks it (Carlini &
Wagner, 2016). The scorecard logs both, which shows the masking.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robustops.training.augment import Transform


class TemperatureCE:
    """Hard-label cross-entropy of ``logits / T``: how the teacher is trained."""

    def __init__(self, temperature: float, transform: Transform | None = None, label_smoothing: float = 0.0):
        self.t, self.transform, self.smoothing = temperature, transform, label_smoothing

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.transform is not None:
            x = self.transform(x)
        return F.cross_entropy(model(x) / self.t, y, label_smoothing=self.smoothing)


class SoftLabelCE:
    """Cross-entropy between the teacher's and the student's softmax at temperature T."""

    def __init__(self, teacher: nn.Module, temperature: float, transform: Transform | None = None):
        self.teacher, self.t, self.transform = teacher.eval(), temperature, transform

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.transform is not None:
            x = self.transform(x)
        with torch.no_grad():
            soft = F.softmax(self.teacher(x) / self.t, dim=1)
        return -(soft * F.log_softmax(model(x) / self.t, dim=1)).sum(1).mean()
