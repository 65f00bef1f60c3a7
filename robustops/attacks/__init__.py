"""Adversarial attacks under one contract: ``attack(model, x, y) -> x_adv``."""

from robustops.attacks.autoattack import APGD, APGDT, Square
from robustops.attacks.base import ATTACKS, Attack, ThreatModel, build_attack, eval_mode
from robustops.attacks.gradient import FGSM, PGD
from robustops.attacks.l2 import PGDL2

__all__ = [
    "APGD",
    "APGDT",
    "ATTACKS",
    "FGSM",
    "PGD",
    "PGDL2",
    "Attack",
    "Square",
    "ThreatModel",
    "build_attack",
    "eval_mode",
]
