"""The drift reference of a model: the features of its validation split (held out from training,
so the model's confidence on it looks like production's) and the embedding projection fitted on
them. Saved beside the model in MLflow; the monitor compares every production batch with it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from torch import nn

from robustops.data import Dataset
from robustops.monitoring.features import Projection, batch_features
from robustops.spreadsheet import read_csv, write_csv

EMBED_DIMS = 8


@dataclass
class Reference:
    features: pd.DataFrame
    projection: Projection


def build_reference(model: nn.Module, val: Dataset, classes: list[str], dims: int = EMBED_DIMS) -> Reference:
    _, _, emb = batch_features(model, val.x, classes)
    projection = Projection.fit(emb, dims)
    features, _, _ = batch_features(model, val.x, classes, projection)
    return Reference(features, projection)


def save_reference(ref: Reference, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    csv, npz = folder / "reference.csv", folder / "projection.npz"
    write_csv(ref.features, csv)
    np.savez(npz, mean=ref.projection.mean, axes=ref.projection.axes)
    return [csv, npz]


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
    return Reference(features, projection)
