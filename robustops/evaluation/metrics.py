"""Clean metrics and the structured metric names shared by every run."""

from __future__ import annotations

import re

import numpy as np
import torch
from torch import nn


def fmt(value: float) -> str:
    """Stable number format for metric names: 0.1 -> '0.1', 0.25 -> '0.25', 1.0 -> '1'."""
    return f"{value:g}"


def safe(part: str) -> str:
    """A user-given name (a class folder, say) made safe for one segment of a metric name."""
    return re.sub(r"[^\w.\-]", "_", part) or "_"


def adv_key(attack: str, eps: float) -> str:
    # MLflow allows only [/\w.\- :] in metric names, so 'eps_0.1' rather than 'eps=0.1'.
    return f"adv/{attack}/eps_{fmt(eps)}/acc"


@torch.no_grad()
def predict(
    model: nn.Module, x: np.ndarray | torch.Tensor, batch_size: int = 512, device: str = "cpu"
) -> np.ndarray:
    """Logits for ``x`` (N, C, H, W) in eval mode, in batches."""
    was_training = model.training
    model.eval()
    t = torch.as_tensor(x)
    out = [model(t[i : i + batch_size].to(device)).cpu() for i in range(0, len(t), batch_size)]
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)


def confusion_matrix(y: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    return np.bincount(y * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_recall(cm: np.ndarray) -> np.ndarray:
    support = cm.sum(axis=1)
    return np.divide(np.diag(cm), support, out=np.full(len(cm), np.nan), where=support > 0)
