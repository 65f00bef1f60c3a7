"""The guarded model: the defence in depth around one classifier, for serving and batch scoring.

1. Input validation: a request with the wrong rank, size, type or too many images is refused as a
   whole (:class:`RequestError`, a 4xx when served); an image with NaN/inf or values outside
   [0, 1] is rejected on its own row, with the reason, and the rest of the batch is answered.
2. The robust model (or, for a smoothing defence, the smoothed classifier's PREDICT).
3. Post-processing: an answer below the confidence threshold, or with an energy score below the
   OOD threshold, is an abstention with the reason. Both thresholds come from the model's
   scorecard (chosen on the validation split).

The result has one row per image: ``label`` (None when abstained or rejected), ``class_index``
(-1 then), ``confidence``, ``abstain``, ``rejected``, ``reason``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from robustops.errors import RobustopsError
from robustops.evaluation.metrics import predict
from robustops.evaluation.postprocess import energy, softmax

COLUMNS = ["label", "class_index", "confidence", "abstain", "rejected", "reason"]


class RequestError(RobustopsError, ValueError):
    """A request that cannot be answered at all (wrong shape, type or size)."""


@dataclass
class GuardSettings:
    """What layers 1 and 3 need besides the model; saved as JSON beside the checkpoint."""

    classes: list[str]
    shape: list[int]  # C, H, W
    threshold: float  # confidence below it: abstain
    energy_threshold: float  # energy below it: out of distribution, abstain
    max_batch: int = 10_000
    smoothing: dict[str, Any] | None = field(default=None)  # sigma, n, alpha: answer with PREDICT

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def as_images(data: Any, settings: GuardSettings) -> np.ndarray:
    """The request as float32 (N, C, H, W), checked before anything large is allocated."""
    c, h, w = settings.shape
    if isinstance(data, pd.DataFrame):
        data = data.to_numpy()
    if isinstance(data, dict):
        raise RequestError("send the images as an array (N, C, H, W) or (N, H, W), not an object")
    shape = getattr(data, "shape", None)
    if shape is None:
        try:
            data = np.asarray(data)
        except (ValueError, TypeError) as e:
            raise RequestError(f"the images are not a rectangular array ({e})") from None
        shape = data.shape
    n = shape[0] if len(shape) else 0
    if n > settings.max_batch:
        raise RequestError(f"{n} images in one request; send at most {settings.max_batch} per request")
    if len(shape) == 2 and shape[1] == c * h * w:  # flattened rows, e.g. a DataFrame
        shape = (n, c, h, w)
        data = np.asarray(data).reshape(shape)
    if len(shape) == 3 and c == 1:
        shape = (n, 1, *shape[1:])
        data = np.asarray(data).reshape(shape)
    if len(shape) != 4 or tuple(shape[1:]) != (c, h, w):
        raise RequestError(
            f"images have shape {tuple(getattr(data, 'shape', shape))}; this model takes (N, {c}, {h}, {w})"
            + (f" or (N, {h}, {w})" if c == 1 else "")
        )
    arr = np.asarray(data)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise RequestError(f"images have dtype {arr.dtype}; send numbers in [0, 1]")
    return arr.astype(np.float32, copy=False)


@dataclass
class GuardedModel:
    model: nn.Module
    settings: GuardSettings

    def __post_init__(self) -> None:
        self.model.eval()

    def predict(self, data: Any, seed: int = 0) -> pd.DataFrame:
        """Layer 1, 2 and 3 on a batch; see the module docstring for the columns."""
        s = self.settings
        x = as_images(data, s)
        n = len(x)
        out = pd.DataFrame({"label": [None] * n, "class_index": -1, "confidence": 0.0,
                            "abstain": False, "rejected": False, "reason": ""})  # fmt: skip
        flat = x.reshape(n, -1)
        bad_value = ~np.isfinite(flat).all(1)
        finite = np.where(np.isfinite(flat), flat, 0.5)
        bad_range = ~bad_value & ((finite < 0).any(1) | (finite > 1).any(1))
        out.loc[bad_value, "reason"] = "rejected: NaN or inf pixels"
        out.loc[bad_range, "reason"] = "rejected: pixel values outside [0, 1]; scale images to 0..1"
        out["rejected"] = bad_value | bad_range
        ok = np.flatnonzero(~out["rejected"].to_numpy())
        if len(ok):
            logits = predict(self.model, x[ok])
            conf = softmax(logits).max(1)
            pred = logits.argmax(1)
            reasons = np.full(len(ok), "", dtype=object)
            low = conf < s.threshold
            reasons[low] = [f"abstained: confidence {c:.3f} below {s.threshold:.3f}" for c in conf[low]]
            ood = energy(logits) < s.energy_threshold
            reasons[ood & ~low] = "abstained: out of distribution (energy score below the threshold)"
            if s.smoothing:
                pred, agree = self._smoothed(x[ok], seed)
                unsure = pred < 0
                reasons[unsure & (reasons == "")] = "abstained: the smoothed classifier cannot decide"
                conf = np.where(unsure, conf, agree)
            abstain = reasons != ""
            out.loc[ok, "confidence"] = conf.astype(float)
            out.loc[ok, "abstain"] = abstain
            out.loc[ok, "reason"] = reasons
            keep = ok[~abstain]
            out.loc[keep, "class_index"] = pred[~abstain]
            out.loc[keep, "label"] = [s.classes[i] for i in pred[~abstain]]
        return out[COLUMNS]

    def _smoothed(self, x: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        from robustops.evaluation.certify import Smoothed, sample_counts

        sm = self.settings.smoothing
        smooth = Smoothed(self.model, len(self.settings.classes), sm["sigma"])
        gen = torch.Generator().manual_seed(seed)
        pred = smooth.predict(torch.from_numpy(x), sm["n"], sm["alpha"], gen)
        counts = sample_counts(
            self.model, torch.from_numpy(x), sm["n"], sm["sigma"], len(self.settings.classes), gen
        )
        share = counts.max(1) / max(1, sm["n"])
        return pred, share


def settings_for(
    spec: dict[str, Any], guard: Any, smoothing: Any = None, max_batch: int = 10_000
) -> GuardSettings:
    """Guard settings from a checkpoint spec and a scorecard's :class:`~robustops.evaluation.specification.Guard`."""
    sm = None
    if smoothing is not None:
        sm = {"sigma": smoothing.sigma, "n": min(smoothing.n, 1000), "alpha": smoothing.alpha}
    thr = float(guard.threshold) if guard is not None else 0.0
    e_thr = float(guard.energy_threshold) if guard is not None else -math.inf
    return GuardSettings(list(spec["classes"]), list(spec["shape"]), thr, e_thr, max_batch, sm)
