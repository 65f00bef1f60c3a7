"""Loading the three data sources: the embedded digits, an .npz file, an image folder.

Each loader hands its raw arrays to :mod:`robustops.data.validate`, so every source gets the same
checks and comes out as a :class:`Dataset` in the canonical layout.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from robustops.config import DataConfig, DataSource
from robustops.data.npz import read_arrays
from robustops.data.validate import check_classes, check_images, check_labels
from robustops.errors import DataValidationError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
MIN_PER_CLASS = 3  # one sample each for train, validation and test


@dataclass
class Dataset:
    """Images as float32 (N, C, H, W) in [0, 1], labels as int64 class indices 0..K-1."""

    x: np.ndarray
    y: np.ndarray
    classes: list[str]
    source: str

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.x.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def counts(self) -> dict[str, int]:
        k = np.bincount(self.y, minlength=self.num_classes)
        return {c: int(n) for c, n in zip(self.classes, k, strict=True)}


def _index_labels(y: np.ndarray) -> tuple[np.ndarray, list[str]]:
    # Users may label classes 1..10 or {0, 3, 7}; the model needs 0..K-1. Keep the originals as names.
    values, idx = np.unique(y, return_inverse=True)
    return idx.astype(np.int64), [str(v) for v in values]


def load_digits() -> Dataset:
    """scikit-learn's 8x8 digits (1797 images, 10 classes), shipped with the package: no network."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = (d.images / 16.0).astype(np.float32)  # pixel values are 0..16
    x = check_images(x, "digits")
    return Dataset(x, d.target.astype(np.int64), [str(c) for c in range(10)], "digits")


def _fail(path: Path, msg: str) -> None:
    raise DataValidationError(f"{path}: {msg}")


def _open(path: Path, kind: str) -> None:
    try:
        exists = path.exists()
    except (OSError, ValueError) as e:  # a name too long, or with a NUL byte
        reason = getattr(e, "strerror", None) or e
        _fail(path, f"is not a usable path ({reason}); set data.path to an existing {kind}")
    if not exists:
        _fail(path, f"not found; set data.path to an existing {kind}")
    try:
        if path.is_file():
            with path.open("rb"):
                pass
        else:
            list(path.iterdir())
    except OSError as e:
        _fail(path, f"cannot be read ({e.strerror}); check its permissions")


def load_npz(path: str | Path) -> Dataset:
    """Loads ``x`` and ``y`` from an .npz file; pickled content is refused, never loaded."""
    x, y = _read_npz(Path(path), need_labels=True)
    y, classes = _index_labels(y)
    return Dataset(x, y, classes, str(path))


