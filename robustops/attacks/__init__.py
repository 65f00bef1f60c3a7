"""Adversarial attacks under one contract: ``attack(model, x, y) -> x_adv``."""

from robustops.attacks.base import ATTACKS, Attack, ThreatModel, eval_mode
from robustops.attacks.gradient import FGSM, PGD

__all__ = ["ATTACKS", "FGSM", "PGD", "Attack", "ThreatModel", "eval_mode"]
