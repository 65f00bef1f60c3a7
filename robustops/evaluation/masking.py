"""Gradient-masking sanity checks: signs that an adversarial accuracy cannot be trusted.

A model whose gradients are masked (saturated softmax, non-differentiable layers, stochastic
outputs) looks robust to gradient attacks without being robust (Athalye et al., 2018). The
checks below are the ones Carlini et al. (2019) ask of every robustness claim; each is logged as
pass/fail with its numbers, and a model that fails any is not promoted on its adversarial score.
They look at the cross-entropy attacks, the ones masking fools.
"""

from __future__ import annotations

from dataclasses import dataclass

from robustops.config import MaskingConfig


@dataclass
class Check:
    name: str
    passed: bool
    detail: str

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


def masking_checks(
    fgsm: dict[float, float],
    pgd: dict[float, float],
    cfg: MaskingConfig,
    chance: float,
    large_eps_acc: float | None = None,
    more_steps_acc: dict[float, float] | None = None,
    white_box: dict[float, float] | None = None,
    black_box: dict[float, float] | None = None,
) -> list[Check]:
    """The five checks, from accuracies keyed by eps.

    Args:
        fgsm, pgd: FGSM and PGD (cross-entropy) accuracy per eps.
        cfg: tolerance, the large eps and the longer PGD.
        chance: the accuracy of guessing the most frequent class.
        large_eps_acc: PGD accuracy at ``cfg.large_eps``.
        more_steps_acc: PGD accuracy with ``cfg.more_steps`` steps, per eps.
        white_box, black_box: the best gradient attack (PGD / APGD on cross-entropy) and Square,
            per eps where both ran.
    """
    tol = cfg.tolerance
    checks = []
    bad = [
        f"eps {e:g}: PGD {pgd[e]:.3f} > FGSM {fgsm[e]:.3f}"
        for e in sorted(pgd)
        if e in fgsm and pgd[e] > fgsm[e] + tol
    ]
    checks.append(Check("iterative_beats_single_step", not bad, "; ".join(bad) or "PGD <= FGSM at every eps"))
    eps = sorted(pgd)
    rises = [
        f"{a:g} -> {b:g}: {pgd[a]:.3f} -> {pgd[b]:.3f}"
        for a, b in zip(eps, eps[1:], strict=False)
        if pgd[b] > pgd[a] + tol
    ]
    checks.append(
        Check("monotone_in_eps", not rises, "; ".join(rises) or "PGD accuracy never rises with eps")
    )
    if large_eps_acc is not None:
        ok = large_eps_acc <= chance + tol
        checks.append(
            Check(
                "chance_at_large_eps",
                ok,
                f"PGD at eps {cfg.large_eps:g}: {large_eps_acc:.3f} (chance {chance:.3f})",
            )
        )
    if more_steps_acc:
        worse = [
            f"eps {e:g}: {cfg.more_steps} steps {more_steps_acc[e]:.3f} > {pgd[e]:.3f}"
            for e in sorted(more_steps_acc)
            if e in pgd and more_steps_acc[e] > pgd[e] + tol
        ]
        checks.append(
            Check("more_steps_do_not_help", not worse, "; ".join(worse) or f"{cfg.more_steps} steps <= fewer")
        )
    if white_box and black_box:
        beats = [
            f"eps {e:g}: Square {black_box[e]:.3f} < white-box {white_box[e]:.3f}"
            for e in sorted(black_box)
            if e in white_box and black_box[e] < white_box[e] - tol
        ]
        checks.append(
            Check("white_box_beats_black_box", not beats, "; ".join(beats) or "Square >= gradient attacks")
        )
    return checks
