"""The guarded model: the defence in depth around one classifier, for serving and batch scoring.

1. Input validation: a request with the wrong rank, size, type or too many images is refused as a
   whole (:class:`RequestError`, a 4xx when served); an image with NaN/inf or values outside
   [0, 1] is rejected on its own row, with the reason, and the rest of the batch is answered.
2. The robust model, answering as its defence does (:meth:`robustops.defences.Defence.answer`:
   a smoothing defence answers with the smoothed classifier's PREDICT).
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
from torch import nn

from robustops.config import DefenceConfig
from robustops.defences import DEFENCES, settings_of
from robustops.errors import RobustopsError
from robustops.evaluation.postprocess import energy, softmax
from robustops.evaluation.specification import Thresholds
from robustops.inference import predict
from robustops.models import Blueprint

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
    # The float32 images of one request may take at most this much memory (default 256 MiB):
    # with large images it, not max_batch, caps the rows per request.
    max_bytes: int = 256 * 2**20
    defence: str | None = None  # the defence that answers, when it answers its own way
    answer: dict[str, Any] | None = field(default=None)  # that defence's serving settings

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> GuardSettings:
        """Settings from their JSON; a guard.json from before defences answered for themselves
        holds a ``smoothing`` block instead."""
        raw = dict(raw)
        smoothing = raw.pop("smoothing", None)
        if smoothing:
            raw |= {"defence": "smoothing", "answer": smoothing}
        return cls(**raw)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def max_rows(self) -> int:
        """The most images one request may hold."""
        c, h, w = self.shape
        return max(1, min(self.max_batch, self.max_bytes // (4 * c * h * w)))


MAX_RANK = 4


def _raw_shape(data: Any) -> tuple[int, ...]:
    """The shape of a request as sent, without converting it (nothing large is allocated).

    Arrays, tensors and DataFrames carry their shape; a nested list's shape is read along its
    first elements (a ragged list is refused later, when numpy converts it). A list nested
    deeper than any shape the model takes stops the walk.
    """
    shape = getattr(data, "shape", None)
    if shape is not None:
        try:
            return tuple(int(d) for d in shape)
        except (TypeError, ValueError):
            raise RequestError("the request's shape is not a tuple of sizes; send an array") from None
    dims: list[int] = []
    node = data
    while isinstance(node, (list, tuple)):
        dims.append(len(node))
        if len(dims) > MAX_RANK or not node:
            break
        node = node[0]
        if hasattr(node, "shape"):  # a list of arrays or tensors
            return tuple(dims) + _raw_shape(node)
    return tuple(dims)


def as_images(data: Any, settings: GuardSettings) -> np.ndarray:
    """The request as float32 (N, C, H, W), its size and shape checked before anything large is
    allocated: a request too large for the model is refused from its shape alone."""
    c, h, w = settings.shape
    if isinstance(data, dict):
        raise RequestError("send the images as an array (N, C, H, W) or (N, H, W), not an object")
    if not (isinstance(data, (list, tuple, pd.DataFrame)) or hasattr(data, "shape")):
        raise RequestError(
            f"send the images as an array (N, {c}, {h}, {w}) or a list of images, not {type(data).__name__}"
        )
    shape = _raw_shape(data)
    n = shape[0] if shape else 0
    rows = settings.max_rows()
    if n > rows:
        raise RequestError(f"{n} images in one request; send at most {rows} per request")
    values, most = math.prod(shape), rows * c * h * w
    if values > most:
        raise RequestError(
            f"the request holds {values:,} values (shape {shape}); this model takes at most {rows} images of "
            f"{c}x{h}x{w} ({most:,} values) per request: send fewer or smaller images"
        )
    if len(shape) > MAX_RANK:
        raise RequestError(f"images have rank {len(shape)} or more; this model takes (N, {c}, {h}, {w})")
    try:
        arr = data.to_numpy() if isinstance(data, pd.DataFrame) else np.asarray(data)
    except (ValueError, TypeError, RuntimeError, OverflowError) as e:
        # A ragged list, or a tensor numpy cannot read (bfloat16, requires grad).
        raise RequestError(f"the images are not a rectangular array of numbers ({e})") from None
    if arr.shape != shape:
        raise RequestError(f"the images are not a rectangular array (shape {arr.shape}, expected {shape})")
    if len(shape) == 2 and shape[1] == c * h * w:  # flattened rows, e.g. a DataFrame
        arr = arr.reshape(n, c, h, w)
    if len(shape) == 3 and c == 1:
        arr = arr.reshape(n, 1, *shape[1:])
    if arr.ndim != 4 or tuple(arr.shape[1:]) != (c, h, w):
        raise RequestError(
            f"images have shape {shape}; this model takes (N, {c}, {h}, {w})"
            + (f" or (N, {h}, {w})" if c == 1 else "")
        )
    if arr.dtype.kind not in "biuf":  # complex, text, objects, dates
        raise RequestError(f"images have dtype {arr.dtype}; send numbers in [0, 1]")
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: rejected per row
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
        flat = x.reshape(n, int(np.prod(x.shape[1:])))  # -1 cannot be inferred when n = 0
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
            if s.answer is not None and s.defence is not None:
                defence = DEFENCES.get(s.defence)
                pred, agree = defence.answer(self.model, x[ok], s.answer, len(s.classes), seed)
                unsure = pred < 0
                reasons[unsure & (reasons == "")] = f"abstained: {defence.undecided}"
                conf = np.where(unsure, conf, agree)
            abstain = reasons != ""
            out.loc[ok, "confidence"] = conf.astype(float)
            out.loc[ok, "abstain"] = abstain
            out.loc[ok, "reason"] = reasons
            keep = ok[~abstain]
            out.loc[keep, "class_index"] = pred[~abstain]
            out.loc[keep, "label"] = [s.classes[i] for i in pred[~abstain]]
        return out[COLUMNS]


def settings_for(
    blueprint: Blueprint,
    thresholds: Thresholds | None,
    defence: DefenceConfig | None = None,
    max_batch: int = 10_000,
    max_bytes: int = 256 * 2**20,
) -> GuardSettings:
    """Guard settings from a model's blueprint, its scorecard's thresholds
    (:class:`~robustops.evaluation.specification.Thresholds`, ``Scorecard.thresholds``; None:
    answer everything) and the model's defence settings."""
    answer = DEFENCES.get(defence.name).serving(settings_of(defence)) if defence is not None else None
    thr = float(thresholds.threshold) if thresholds is not None else 0.0
    e_thr = float(thresholds.energy_threshold) if thresholds is not None else -math.inf
    return GuardSettings(
        list(blueprint.classes),
        list(blueprint.shape),
        thr,
        e_thr,
        max_batch,
        max_bytes,
        defence.name if answer is not None else None,
        answer,
    )
