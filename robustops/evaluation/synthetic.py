"""Quality of synthetic samples: does a classifier trained on real data recognise them?"""

from __future__ import annotations

import numpy as np

from robustops.config import ModelConfig, TrainConfig
from robustops.data import Dataset
from robustops.evaluation.metrics import confusion_matrix, per_class_recall, predict, safe
from robustops.training import train_baseline

JUDGE_MODEL = ModelConfig(name="mlp", hidden=128, dropout=0.1)
JUDGE_TRAIN = TrainConfig(epochs=20, patience=4, progress=False)


def judge_synthetic(
    train: Dataset, val: Dataset, x: np.ndarray, y: np.ndarray, seed: int
) -> dict[str, float]:
    """Trains a judge on the real training split and scores the synthetic samples.

    High judge accuracy means the samples look like their class to a model that never saw them;
    ``synth/judge/real_val_acc`` is the judge's own accuracy on real validation data, for scale.
    """
    if len(y) == 0:
        return {}
    judge = train_baseline(train, val, JUDGE_MODEL, JUDGE_TRAIN, seed).model
    pred = predict(judge, x).argmax(1)
    cm = confusion_matrix(y, pred, train.num_classes)
    recall = per_class_recall(cm)
    out = {
        "synth/judge/acc": float((pred == y).mean()),
        "synth/judge/real_val_acc": float((predict(judge, val.x).argmax(1) == val.y).mean()),
    }
    out |= {f"synth/judge/acc/class_{safe(train.classes[c])}": float(recall[c]) for c in np.unique(y)}
    return out
