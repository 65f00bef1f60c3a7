"""Drift features of an image batch: what the images look like, and what the model makes of them.

- Image statistics per image: brightness (mean), contrast (std), sharpness (variance of the
  Laplacian), noise level (std of the residual after a 3x3 box blur), and the shares of pixels
  within 0.02 of 0 and of 1 (saturated).
- Model outputs: the top confidence, the predictive entropy and the predicted class.
- Embeddings: the penultimate features, projected onto the reference's first principal
  components (numpy SVD: one small matrix, no estimator to pickle).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from robustops.evaluation.postprocess import features as penultimate
from robustops.evaluation.postprocess import softmax
from robustops.inference import predict

IMAGE_COLUMNS = ["brightness", "contrast", "sharpness", "noise", "dark_share", "bright_share"]
CLASS_COLUMN = "predicted"


def image_stats(x: np.ndarray, batch_size: int = 4096) -> pd.DataFrame:
    """Per-image statistics of (N, C, H, W) images in [0, 1], computed on the channel mean."""
    rows = []
    lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
    box = torch.full((1, 1, 3, 3), 1 / 9)
    for i in range(0, len(x), batch_size):
        g = torch.from_numpy(x[i : i + batch_size]).float().mean(1, keepdim=True)
        pad = F.pad(g, (1, 1, 1, 1), mode="replicate")
        rows.append(
            np.stack(
                [
                    g.mean((1, 2, 3)).numpy(),
                    g.std((1, 2, 3)).numpy(),
                    F.conv2d(pad, lap).var((1, 2, 3)).numpy(),
                    (g - F.conv2d(pad, box)).std((1, 2, 3)).numpy(),
                    (g <= 0.02).float().mean((1, 2, 3)).numpy(),
                    (g >= 0.98).float().mean((1, 2, 3)).numpy(),
                ],
                1,
            )
        )
    data = np.concatenate(rows) if rows else np.zeros((0, len(IMAGE_COLUMNS)))
    return pd.DataFrame(data, columns=IMAGE_COLUMNS)


@dataclass
class Projection:
    """The reference embeddings' mean and first principal axes."""

    mean: np.ndarray
    axes: np.ndarray  # (k, d)

    @classmethod
    def fit(cls, emb: np.ndarray, k: int) -> Projection:
        mean = emb.mean(0)
        _, _, vt = np.linalg.svd(emb - mean, full_matrices=False)
        return cls(mean.astype(np.float32), vt[: min(k, len(vt))].astype(np.float32))

    def __call__(self, emb: np.ndarray) -> np.ndarray:
        return (emb - self.mean) @ self.axes.T

    @property
    def columns(self) -> list[str]:
        return [f"emb_{i}" for i in range(len(self.axes))]


def batch_features(
    model: nn.Module,
    x: np.ndarray,
    classes: list[str],
    projection: Projection | None = None,
    device: str = "cpu",
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The feature table of a batch, its logits and its raw penultimate features."""
    logits = predict(model, x, device=device)
    p = softmax(logits) if len(logits) else np.zeros((0, len(classes)))
    df = image_stats(x)
    df["confidence"] = p.max(1) if len(p) else []
    df["entropy"] = -(p * np.log(np.clip(p, 1e-12, 1))).sum(1) if len(p) else []
    df[CLASS_COLUMN] = [classes[i] for i in logits.argmax(1)] if len(logits) else []
    emb = penultimate(model, x, device=device)
    if emb is None:
        emb = logits
    if projection is not None:
        df[projection.columns] = projection(emb)
    return df, logits, emb
