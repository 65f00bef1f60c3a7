"""Adversarial example sets: generate them with any attack, save and load them as plain .npz.

The file holds only numeric and unicode arrays, so it loads with ``allow_pickle=False``; its
``x`` and ``y`` arrays make it loadable as training data by :func:`robustops.data.load_npz` too.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from robustops.attacks import Attack, eval_mode
from robustops.data.npz import read_arrays
from robustops.errors import DataValidationError

KEYS = ("x", "y", "index", "robust", "classes", "settings")


@dataclass
class AdversarialSet:
    """Adversarial images with what is needed to trace and score them.

    Attributes:
        x: adversarial images, float32 (N, C, H, W) in [0, 1].
        y: true labels, int64.
        x_clean_index: int64 row of each image in the split it was made from.
        settings: the attack's :meth:`~robustops.attacks.Attack.settings`.
        classes: class names, indexed by ``y``.
        robust: bool, whether the model still classified the image correctly after the attack.
    """

    x: np.ndarray
    y: np.ndarray
    x_clean_index: np.ndarray
    settings: dict[str, Any]
    classes: list[str]
    robust: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


def generate(
    model: nn.Module,
    attack: Attack,
    x: np.ndarray,
    y: np.ndarray,
    classes: list[str],
    batch_size: int = 256,
    device: str = "cpu",
    index: np.ndarray | None = None,
) -> AdversarialSet:
    """Attacks every input, already misclassified ones included, and records which stay correct.

    Unlike :func:`robustops.evaluation.robust_accuracy`, misclassified inputs are attacked too, so
    the set has one adversarial image per input.

    Args:
        model: the classifier to attack; its train/eval mode is restored afterwards.
        attack: any registered attack, already configured.
        x: float32 images (N, C, H, W) in [0, 1].
        y: int64 true labels, one per image.
        classes: class names, stored with the set.
        batch_size: inputs attacked at once.
        device: torch device the model lives on.
        index: rows of ``x`` in the source split (e.g. after subsampling); default 0..N-1.

    Returns:
        The adversarial set, on the CPU as numpy arrays.

    Raises:
        ValueError: ``x``, ``y`` and ``index`` disagree in length, or the attack rejects the input.
    """
    index = np.arange(len(x), dtype=np.int64) if index is None else np.asarray(index, dtype=np.int64)
    if not len(x) == len(y) == len(index):
        raise ValueError(f"x, y and index must have one row per input, got {len(x)}, {len(y)}, {len(index)}")
    advs, robust = [], []
    with eval_mode(model):
        for i in range(0, len(y), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size])).to(device)
            yb = torch.from_numpy(np.ascontiguousarray(y[i : i + batch_size])).to(device)
            x_adv = attack(model, xb, yb)
            with torch.no_grad():
                robust.append((model(x_adv).argmax(1) == yb).cpu().numpy())
            advs.append(x_adv.cpu().numpy())
    return AdversarialSet(
        x=np.concatenate(advs) if advs else np.empty((0, *x.shape[1:]), dtype=np.float32),
        y=np.asarray(y, dtype=np.int64).copy(),
        x_clean_index=index,
        settings=dict(attack.settings()),
        classes=list(classes),
        robust=np.concatenate(robust) if robust else np.empty(0, dtype=bool),
    )


def save_npz(aset: AdversarialSet, path: str | Path) -> Path:
    """Writes the set as a compressed .npz that loads with ``allow_pickle=False``.

    The file is written next to ``path`` and renamed into place, so a crash never leaves a
    half-written file behind for :func:`load_npz` to trip over.

    Args:
        aset: the set to save.
        path: target file; parent folders are created. No ``.npz`` suffix is added.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("wb") as f:
            np.savez_compressed(
                f,
                x=np.asarray(aset.x, dtype=np.float32),
                y=np.asarray(aset.y, dtype=np.int64),
                index=np.asarray(aset.x_clean_index, dtype=np.int64),
                robust=np.asarray(aset.robust, dtype=bool),
                # Unicode arrays, not object arrays: those would need pickle to load.
                classes=np.array(aset.classes, dtype=np.str_).reshape(len(aset.classes)),
                settings=np.array(json.dumps(aset.settings, sort_keys=True), dtype=np.str_),
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _fail(path: Path, msg: str) -> None:
    raise DataValidationError(f"{path}: {msg}")


def load_npz(path: str | Path) -> AdversarialSet:
    """Loads a set written by :func:`save_npz`; pickled content is refused, never loaded.

    Args:
        path: the .npz file.

    Returns:
        The adversarial set.

    Raises:
        DataValidationError: the file is missing, corrupt, lacks an array, or its arrays disagree.
    """
    path = Path(path)
    fix = "write it again with robustops.data.adversarial.save_npz"
    if path.is_dir():
        _fail(path, "is a folder; point at the .npz file written by robustops.data.adversarial.save_npz")
    if not path.is_file():
        _fail(path, f"adversarial set not found; generate it first, or {fix}")
    with path.open("rb") as f:
        if f.read(2) != b"PK":
            _fail(path, f"is not an .npz file (no zip header); {fix}")
    arrays, keys = read_arrays(path, KEYS, fix)
    missing = [k for k in KEYS if k not in keys]
    if missing:
        _fail(path, f"not an adversarial set: missing array(s) {', '.join(missing)}; {fix}")
    try:
        settings = json.loads(str(arrays["settings"]))
    except ValueError as e:  # a settings string that is not JSON
        _fail(path, f"is malformed ({type(e).__name__}: {e}); {fix}")
    x = arrays["x"]
    rows = {k: arrays[k].shape for k in ("x", "y", "index", "robust")}
    if (
        x.ndim != 4
        or any(shape[:1] != x.shape[:1] for shape in rows.values())
        or not isinstance(settings, dict)
    ):
        found = ", ".join(f"{k} {shape}" for k, shape in rows.items())
        _fail(path, f"arrays disagree ({found}); need one row per image in x (N, C, H, W); {fix}")
    try:
        return AdversarialSet(
            x=x.astype(np.float32, copy=False),
            y=arrays["y"].astype(np.int64, copy=False),
            x_clean_index=arrays["index"].astype(np.int64, copy=False),
            settings=settings,
            classes=[str(c) for c in np.atleast_1d(arrays["classes"]).tolist()],
            robust=arrays["robust"].astype(bool, copy=False),
        )
    except (ValueError, TypeError) as e:  # e.g. text where numbers belong
        _fail(path, f"arrays have the wrong types ({e}); {fix}")
