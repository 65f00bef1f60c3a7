"""Corruption benchmarks read from files in their published layouts, one batch at a time.

- ``cifar_c`` (CIFAR-10-C, CIFAR-100-C): ``<corruption>.npy`` holds the test set under each of
  the five severities, stacked (rows ``(s - 1) * n`` to ``s * n`` are severity ``s``), as
  (5n, H, W, C) uint8; ``labels.npy`` holds the labels, for the 5n rows or the n images.
- ``imagenet_c`` (ImageNet-C, Tiny-ImageNet-C): ``<corruption>/<severity>/<class>/<image>``; the
  class folders are named as the model's classes.
- ``mnist_c`` (MNIST-C): ``<corruption>/test_images.npy`` (n, H, W, 1) uint8 and
  ``<corruption>/test_labels.npy``; one severity.

Array labels are class indices in the order of the model's classes. Arrays are memory-mapped
and images decoded a batch at a time, so memory stays bounded whatever the benchmark's size.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from robustops.config import CorruptionBenchmarkConfig, LimitsConfig
from robustops.data.loaders import IMAGE_SUFFIXES, read_image
from robustops.errors import DataValidationError

_WHERE = "evaluation.corruption_benchmark"


def _fail(msg: str) -> None:
    raise DataValidationError(f"{_WHERE}: {msg}")


def _array(path: Path) -> np.ndarray:
    if not path.is_file():
        _fail(f"{path} is missing; the layout needs it (see docs/scorecard.md)")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        _fail(f"{path} is not a readable .npy array ({type(e).__name__}: {str(e).splitlines()[0]})")
    raise AssertionError  # unreachable: _fail raises


def _images_nchw(x: np.ndarray, where: Path) -> np.ndarray:
    """(n, H, W, C) or (n, H, W) pixels as float32 (n, C, H, W) in [0, 1]."""
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        _fail(f"{where}: images must be (n, H, W, C) or (n, H, W), got shape {x.shape}")
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32).transpose(0, 3, 1, 2)) / scale


class _Arrays:
    """One corruption of an array layout: its images at one severity and their labels."""

    def __init__(self, images: Path, labels: Path, levels: int) -> None:
        self.images, self.x, y = images, _array(images), _array(labels)
        if len(self.x) % levels:
            _fail(f"{images}: {len(self.x)} rows are not {levels} severities of the same images")
        self.n = len(self.x) // levels
        if len(y) not in (self.n, len(self.x)):
            _fail(f"{labels}: {len(y)} labels for {self.n} images per severity in {images.name}")
        self.y = np.asarray(y[: self.n], dtype=np.int64)

    def rows(self, severity: int) -> np.ndarray:
        return np.arange(self.n) + (severity - 1) * self.n


def _subsample(n: int, cap: int | None, seed: int) -> np.ndarray:
    """The same seeded subsample for every corruption and severity, so they are comparable."""
    if cap is None or cap >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, cap, replace=False))


def _arrays(cfg: CorruptionBenchmarkConfig, corruption: str) -> _Arrays:
    root = Path(cfg.path)
    if cfg.layout == "cifar_c":
        return _Arrays(root / f"{corruption}.npy", root / "labels.npy", 5)
    return _Arrays(root / corruption / "test_images.npy", root / corruption / "test_labels.npy", 1)


def _files(
    cfg: CorruptionBenchmarkConfig, corruption: str, severity: int, classes: list[str]
) -> list[tuple[Path, int]]:
    folder = Path(cfg.path) / corruption / str(severity)
    if not folder.is_dir():
        _fail(f"{folder} is missing; the imagenet_c layout is <corruption>/<severity>/<class>/<image>")
    index = {c: i for i, c in enumerate(classes)}
    out = []
    for d in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if d.name not in index:
            _fail(f"{d}: class {d.name!r} is not one of the model's classes ({', '.join(classes[:5])}...)")
        out += [(f, index[d.name]) for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not out:
        _fail(f"{folder} holds no images in class folders")
    return out


def benchmark_batches(
    cfg: CorruptionBenchmarkConfig,
    corruption: str,
    severity: int,
    shape: tuple[int, int, int],
    classes: list[str],
    seed: int = 0,
    batch_size: int = 256,
    limits: LimitsConfig | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The images of one corruption at one severity, as float32 (N, C, H, W) batches in [0, 1]
    with their class indices; a seeded subsample of ``cfg.max_images``.

    Raises:
        DataValidationError: a file is missing or unreadable, or images or labels do not fit
            the model (``shape``, ``classes``).
    """
    if cfg.layout == "imagenet_c":
        files = _files(cfg, corruption, severity, classes)
        pick = _subsample(len(files), cfg.max_images, seed)
        limits = limits or LimitsConfig()
        for i in range(0, len(pick), batch_size):
            chosen = [files[j] for j in pick[i : i + batch_size]]
            images = [read_image(f, shape[0], shape[1:], limits) for f, _ in chosen]
            x = np.stack([im.astype(np.float32) / 255.0 if im.dtype == np.uint8 else im for im in images])
            yield x, np.array([label for _, label in chosen], dtype=np.int64)
        return
    arrays = _arrays(cfg, corruption)
    if arrays.y.min() < 0 or arrays.y.max() >= len(classes):
        _fail(
            f"{arrays.images.parent}: labels must be class indices 0..{len(classes) - 1}, got {arrays.y.min()}..{arrays.y.max()}"
        )
    rows = arrays.rows(severity)[_subsample(arrays.n, cfg.max_images, seed)]
    for i in range(0, len(rows), batch_size):
        take = rows[i : i + batch_size]
        x = _images_nchw(arrays.x[take], arrays.images)
        if x.shape[1:] != tuple(shape):
            _fail(
                f"{arrays.images}: images are {'x'.join(map(str, x.shape[1:]))}, the model takes {'x'.join(map(str, shape))}"
            )
        yield x, arrays.y[take - (severity - 1) * arrays.n]


def check_benchmark(cfg: CorruptionBenchmarkConfig, shape: tuple[int, int, int], classes: list[str]) -> None:
    """Every corruption and severity the config names is there and fits the model: array files
    by their headers and a first image, folders by their class names and a first image.

    Raises:
        DataValidationError: the first problem found, with the file or folder it concerns.
    """
    if not Path(cfg.path).is_dir():
        _fail(f"path {cfg.path} is not a folder")
    for corruption in cfg.names:
        for severity in cfg.levels:
            small = cfg.model_copy(update={"max_images": 1})
            next(benchmark_batches(small, corruption, severity, shape, classes, 0, 1))
