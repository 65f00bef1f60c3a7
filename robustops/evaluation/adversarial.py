"""Robust accuracy of a model under an attack, in batches."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from robustops.attacks import Attack


def robust_accuracy(
    model: nn.Module, attack: Attack, x: np.ndarray, y: np.ndarray, batch_size: int = 256, device: str = "cpu"
) -> float:
    """Fraction of inputs still classified correctly after the attack.

    Inputs already misclassified count as errors without being attacked.
    """
    model.eval()
    correct = 0
    for i in range(0, len(y), batch_size):
        xb = torch.from_numpy(x[i : i + batch_size]).to(device)
        yb = torch.from_numpy(y[i : i + batch_size]).to(device)
        with torch.no_grad():
            ok = model(xb).argmax(1) == yb
        if ok.any():
            x_adv = attack(model, xb[ok], yb[ok])
            with torch.no_grad():
                correct += int((model(x_adv).argmax(1) == yb[ok]).sum())
    return correct / len(y)
