"""Clean metrics and the structured metric names shared by every run."""

from __future__ import annotations

import numpy as np

from robustops.names import number


def adv_key(attack: str, eps: float) -> str:
    # MLflow allows only [/\w.\- :] in metric names, so 'eps_0.1' rather than 'eps=0.1'.
    return f"adv/{attack}/eps_{number(eps)}/acc"


def confusion_matrix(y: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    return np.bincount(y * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_recall(cm: np.ndarray) -> np.ndarray:
    support = cm.sum(axis=1)
    return np.divide(np.diag(cm), support, out=np.full(len(cm), np.nan), where=support > 0)
