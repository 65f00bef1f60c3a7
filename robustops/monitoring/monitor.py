"""Scoring a production batch: the guarded model's answers and the drift features, in chunks so a
batch of any size is scored in bounded memory."""

from __future__ import annotations

import numpy as np
import pandas as pd

from robustops.errors import DataValidationError
from robustops.monitoring.drift import DriftResult, DriftSettings, detect
from robustops.monitoring.features import batch_features
from robustops.monitoring.reference import Reference
from robustops.serving import GuardedModel


def score(
    guarded: GuardedModel, ref: Reference, x: np.ndarray, chunk: int = 4096
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(predictions, features) for every image of ``x``, ``chunk`` images at a time."""
    preds, feats = [], []
    classes = guarded.settings.classes
    for i in range(0, len(x), chunk):
        xb = np.ascontiguousarray(x[i : i + chunk], dtype=np.float32)
        preds.append(guarded.predict(xb))
        # Rejected images (NaN, out of range) are not features of the data's distribution.
        ok = ~preds[-1]["rejected"].to_numpy()
        if ok.any():
            feats.append(batch_features(guarded.model, xb[ok], classes, ref.projection)[0])
    predictions = pd.concat(preds, ignore_index=True) if preds else pd.DataFrame()
    features = pd.concat(feats, ignore_index=True) if feats else ref.features.iloc[:0]
    return predictions, features


def check_batch_size(n: int, min_batch: int, where: str) -> None:
    """Refuses a batch with too few images for the drift tests.

    Evidently's tests fail outright below 3 images (a zero division in the MMD, a singular
    kernel density), and a handful of images says little about a distribution anyway.

    Raises:
        DataValidationError: fewer than ``min_batch`` images.
    """
    if n < min_batch:
        raise DataValidationError(
            f"{where}: {n} image(s); the drift tests need at least {min_batch} (monitor.min_batch): "
            "monitor a larger batch, or score this one with robustops predict"
        )


def drift(
    ref: Reference,
    features: pd.DataFrame,
    settings: DriftSettings,
    min_batch: int = 3,
    where: str = "the batch",
) -> DriftResult:
    """The drift decision for a batch's features (one row per image the guard did not reject);
    refuses a batch too small to test."""
    check_batch_size(len(features), min_batch, where)
    return detect(ref.features, features[ref.features.columns], settings)
