"""What a model answers, plain and under attack: shared by training (epoch selection) and
evaluation (the scorecard), so neither has to import the other."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from robustops.attacks import Attack
from robustops.stop import raise_if_stopped


@torch.no_grad()
def predict(
    model: nn.Module, x: np.ndarray | torch.Tensor, batch_size: int = 512, device: str = "cpu"
) -> np.ndarray:
    """Logits for ``x`` (N, C, H, W) in eval mode, in batches."""
    was_training = model.training
    model.eval()
    t = torch.as_tensor(x)
    out = []
    for i in range(0, len(t), batch_size):
        raise_if_stopped()
        out.append(model(t[i : i + batch_size].to(device)).cpu())
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)


def robust_mask(
    model: nn.Module, attack: Attack, x: np.ndarray, y: np.ndarray, batch_size: int = 256, device: str = "cpu"
) -> np.ndarray:
    """Per input: still classified correctly after the attack. Inputs already misclassified
    count as broken without being attacked.

    Scores the attack's :meth:`~robustops.attacks.Attack.worst_case`: PGD with ``early_stop``
    (its default) counts an input as broken once any iterate fools the model and stops spending
    gradients on it, AutoAttack's rule. Every example it returns is checked again here."""
    model.eval()
    out = np.zeros(len(y), dtype=bool)
    for i in range(0, len(y), batch_size):
        xb = torch.from_numpy(x[i : i + batch_size]).to(device)
        yb = torch.from_numpy(y[i : i + batch_size]).to(device)
        with torch.no_grad():
            ok = model(xb).argmax(1) == yb
        if ok.any():
            x_adv = attack.worst_case(model, xb[ok], yb[ok])
            with torch.no_grad():
                still = (model(x_adv).argmax(1) == yb[ok]).cpu().numpy()
            idx = np.flatnonzero(ok.cpu().numpy()) + i
            out[idx] = still
    return out


def robust_accuracy(
    model: nn.Module, attack: Attack, x: np.ndarray, y: np.ndarray, batch_size: int = 256, device: str = "cpu"
) -> float:
    """Fraction of inputs still classified correctly after the attack."""
    return float(robust_mask(model, attack, x, y, batch_size, device).mean()) if len(y) else float("nan")
