"""Input validation, defence layer 1: malformed data is rejected with a reason and a fix.

Every check raises :class:`DataValidationError` with one line that names what is wrong, where,
and what to do about it. Arrays that pass come out in the one shape the rest of the code uses:
``x`` float32 (N, C, H, W) in [0, 1] and ``y`` int64 class indices 0..K-1.
"""

from __future__ import annotations

import numpy as np

from robustops.errors import DataValidationError

CHANNELS = (1, 3)
MIN_SIDE = 4
MAX_LABEL = 2**53  # the largest float that still holds every integer below it


def _fail(source: str, msg: str) -> None:
    raise DataValidationError(f"{source}: {msg}")


def check_images(x: object, source: str = "data") -> np.ndarray:
    """Validates an image array and returns it as float32 (N, C, H, W) in [0, 1].

    Accepts (N, H, W) or (N, C, H, W) with C in {1, 3}, as uint8 0..255 or float 0..1.
    """
    if not isinstance(x, np.ndarray):
        _fail(source, f"images must be a numpy array, got {type(x).__name__}")
    if x.dtype == object or x.dtype.kind not in "uif":
        _fail(source, f"images have dtype {x.dtype}; save them as uint8 0..255 or float 0..1")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if x.shape[1] not in CHANNELS:
            if x.shape[3] in CHANNELS:
                _fail(
                    source,
                    f"images have shape {x.shape}, which looks channels-last (N,H,W,C); "
                    "save x.transpose(0, 3, 1, 2) to get (N,C,H,W)",
                )
            _fail(source, f"images have {x.shape[1]} channels (shape {x.shape}); use 1 or 3")
    else:
        _fail(
            source,
            f"images have rank {x.ndim} (shape {x.shape}); expected (N,H,W) or (N,C,H,W)",
        )
    n, _, h, w = x.shape
    if n == 0:
        _fail(source, "there are no images (N = 0); save at least 3 images per class")
    if min(h, w) < MIN_SIDE:
        _fail(source, f"images are {h}x{w}; they must be at least {MIN_SIDE}x{MIN_SIDE} pixels")

    if x.dtype == np.uint8:
        out = x.astype(np.float32)
        out /= 255.0  # in place: one float copy of the data at a time, not two
        return out
    if x.dtype.kind in "iu":
        lo, hi = int(x.min()), int(x.max())
        hint = "cast to uint8" if lo >= 0 and hi <= 255 else "scale to 0..255 and cast to uint8"
        _fail(source, f"images have integer dtype {x.dtype} (values {lo}..{hi}); {hint}")
    bad = ~np.isfinite(x)
    if bad.any():
        idx = int(np.argwhere(bad.reshape(n, -1).any(axis=1))[0, 0])
        _fail(
            source,
            f"{int(bad.sum())} pixel(s) are NaN or inf (first in image {idx}); clean or drop those images",
        )
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        hint = "divide by 255" if hi <= 255 and lo >= 0 else "rescale to [0, 1]"
        _fail(source, f"float pixels must lie in [0, 1], got {lo:g}..{hi:g}; {hint}")
    return x.astype(np.float32, copy=False)


def check_labels(y: object, n: int, source: str = "data") -> np.ndarray:
    """Validates labels against ``n`` images and returns them as int64."""
    if not isinstance(y, np.ndarray):
        _fail(source, f"labels must be a numpy array, got {type(y).__name__}")
    if y.ndim != 1:
        _fail(source, f"labels have shape {y.shape}; expected one integer per image, shape ({n},)")
    if len(y) != n:
        _fail(source, f"{n} images but {len(y)} labels; x and y must have the same length")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or not np.array_equal(y, np.round(y)):
            _fail(source, "labels are not integers; use integer class ids 0..K-1")
    elif y.dtype.kind not in "iu":
        _fail(source, f"labels have dtype {y.dtype}; use integer class ids 0..K-1")
    if n and (y < 0).any():
        _fail(source, f"labels contain negative values (min {y.min():g}); use class ids 0..K-1")
    # Beyond 2^53 a float label is no longer an exact integer, and beyond int64 the cast wraps:
    # distinct labels would merge into one class or get wrong names.
    top = MAX_LABEL if y.dtype.kind == "f" else int(np.iinfo(np.int64).max)
    if n and y.max() > top:
        _fail(source, f"labels go up to {y.max():g}, above {top:.3g}; use class ids 0..K-1")
    return y.astype(np.int64)


def check_classes(
    y: np.ndarray, min_per_class: int, source: str = "data", names: list[str] | None = None
) -> None:
    """Requires at least 2 classes and ``min_per_class`` samples in every class."""
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        _fail(source, f"found {len(classes)} class; a classifier needs at least 2")
    small = [
        (names[c] if names else int(c), int(k))
        for c, k in zip(classes, counts, strict=True)
        if k < min_per_class
    ]
    if small:
        shown = ", ".join(f"class {c}: {k}" for c, k in small[:5])
        _fail(
            source,
            f"too few samples to split into train/validation/test ({shown}); each class needs "
            f"at least {min_per_class}: add samples or drop the class",
        )
