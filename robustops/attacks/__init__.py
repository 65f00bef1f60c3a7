"""Adversarial attacks under one contract: ``attack(model, x, y) -> x_adv``."""

from robustops.attacks.autoattack import APGD, APGDL2, APGDT, APGDTL2
from robustops.attacks.base import ATTACKS, Attack, ThreatModel, build_attack, eval_mode
from robustops.attacks.fab import FABT, FABTL2
from robustops.attacks.gradient import FGSM, PGD
from robustops.attacks.l2 import PGDL2
from robustops.attacks.square import Square, SquareL2

__all__ = [
    "APGD",
    "APGDL2",
    "APGDT",
    "APGDTL2",
    "FABT",
    "FABTL2",
    "ATTACKS",
    "FGSM",
    "PGD",
    "PGDL2",
    "Attack",
    "Square",
    "SquareL2",
    "ThreatModel",
    "build_attack",
    "eval_mode",
]
