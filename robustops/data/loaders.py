"""Loading the three data sources: the embedded digits, an .npz file, an image folder.

Each loader hands its raw arrays to :mod:`robustops.data.validate`, so every source gets the same
checks and comes out as a :class:`Dataset` in the canonical layout.
"""

from __future__ import annotations

import stat
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from robustops.config import DataConfig, DataSource, LimitsConfig
from robustops.data.npz import gib, read_arrays
from robustops.data.validate import check_classes, check_images, check_labels
from robustops.errors import DataValidationError, DataWarning
from robustops.names import class_segments

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
    def values_per_image(self) -> int:
        """Channels x height x width: the size of the work per image (``robustops.cpus``)."""
        return int(np.prod(self.x.shape[1:]))

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


def _warn(msg: str) -> None:
    warnings.warn(DataWarning(msg), stacklevel=3)


# What an entry is, when it is neither a regular file nor a folder: reading a FIFO would block
# forever, a device would never end.
_SPECIAL = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def _kind(path: Path, fix: str) -> str:
    """'file', 'folder', or what else the path is ('a FIFO (named pipe)', ...); follows links."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        _fail(path, f"not found; {fix}")
    except (OSError, ValueError) as e:  # a name too long, with a NUL byte, a loop of links
        reason = getattr(e, "strerror", None) or e
        _fail(path, f"is not a usable path ({reason}); {fix}")
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "folder"
    return _SPECIAL.get(stat.S_IFMT(mode), "not a regular file")


def _open(path: Path, kind: str) -> str:
    """Checks that ``path`` exists and can be read, without opening anything that could block;
    returns 'file' or 'folder'."""
    found = _kind(path, f"set data.path to an existing {kind}")
    if found not in ("file", "folder"):
        _fail(path, f"is {found}, not a regular file or folder; set data.path to an existing {kind}")
    try:
        if found == "file":
            with path.open("rb"):
                pass
        else:
            list(path.iterdir())
    except OSError as e:
        _fail(path, f"cannot be read ({e.strerror}); check its permissions")
    return found


# Hidden entries that hold no data: skipped without a word. Any other hidden file or folder is
# skipped with a warning that names it (a class folder named '...' would otherwise vanish).
SYSTEM_ENTRIES = {".DS_Store", ".ipynb_checkpoints", ".git", ".gitkeep", ".gitignore", ".directory",
                  ".Trashes", ".Spotlight-V100", ".fseventsd"}  # fmt: skip


def _listing(folder: Path) -> list[Path]:
    """The visible entries of ``folder``, sorted; hidden ones that are not system files are named
    in a :class:`DataWarning`."""
    entries = sorted(folder.iterdir())
    hidden = [e for e in entries if e.name.startswith(".")]
    odd = [e.name for e in hidden if e.name not in SYSTEM_ENTRIES and not e.name.startswith("._")]
    if odd:
        shown = ", ".join(repr(n) for n in odd[:5]) + (f" and {len(odd) - 5} more" if len(odd) > 5 else "")
        _warn(f"{folder}: skipped hidden entries {shown} (names starting with '.'); rename them to use them")
    return [e for e in entries if not e.name.startswith(".")]


def _image_files(entries: list[Path], where: str) -> list[Path]:
    """``entries`` if each is a regular PNG/JPEG file; a clear error for the first that is not."""
    for f in entries:
        kind = _kind(f, "remove it")
        if kind != "file":
            what = "a folder" if kind == "folder" else kind
            _fail(f, f"is {what}, not an image file; {where} may hold only PNG/JPEG images")
        if f.suffix.lower() not in IMAGE_SUFFIXES:
            _fail(f, f"is not a PNG/JPEG image; {where} may hold only images")
    return entries


def load_npz(path: str | Path, limits: LimitsConfig | None = None) -> Dataset:
    """Loads ``x`` and ``y`` from an .npz file; pickled content is refused, never loaded."""
    x, y = _read_npz(Path(path), need_labels=True, limits=limits or LimitsConfig())
    y, classes = _index_labels(y)
    return Dataset(x, y, classes, str(path))


def _read_npz(path: Path, need_labels: bool, limits: LimitsConfig) -> tuple[np.ndarray, np.ndarray | None]:
    """Validated ``x`` and, when present (or required), ``y`` of an .npz file."""
    if _open(path, ".npz file") != "file":
        _fail(path, "is a folder; set data.source to 'folder' or point data.path at an .npz file")
    with path.open("rb") as f:
        magic = f.read(6)
    if magic.startswith(b"\x93NUMPY"):
        _fail(path, "is a single .npy array; save np.savez(path, x=images, y=labels) instead")
    if not magic.startswith(b"PK"):
        _fail(path, "is not an .npz file (no zip header); save it with np.savez(path, x=..., y=...)")
    fix = "save it with np.savez(path, x=images, y=labels)"
    arrays, keys = read_arrays(path, ("x", "y"), fix, limits.max_bytes)
    wanted = ("x", "y") if need_labels or "y" in keys else ("x",)
    missing = [k for k in wanted if k not in keys]
    if missing:
        _fail(path, f"missing array(s) {', '.join(missing)} (found: {', '.join(keys) or 'none'}); {fix}")
    x = check_images(arrays.pop("x"), str(path))
    y = check_labels(arrays["y"], len(x), str(path)) if "y" in arrays else None
    return x, y


class _Budget:
    """The decoded bytes (float32) an input may still take: ``limits.max_bytes`` counted down,
    image by image, from each image's header before it is decoded."""

    def __init__(self, limits: LimitsConfig, where: Path):
        self.limits, self.where, self.used, self.count = limits, where, 0, 0

    def take(self, nbytes: int, file: Path) -> None:
        self.used += nbytes
        self.count += 1
        if self.used > self.limits.max_bytes:
            _fail(
                self.where,
                f"its images decode to more than limits.max_bytes = {gib(self.limits.max_bytes)} as float32 "
                f"(reached at image {self.count}, {file.name}): set data.image_size to shrink them, use "
                "fewer images, or raise the limit (--set limits.max_bytes=...)",
            )


