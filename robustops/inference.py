"""What a model answers, plain and under attack: shared by training (epoch selection) and
evaluation (the scorecard), so neither has to import the other."""

from __future__ import annotations

from collections.abc import Callable

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
    model: nn.Module,
    attack: Attack,
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int = 256,
    device: str = "cpu",
    judge: Callable[[torch.Tensor], torch.Tensor] | None = None,
    correct: np.ndarray | None = None,
) -> np.ndarray:
    """Per input: still classified correctly after the attack. Inputs already misclassified
    count as broken without being attacked.

    Scores the attack's :meth:`~robustops.attacks.Attack.worst_case`: PGD with ``early_stop``
    (its default) counts an input as broken once any iterate fools the model and stops spending
    gradients on it, AutoAttack's rule. Every example it returns is checked again here, by
    ``judge`` when given (the prediction a random model serves, -1 for an abstention, see
    :class:`robustops.attacks.eot.Randomized`; the attack then runs to its end), else by
    ``model``'s argmax. ``correct``: which inputs are answered correctly unattacked, when
    already known (a random model's served answers are costly: one part judges them once)."""
    model.eval()

    @torch.no_grad()
    def answer(xb: torch.Tensor) -> torch.Tensor:
        return judge(xb) if judge is not None else model(xb).argmax(1)

    out = np.zeros(len(y), dtype=bool)
    for i in range(0, len(y), batch_size):
        xb = torch.from_numpy(x[i : i + batch_size]).to(device)
        yb = torch.from_numpy(y[i : i + batch_size]).to(device)
        if correct is not None:
            ok = torch.from_numpy(correct[i : i + batch_size]).to(device)
        else:
            ok = answer(xb).to(device) == yb
        if ok.any():
            # A random model's own answers are a noisy test of "fooled": stopping at the first
            # iterate they call fooled would keep a point the served prediction still gets right.
            run = attack if judge is not None else attack.worst_case
            x_adv = run(model, xb[ok], yb[ok])
            still = (answer(x_adv).to(device) == yb[ok]).cpu().numpy()
            idx = np.flatnonzero(ok.cpu().numpy()) + i
            out[idx] = still
    return out


def robust_accuracy(
    model: nn.Module, attack: Attack, x: np.ndarray, y: np.ndarray, batch_size: int = 256, device: str = "cpu"
) -> float:
    """Fraction of inputs still classified correctly after the attack."""
    return float(robust_mask(model, attack, x, y, batch_size, device).mean()) if len(y) else float("nan")


def served_correct(
    judge: Callable[[torch.Tensor], torch.Tensor],
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int = 256,
    device: str = "cpu",
) -> np.ndarray:
    """Per input: the served prediction (``judge``, -1 for an abstention) is its label."""
    out = [
        (judge(torch.from_numpy(x[i : i + batch_size]).to(device)).cpu().numpy() == y[i : i + batch_size])
        for i in range(0, len(y), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros(0, dtype=bool)
