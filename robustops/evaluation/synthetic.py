"""Quality of synthetic samples: does a classifier trained on real data recognise them?"""

from __future__ import annotations

import numpy as np

from robustops.config import ModelConfig, TrainConfig
from robustops.data import Dataset
from robustops.evaluation.metrics import confusion_matrix, per_class_recall
from robustops.inference import predict
from robustops.names import segment
from robustops.training import train_baseline

JUDGE_MODEL = ModelConfig(name="mlp", hidden=128, dropout=0.1)
JUDGE_TRAIN = TrainConfig(epochs=20, patience=4, progress=False)


def balanced(ds: Dataset, seed: int) -> Dataset:
    """Every class resampled with replacement up to the largest class's count (seeded)."""
    rng = np.random.default_rng(seed)
    counts = np.bincount(ds.y, minlength=ds.num_classes)
    idx = [np.flatnonzero(ds.y == c) for c in range(ds.num_classes)]
    extra = [rng.choice(i, counts.max() - len(i)) for i in idx if 0 < len(i) < counts.max()]
    keep = np.concatenate([np.arange(len(ds.y)), *extra])
    return Dataset(ds.x[keep], ds.y[keep], ds.classes, ds.source)


def judge_synthetic(
    train: Dataset, val: Dataset, x: np.ndarray, y: np.ndarray, seed: int
) -> dict[str, float]:
    """Trains a judge on the real training split and scores the synthetic samples.

    High judge accuracy means the samples look like their class to a model that never saw them;
    ``synth/judge/real_val_acc`` is the judge's own accuracy on real validation data, for scale.
    The judge trains on the real split resampled to equal class counts (real images repeated,
    nothing synthetic): trained on the imbalanced split it would be biased against exactly the
    classes being judged, and score good samples of them as bad.
    """
    if len(y) == 0:
        return {}
    judge = train_baseline(balanced(train, seed), val, JUDGE_MODEL, JUDGE_TRAIN, seed).model
    pred = predict(judge, x).argmax(1)
    cm = confusion_matrix(y, pred, train.num_classes)
    recall = per_class_recall(cm)
    out = {
        "synth/judge/acc": float((pred == y).mean()),
        "synth/judge/real_val_acc": float((predict(judge, val.x).argmax(1) == val.y).mean()),
    }
    out |= {f"synth/judge/acc/class_{segment(train.classes[c])}": float(recall[c]) for c in np.unique(y)}
    return out