_GRAY_MODES = {"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"}
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}


def _pixels(im: Any, file: Path, channels: int) -> np.ndarray:
    """A decoded PIL image as (C, H, W): uint8 for 8-bit images, float32 in [0, 1] for deeper ones.

    Nothing is dropped without a word: 16-bit pixels are scaled (``convert('L')`` would clip
    them to 0 and 1), and an alpha channel that hides part of the image is refused, because the
    colour under a transparent pixel is not what anyone sees.
    """
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        if mode == "I":
            _fail(file, "holds 32-bit integer pixels; save it as an 8- or 16-bit PNG")
        arr = np.asarray(im, dtype=np.float32)
        if mode.startswith("I;16"):
            arr = arr / 65535.0
        elif not (np.isfinite(arr).all() and arr.min() >= 0 and arr.max() <= 1):
            _fail(file, "holds floating-point pixels outside [0, 1]; save it as an 8- or 16-bit PNG")
        arr = arr[None]
        return np.repeat(arr, 3, axis=0) if channels == 3 else arr
    if mode in _ALPHA_MODES or "transparency" in im.info:
        alpha = np.asarray(im.convert("RGBA"))[..., 3]
        see_through = float((alpha < 255).mean())
        if see_through > 0:
            _fail(
                file,
                f"has transparent pixels ({see_through:.0%} of them): what lies under transparency is "
                "not what a viewer shows; flatten it onto a background and save it without alpha",
            )
    arr = np.asarray(im.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _read_image(
    file: Path,
    channels: int | None,
    size: tuple[int, int] | None,
    limits: LimitsConfig,
    budget: _Budget,
    convert: bool = True,
) -> np.ndarray:
    """One image as (C, H, W) (uint8, or float32 in [0, 1] for 16-bit), resized to ``size`` as it
    is read; its header is checked against the limits before it is decoded. ``convert=False``
    refuses an image whose channels or size differ from ``channels`` and ``size``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # limits.max_image_pixels decides below; Pillow's own hard limit still raises.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(file) as im:
                w, h = im.size
                if w * h > limits.max_image_pixels:
                    _fail(
                        file,
                        f"is {w}x{h} = {w * h:,} pixels, above limits.max_image_pixels = "
                        f"{limits.max_image_pixels:,}: resize it, remove it, or raise the limit",
                    )
                frames = getattr(im, "n_frames", 1)
                if frames > 1 and im.format != "MPO":  # MPO: a camera JPEG with a preview frame
                    _fail(file, f"holds {frames} frames (an animation or pages); save each as its own image")
                native = 1 if im.mode in _GRAY_MODES else 3
                if not convert and ((channels or native), *(size or (h, w))) != (native, h, w):
                    _refuse_shape(file, (native, h, w), ((channels or native), *(size or (h, w))))
                c = channels or native
                out_h, out_w = size or (h, w)
                budget.take(c * out_h * out_w * 4, file)
                im.load()
                arr = _pixels(im, file, c)
    except DataValidationError:
        raise
    except Image.DecompressionBombError as e:
        # Beyond twice Pillow's limit, refused from the header before decoding.
        _fail(
            file,
            f"is too large to decode ({str(e).split(' exceeds')[0]}), above limits.max_image_pixels = "
            f"{limits.max_image_pixels:,}; resize it or remove it",
        )
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
    if size is not None and tuple(arr.shape[1:]) != tuple(size):
        arr = resize(arr[None], size)[0]
    return arr


def read_image(file: Path, channels: int, size: tuple[int, int], limits: LimitsConfig) -> np.ndarray:
    """One image as (C, H, W), converted to ``channels`` and resized to ``size`` as it is read
    (uint8, or float32 in [0, 1] for 16-bit), its header checked against ``limits`` first."""
    return _read_image(file, channels, size, limits, _Budget(limits, file))


def _refuse_shape(where: Path, got: tuple[int, ...], want: tuple[int, ...]) -> None:
    c, h, w = got
    _fail(
        where,
        f"holds {'RGB' if c == 3 else 'greyscale'} {h}x{w} images; the model takes "
        f"{want[0]}x{want[1]}x{want[2]} (channels x height x width): convert them to that shape, or "
        "pass --convert to have them converted (colour to luma or grey repeated; size by bilinear resizing)",
    )


def check_shape(x: np.ndarray, shape: tuple[int, int, int], where: Path) -> None:
    """Refuses (N, C, H, W) images that are not of the model's input ``shape``."""
    if tuple(x.shape[1:]) != tuple(shape):
        _refuse_shape(where, tuple(x.shape[1:]), tuple(shape))


def _stack(images: list[np.ndarray], channels: int | None, source: str) -> np.ndarray:
    """(N, C, H, W) float32 in [0, 1] from per-image arrays of one size."""
    if channels is None and len({im.shape[0] for im in images}) > 1:
        # Mixed grayscale and colour: promote all to RGB rather than drop colour.
        images = [np.repeat(im, 3, axis=0) if im.shape[0] == 1 else im for im in images]
    if any(im.dtype != np.uint8 for im in images):  # a 16-bit image among them: all as float
        images = [im.astype(np.float32) / 255.0 if im.dtype == np.uint8 else im for im in images]
    return check_images(np.stack(images), source)


def load_folder(
    path: str | Path,
    channels: int | None = None,
    size: tuple[int, int] | None = None,
    limits: LimitsConfig | None = None,
    convert: bool = True,
) -> Dataset:
    """Loads ``path/<class>/<image>.png|jpg``; the subfolder names are the class names.

    Images are resized as they are read, so memory grows with the output size. System files
    (``.DS_Store``) are skipped; other hidden entries and files beside the class folders are
    skipped with a :class:`DataWarning`; anything else that is not an image is an error, so
    that nothing is dropped from the training data without a word.
    """
    path = Path(path)
    limits = limits or LimitsConfig()
    if _open(path, "image folder") != "folder":
        _fail(path, "is a file; set data.source to 'npz' or point data.path at an image folder")
    entries = _listing(path)
    dirs = [d for d in entries if _kind(d, "remove it") == "folder"]
    stray = [f.name for f in entries if f not in dirs]
    if stray and dirs:
        shown = ", ".join(stray[:5]) + (f" and {len(stray) - 5} more" if len(stray) > 5 else "")
        _warn(
            f"{path}: skipped {len(stray)} entries beside the class folders ({shown}); images belong in a class folder"
        )
    if not dirs:
        _fail(path, "is empty; it needs one subfolder per class holding PNG/JPEG images")
    files: list[tuple[Path, int]] = []
    for label, d in enumerate(dirs):
        entries = _image_files(_listing(d), "class folders")
        if not entries:
            _fail(d, "holds no images; add PNG/JPEG files or remove the class folder")
        files += [(f, label) for f in entries]
    budget = _Budget(limits, path)
    images = [_read_image(f, channels, size, limits, budget, convert) for f, _ in files]
    if size is None:
        first: dict[tuple[int, ...], Path] = {}
        for im, (f, _) in zip(images, files, strict=True):
            first.setdefault(im.shape[1:], f)
        if len(first) > 1:
            (s1, f1), (s2, f2) = list(first.items())[:2]
            _fail(
                path,
                f"images have different sizes ({s1[0]}x{s1[1]} in {f1.name}, {s2[0]}x{s2[1]} in "
                f"{f2.name}); set data.image_size to resize them",
            )
    x = _stack(images, channels, str(path))
    del images
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


def to_channels(x: np.ndarray, channels: int | None) -> np.ndarray:
    """(N, C, H, W) images with ``channels`` channels: grey repeated, or colour as luma."""
    if channels is None or x.shape[1] == channels:
        return x
    if channels == 3:
        return np.repeat(x, 3, axis=1)
    # ITU-R 601 luma, the weights PIL uses for "L".
    w = np.array([0.299, 0.587, 0.114], dtype=np.float32).reshape(1, 3, 1, 1)
    return (x * w).sum(axis=1, keepdims=True)


def load_dataset(cfg: DataConfig, limits: LimitsConfig | None = None) -> Dataset:
    """Loads, validates and (optionally) resizes the configured data.

    Raises:
        DataValidationError: malformed data, a class too small to split, or class names that
            would collide in metric keys.
    """
    limits = limits or LimitsConfig()
    if cfg.source is DataSource.DIGITS:
        ds = load_digits()
    elif cfg.source is DataSource.NPZ:
        ds = load_npz(cfg.path, limits)
    else:
        ds = load_folder(cfg.path, cfg.channels, cfg.image_size, limits)
    ds.x = to_channels(ds.x, cfg.channels)
    if cfg.image_size is not None:
        ds.x = resize(ds.x, cfg.image_size)
    check_classes(ds.y, MIN_PER_CLASS, ds.source, ds.classes)
    try:
        class_segments(ds.classes)
    except ValueError as e:
        raise DataValidationError(f"{ds.source}: {e}") from None
    return ds


def load_for_model(
    source: DataSource,
    path: Path,
    shape: tuple[int, int, int],
    classes: list[str],
    what: str = "data",
    limits: LimitsConfig | None = None,
    convert: bool = True,
) -> Dataset:
    """Loads an evaluation set (npz or image folder) in a trained model's input shape, with its
    labels mapped onto the model's classes by name.

    Unlike :func:`load_dataset` it needs no minimum per class: it is scored, not split. Channels
    and size are converted to ``shape``; with ``convert=False`` other shapes are refused.

    Raises:
        DataValidationError: the file is malformed (as for training data), or it has a class the
            model does not know.
    """
    c, h, w = shape
    if DataSource(source) is DataSource.NPZ:
        ds = load_npz(path, limits)
        if not convert:
            check_shape(ds.x, shape, Path(path))
    else:
        ds = load_folder(path, c, (h, w), limits, convert)
    ds.x = to_channels(ds.x, c)
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


def load_images(
    path: Path, shape: tuple[int, int, int], limits: LimitsConfig | None = None, convert: bool = True
) -> np.ndarray:
    """Unlabelled images in a model's input shape: an .npz (``x``; ``y`` is ignored), a flat folder
    of images, or a folder of class folders (their names are ignored)."""
    path = Path(path)
    c, h, w = shape
    if _open(path, ".npz file or image folder") == "folder":
        entries = _listing(path)
        if any(_kind(e, "remove it") == "folder" for e in entries):
            x = load_folder(path, c, (h, w), limits, convert).x
        else:
            x = _flat_folder(path, entries, shape, limits or LimitsConfig(), convert)
    else:
        x, _ = _read_npz(path, need_labels=False, limits=limits or LimitsConfig())
        if not convert:
            check_shape(x, shape, path)
    x = to_channels(x, c)
    return x if x.shape[2:] == (h, w) else resize(x, (h, w))


def _flat_folder(
    path: Path, entries: list[Path], shape: tuple[int, int, int], limits: LimitsConfig, convert: bool = True
) -> np.ndarray:
    c, h, w = shape
    files = _image_files(entries, "the batch folder")
    if not files:
        _fail(path, "is empty; put the batch's PNG/JPEG images in it")
    budget = _Budget(limits, path)
    return _stack([_read_image(f, c, (h, w), limits, budget, convert) for f in files], c, str(path))


def load_batch(
    path: str | Path,
    shape: tuple[int, int, int],
    classes: list[str],
    limits: LimitsConfig | None = None,
    convert: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """A production batch in a model's input shape: images, and labels when the batch has them.

    Accepts an .npz with ``x`` (and optionally ``y``, labelled with the class names), a folder of
    class subfolders (labelled), or a flat folder of images (unlabelled). Images of other
    channels or size are refused unless ``convert``: the served model refuses them too.
    """
    path = Path(path)
    limits = limits or LimitsConfig()
    c, h, w = shape
    if _open(path, ".npz file or image folder") == "folder":
        entries = _listing(path)
        if not any(_kind(e, "remove it") == "folder" for e in entries):
            return _flat_folder(path, entries, shape, limits, convert), None
        ds = load_for_model(DataSource.FOLDER, path, shape, classes, "the batch", limits, convert)
        return ds.x, ds.y
    x, y = _read_npz(path, need_labels=False, limits=limits)
    if not convert:
        check_shape(x, shape, path)
    x = to_channels(x, c)
    if x.shape[2:] != (h, w):
        x = resize(x, (h, w))
    if y is None:
        return x, None
    names = [str(v) for v in y.tolist()]
    unknown = sorted(set(names) - set(classes))
    if unknown:
        _fail(path, f"the batch has label(s) {unknown[:5]} the model does not know (its classes: {classes})")
    return x, np.array([classes.index(n) for n in names], dtype=np.int64)


def load_for_blueprint(
    path: str | Path, blueprint: Any, limits: LimitsConfig, convert: bool = False
) -> Dataset:
    """An .npz file or an image folder (``--data``) in a model's input shape and labelled with its
    classes (``blueprint``: a :class:`robustops.models.Blueprint`); other channels or sizes are
    refused unless ``convert``."""
    source = DataSource.FOLDER if Path(path).is_dir() else DataSource.NPZ
    return load_for_model(source, Path(path), blueprint.shape, blueprint.classes, "--data", limits, convert)


def load_labelled(path: str | Path, limits: LimitsConfig, size: tuple[int, int] | None = None) -> Dataset:
    """A labelled .npz file or image folder (``--data``) in its own channels and size (a folder's
    images resized to ``size`` when given), for a model that takes the data as it is: a user's
    model, whose preprocessing resizes. Scored, not split: no minimum per class."""
    path = Path(path)
    if path.is_dir():
        return load_folder(path, None, size, limits)
    return load_npz(path, limits)


def relabel(ds: Dataset, classes: list[str]) -> Dataset:
    """``ds`` labelled with indices into ``classes`` (a model's output classes), matched by name.

    Raises:
        DataValidationError: the data has a class ``classes`` lacks.
    """
    unknown = [c for c in ds.classes if c not in classes]
    if unknown:
        raise DataValidationError(
            f"{ds.source}: class(es) {unknown[:5]} are not among the model's classes ({classes[:5]}...); "
            "set model.classes to name each output of the model"
        )
    mapping = np.array([classes.index(name) for name in ds.classes], dtype=np.int64)
    return Dataset(ds.x, mapping[ds.y], list(classes), ds.source)
