"""The optional extra evaluation sets: a shifted set and OOD images, in the model's input shape."""

from __future__ import annotations

import numpy as np

from robustops.config import EvalConfig, LimitsConfig
from robustops.data.loaders import Dataset, load_for_model, load_images


def read_eval_sets(
    cfg: EvalConfig, shape: tuple[int, int, int], classes: list[str], limits: LimitsConfig
) -> tuple[Dataset | None, np.ndarray | None]:
    """The optional shifted set (labelled with the training classes) and OOD images, in the model's
    input shape; also the CLI's check before a run starts."""
    shift = ood = None
    if cfg.shift_data is not None:
        s = cfg.shift_data
        shift = load_for_model(s.source, s.path, shape, classes, "evaluation.shift_data", limits)
    if cfg.ood_data is not None:
        ood = load_images(cfg.ood_data.path, shape, limits)
    return shift, ood
