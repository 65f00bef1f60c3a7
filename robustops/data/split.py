"""Seeded, stratified train/validation/test split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robustops.config import DataConfig, LimitsConfig
from robustops.data.loaders import Dataset, load_dataset, load_for_model
from robustops.errors import DataValidationError


@dataclass
class Split:
    train: Dataset
    val: Dataset
    test: Dataset

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train.y), "val": len(self.val.y), "test": len(self.test.y)}


def split_indices(
    y: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class split that puts at least one sample of every class in each part.

    Written here rather than chaining sklearn's train_test_split twice: that can leave a small
    class out of the validation or test part, and then per-class recall is undefined.
    """
    rng = np.random.default_rng(seed)
    parts: tuple[list, list, list] = ([], [], [])
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n = len(idx)
        n_test = max(1, round(n * test_fraction))
        n_val = max(1, round(n * val_fraction))
        if n - n_test - n_val < 1:
            raise ValueError(f"class {c} has {n} samples, too few to split three ways")
        parts[0].append(idx[n_test + n_val :])
        parts[1].append(idx[n_test : n_test + n_val])
        parts[2].append(idx[:n_test])
    return tuple(np.sort(np.concatenate(p)) for p in parts)  # type: ignore[return-value]


def split_dataset(ds: Dataset, val_fraction: float, test_fraction: float, seed: int) -> Split:
    tr, va, te = split_indices(ds.y, val_fraction, test_fraction, seed)

    def part(idx: np.ndarray) -> Dataset:
        return Dataset(ds.x[idx], ds.y[idx], ds.classes, ds.source)

    return Split(part(tr), part(va), part(te))


def split_train_val(ds: Dataset, val_fraction: float, seed: int, test: Dataset) -> Split:
    """Training and validation parts of ``ds`` (stratified, seeded) beside a fixed test set."""
    # split_indices keeps one image per class for a test part: it goes back to training.
    tr, va, te = split_indices(ds.y, val_fraction, 0.0, seed)
    tr = np.sort(np.concatenate([tr, te]))
    return Split(
        Dataset(ds.x[tr], ds.y[tr], ds.classes, ds.source),
        Dataset(ds.x[va], ds.y[va], ds.classes, ds.source),
        test,
    )


def thin_classes(ds: Dataset, fractions: dict[str, float], seed: int) -> Dataset:
    """Keeps only ``fractions[name]`` of the named classes (at least one sample each).

    Used to simulate a rare class on balanced data; apply it to the training split only.
    """
    if not fractions:
        return ds
    unknown = sorted(set(fractions) - set(ds.classes))
    if unknown:
        raise DataValidationError(
            f"data.train_class_fraction names unknown class(es) {unknown}; classes are {ds.classes}"
        )
    rng = np.random.default_rng(seed)
    keep = np.ones(len(ds.y), bool)
    for name, frac in fractions.items():
        idx = np.flatnonzero(ds.y == ds.classes.index(name))
        drop = rng.permutation(idx)[max(1, round(len(idx) * frac)) :]
        keep[drop] = False
    return Dataset(ds.x[keep], ds.y[keep], ds.classes, ds.source)


def add_training_data(train: Dataset, paths: list, limits: LimitsConfig | None = None) -> Dataset:
    """Appends labelled datasets (npz or image folders, labelled with the training class names,
    converted to the training shape) to the training split; validation and test stay as they are."""
    if not paths:
        return train
    from robustops.data.loaders import load_batch

    xs, ys = [train.x], [train.y]
    for path in paths:
        # Converted: extra training data (and a drift batch the monitor was told to convert) is
        # configured on purpose; a production batch the model cannot take never gets this far.
        x, y = load_batch(path, train.shape, train.classes, limits, convert=True)
        if y is None:
            raise DataValidationError(
                f"{path}: has no labels; data.extra_train needs labelled images (npz with y, or class folders)"
            )
        xs.append(x.astype(np.float32))
        ys.append(y)
    return Dataset(np.concatenate(xs), np.concatenate(ys), train.classes, train.source)


def load_split(cfg: DataConfig, seed: int, limits: LimitsConfig | None = None) -> Split:
    """Everything the data stage reads, validated and split: the configured data split seeded and
    stratified (or beside ``test_path``), the classes of ``train_class_fraction`` thinned in the
    training split, and ``extra_train`` appended to it.

    Raises:
        DataValidationError: any of those inputs is malformed or does not fit the others.
    """
    ds = load_dataset(cfg, limits)
    if cfg.test_path is None:
        split = split_dataset(ds, cfg.val_fraction, cfg.test_fraction, seed)
    else:
        test = load_for_model(cfg.source, cfg.test_path, ds.shape, ds.classes, "data.test_path", limits)
        split = split_train_val(ds, cfg.val_fraction, seed, test)
    del ds  # the split holds its own copies: keep one copy of the data, not two
    split.train = thin_classes(split.train, cfg.train_class_fraction, seed)
    split.train = add_training_data(split.train, cfg.extra_train, limits)
    return split


def split_for_thresholds(ds: Dataset, seed: int, share: float = 0.25) -> Split:
    """A seeded, stratified ``share`` of each class (at least one image of classes with two or more)
    picks the thresholds; the rest is scored. Classes with one image go to the scored part."""
    rng = np.random.default_rng(seed)
    val, test = [], []
    for c in np.unique(ds.y):
        idx = rng.permutation(np.flatnonzero(ds.y == c))
        k = max(1, round(len(idx) * share)) if len(idx) >= 2 else 0
        val.append(idx[:k])
        test.append(idx[k:])
    v, t = np.sort(np.concatenate(val)), np.sort(np.concatenate(test))
    part = lambda i: Dataset(ds.x[i], ds.y[i], ds.classes, ds.source)  # noqa: E731
    return Split(part(t[:0]), part(v), part(t))
