"""Clean metrics and the structured metric names shared by every run."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from robustops.names import number
from robustops.stop import raise_if_stopped


def adv_key(attack: str, eps: float) -> str:
    # MLflow allows only [/\w.\- :] in metric names, so 'eps_0.1' rather than 'eps=0.1'.
    return f"adv/{attack}/eps_{number(eps)}/acc"


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


def confusion_matrix(y: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    return np.bincount(y * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_recall(cm: np.ndarray) -> np.ndarray:
    support = cm.sum(axis=1)
    return np.divide(np.diag(cm), support, out=np.full(len(cm), np.nan), where=support > 0)
