"""The drift reference of a model: the features of its validation split (held out from training,
so the model's confidence on it looks like production's), the embedding projection fitted on
them, and the expected-accuracy estimators fitted on the same split, clean and under the held-out
corruptions. Saved beside the model in MLflow; the monitor compares every production batch with
it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from robustops.data import Dataset
from robustops.monitoring import estimate
from robustops.monitoring.features import IMAGE_COLUMNS, Projection, batch_features
from robustops.spreadsheet import read_csv, write_csv

EMBED_DIMS = 8
ESTIMATORS_FILE = "estimators.json"


@dataclass
class Reference:
    features: pd.DataFrame
    projection: Projection
    fitted: estimate.Fitted | None = None  # None: a model logged before the estimators existed


def signals(features: pd.DataFrame, logits: np.ndarray) -> estimate.Signals:
    """What the estimators read of a scored set: its logits and the image statistics of its
    feature table, row for row."""
    return estimate.Signals(logits, features[IMAGE_COLUMNS].to_numpy(dtype=np.float64))


def fit_estimators(
    model: nn.Module,
    val: Dataset,
    classes: list[str],
    corruptions: Sequence[str] = (),
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    images: int = 2000,
    seed: int = 0,
) -> estimate.Fitted:
    """Every estimator fitted on (at most ``images`` of) the validation split, clean and under each
    of ``corruptions`` at each severity (the scorecard's held-out ones), with the model's accuracy
    measured on each."""
    from robustops.corruptions import CORRUPTIONS

    x, y = val.x, val.y
    if len(y) > images:
        idx = np.sort(np.random.default_rng(seed).permutation(len(y))[:images])
        x, y = x[idx], y[idx]

    def read(xs: np.ndarray) -> estimate.Signals:
        table, logits, _ = batch_features(model, xs, classes)
        return signals(table, logits)

    shifted = []
    for name in corruptions:
        for sev in severities:
            xc = CORRUPTIONS.get(name)(torch.from_numpy(np.ascontiguousarray(x)), sev, seed).numpy()
            s = read(xc)
            shifted.append(estimate.Shifted(f"{name}/{sev}", s, float((s.logits.argmax(1) == y).mean())))
    return estimate.fit_all(read(x), y, shifted)


def build_reference(
    model: nn.Module,
    val: Dataset,
    classes: list[str],
    dims: int = EMBED_DIMS,
    corruptions: Sequence[str] = (),
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    images: int = 2000,
    seed: int = 0,
) -> Reference:
    _, _, emb = batch_features(model, val.x, classes)
    projection = Projection.fit(emb, dims)
    features, _, _ = batch_features(model, val.x, classes, projection)
    fitted = fit_estimators(model, val, classes, corruptions, severities, images, seed)
    return Reference(features, projection, fitted)


def save_reference(ref: Reference, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    csv, npz = folder / "reference.csv", folder / "projection.npz"
    write_csv(ref.features, csv)
    np.savez(npz, mean=ref.projection.mean, axes=ref.projection.axes)
    if ref.fitted is None:
        return [csv, npz]
    est = folder / ESTIMATORS_FILE
    est.write_text(json.dumps(estimate.to_json(ref.fitted), indent=1))
    return [csv, npz, est]


def load_reference(folder: Path) -> Reference:
    from robustops.errors import DataValidationError

    csv, npz = Path(folder) / "reference.csv", Path(folder) / "projection.npz"
    if not csv.is_file() or not npz.is_file():
        raise DataValidationError(
            f"{folder}: no drift reference (reference.csv, projection.npz); log the model with robustops"
        )
    with np.load(npz, allow_pickle=False) as f:
        projection = Projection(f["mean"], f["axes"])
    features = read_csv(csv, dtype={"predicted": str})
    est = Path(folder) / ESTIMATORS_FILE
    fitted = estimate.from_json(json.loads(est.read_text())) if est.is_file() else None
    return Reference(features, projection, fitted)