def _read_npz(path: Path, need_labels: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Validated ``x`` and, when present (or required), ``y`` of an .npz file."""
    _open(path, ".npz file")
    if not path.is_file():
        _fail(path, "is a folder; set data.source to 'folder' or point data.path at an .npz file")
    with path.open("rb") as f:
        magic = f.read(6)
    if magic.startswith(b"\x93NUMPY"):
        _fail(path, "is a single .npy array; save np.savez(path, x=images, y=labels) instead")
    if not magic.startswith(b"PK"):
        _fail(path, "is not an .npz file (no zip header); save it with np.savez(path, x=..., y=...)")
    fix = "save it with np.savez(path, x=images, y=labels)"
    arrays, keys = read_arrays(path, ("x", "y"), fix)
    wanted = ("x", "y") if need_labels or "y" in keys else ("x",)
    missing = [k for k in wanted if k not in keys]
    if missing:
        _fail(path, f"missing array(s) {', '.join(missing)} (found: {', '.join(keys) or 'none'}); {fix}")
    x = check_images(arrays["x"], str(path))
    y = check_labels(arrays["y"], len(x), str(path)) if "y" in arrays else None
    return x, y


def _read_image(file: Path, channels: int | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # PIL only warns between its bomb limit and twice that: refuse those as well.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file) as im:
                im.load()
                mode = {1: "L", 3: "RGB"}.get(channels or 0)
                if mode is None:
                    mode = "L" if im.mode in ("1", "L", "I", "I;16", "F") else "RGB"
                arr = np.asarray(im.convert(mode), dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # Its header declares more pixels than PIL's bomb limit: refused before decoding.
        _fail(file, f"is too large to decode ({str(e).split(' exceeds')[0]}); resize it or remove it")
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
        struct.error,
        zlib.error,
    ) as e:
        # Malformed files fail in many ways inside PIL's decoders (a bad chunk, a short stream).
        _fail(file, f"is not a readable PNG/JPEG image ({type(e).__name__}); remove or replace it")
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def load_folder(
    path: str | Path, channels: int | None = None, size: tuple[int, int] | None = None
) -> Dataset:
    """Loads ``path/<class>/<image>.png|jpg``; the subfolder names are the class names.

    Hidden files (``.DS_Store``) are skipped; any other non-image file is an error, so that a
    stray file is not silently dropped from the training data.
    """
    path = Path(path)
    _open(path, "image folder")
    if not path.is_dir():
        _fail(path, "is a file; set data.source to 'npz' or point data.path at an image folder")
    dirs = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not dirs:
        _fail(path, "is empty; it needs one subfolder per class holding PNG/JPEG images")
    files: list[tuple[Path, int]] = []
    for label, d in enumerate(dirs):
        entries = sorted(f for f in d.iterdir() if not f.name.startswith("."))
        others = [f for f in entries if f.is_dir() or f.suffix.lower() not in IMAGE_SUFFIXES]
        if others:
            _fail(others[0], "is not a PNG/JPEG image; class folders may hold only images")
        if not entries:
            _fail(d, "holds no images; add PNG/JPEG files or remove the class folder")
        files += [(f, label) for f in entries]

    images = [_read_image(f, channels) for f, _ in files]
    if channels is None and len({im.shape[0] for im in images}) > 1:
        # Mixed grayscale and colour: promote all to RGB rather than drop colour.
        images = [np.repeat(im, 3, axis=0) if im.shape[0] == 1 else im for im in images]
    if size is not None:
        images = [resize(im[None], size)[0] for im in images]
    else:
        sizes = {im.shape[1:] for im in images}
        if len(sizes) > 1:
            first = {}
            for im, (f, _) in zip(images, files, strict=True):
                first.setdefault(im.shape[1:], f)
            (s1, f1), (s2, f2) = list(first.items())[:2]
            _fail(
                path,
                f"images have different sizes ({s1[0]}x{s1[1]} in {f1.name}, {s2[0]}x{s2[1]} in "
                f"{f2.name}); set data.image_size to resize them",
            )
    x = check_images(np.stack(images), str(path))
    y = np.array([label for _, label in files], dtype=np.int64)
    return Dataset(x, y, [d.name for d in dirs], str(path))


def resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resizes (N, C, H, W) images to ``size`` (bilinear, antialiased when shrinking)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    dtype = x.dtype
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    out = F.interpolate(t, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
    out = out.clamp_(0, 255 if dtype == np.uint8 else 1).numpy()
    return out.round().astype(np.uint8) if dtype == np.uint8 else out


def _channels(x: np.ndarray, channels: int | None) -> np.ndarray:
    if channels is None or x.shape[1] == channels:
        return x
    if channels == 3:
        return np.repeat(x, 3, axis=1)
    # ITU-R 601 luma, the weights PIL uses for "L".
    w = np.array([0.299, 0.587, 0.114], dtype=np.float32).reshape(1, 3, 1, 1)
    return (x * w).sum(axis=1, keepdims=True)


def load_dataset(cfg: DataConfig) -> Dataset:
    """Loads, validates and (optionally) resizes the configured data."""
    if cfg.source is DataSource.DIGITS:
        ds = load_digits()
    elif cfg.source is DataSource.NPZ:
        ds = load_npz(cfg.path)
    else:
        ds = load_folder(cfg.path, cfg.channels, cfg.image_size)
    ds.x = _channels(ds.x, cfg.channels)
    if cfg.image_size is not None:
        ds.x = resize(ds.x, cfg.image_size)
    check_classes(ds.y, MIN_PER_CLASS, ds.source, ds.classes)
    return ds


def load_for_model(
    source: DataSource, path: Path, shape: tuple[int, int, int], classes: list[str], what: str = "data"
) -> Dataset:
    """Loads an evaluation set (npz or image folder) in a trained model's input shape, with its
    labels mapped onto the model's classes by name.

    Unlike :func:`load_dataset` it needs no minimum per class: it is scored, not split. Channels
    and size are converted to ``shape``.

    Raises:
        DataValidationError: the file is malformed (as for training data), or it has a class the
            model does not know.
    """
    c, h, w = shape
    ds = load_npz(path) if DataSource(source) is DataSource.NPZ else load_folder(path, c, (h, w))
    ds.x = _channels(ds.x, c)
    if ds.x.shape[2:] != (h, w):
        ds.x = resize(ds.x, (h, w))
    unknown = sorted(set(ds.classes) - set(classes))
    if unknown:
        raise DataValidationError(
            f"{path}: {what} has class(es) {unknown} the model does not know (its classes: {classes}); "
            "label it with the training class names"
        )
    mapping = np.array([classes.index(name) for name in ds.classes], dtype=np.int64)
    return Dataset(ds.x, mapping[ds.y], list(classes), str(path))


def load_batch(
    path: str | Path, shape: tuple[int, int, int], classes: list[str]
) -> tuple[np.ndarray, np.ndarray | None]:
    """A production batch in a model's input shape: images, and labels when the batch has them.

    Accepts an .npz with ``x`` (and optionally ``y``, labelled with the class names), a folder of
    class subfolders (labelled), or a flat folder of images (unlabelled).
    """
    path = Path(path)
    c, h, w = shape
    if path.is_dir() and not any(p.is_dir() for p in path.iterdir()):
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            _fail(path, "is empty; put the batch's PNG/JPEG images in it")
        bad = [f.name for f in files if f.suffix.lower() not in IMAGE_SUFFIXES]
        if bad:
            _fail(path / bad[0], "is not a PNG/JPEG image; the batch folder may hold only images")
        images = [resize(_read_image(f, c)[None].astype(np.float32) / 255, (h, w))[0] for f in files]
        return check_images(np.stack(images), str(path)), None
    if path.is_dir():
        ds = load_for_model(DataSource.FOLDER, path, shape, classes, "the batch")
        return ds.x, ds.y
    _open(path, ".npz file")
    x, y = _read_npz(path, need_labels=False)
    x = _channels(x, c)
    if x.shape[2:] != (h, w):
        x = resize(x, (h, w))
    if y is None:
        return x, None
    names = [str(v) for v in y.tolist()]
    unknown = sorted(set(names) - set(classes))
    if unknown:
        _fail(path, f"the batch has label(s) {unknown[:5]} the model does not know (its classes: {classes})")
    return x, np.array([classes.index(n) for n in names], dtype=np.int64)
