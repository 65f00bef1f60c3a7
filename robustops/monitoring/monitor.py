"""Scoring a production batch: the guarded model's answers and the drift features, in chunks so a
batch of any size is scored in bounded memory."""

from __future__ import annotations

import numpy as np
import pandas as pd

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


def drift(ref: Reference, features: pd.DataFrame, settings: DriftSettings) -> DriftResult:
    return detect(ref.features, features[ref.features.columns], settings)
