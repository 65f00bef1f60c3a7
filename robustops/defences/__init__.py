"""Defences: one file each, holding its settings, its trainer and its hooks (see ``base``).

Adding a defence means one new file and its import line below.
"""

from robustops.defences import distillation, fgsm_rs, n_fgsm, pgd_at, smoothing, standard, trades
from robustops.defences.base import (
    DEFENCES,
    Context,
    Defence,
    recorded_defence,
    register,
    score_inputs,
    scorecard_parts,
    settings_from,
    settings_of,
    train_defence,
)

__all__ = [
    "DEFENCES",
    "Context",
    "Defence",
    "distillation",
    "fgsm_rs",
    "n_fgsm",
    "pgd_at",
    "recorded_defence",
    "register",
    "score_inputs",
    "scorecard_parts",
    "settings_from",
    "settings_of",
    "smoothing",
    "standard",
    "train_defence",
    "trades",
]
