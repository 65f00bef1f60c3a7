"""The scorecard: one model along the four robustness dimensions, plus the post-processing layer.

- Clean: accuracy, per-class recall.
- Adversarial: FGSM and PGD (cross-entropy and a logit margin) at the L-inf eps list, PGD-L2 at the
  L2 list, the AutoAttack-grade ensemble (APGD-CE, APGD-DLR, Square; worst case per example),
  the worst case over every attack, Lipschitz figures, and the gradient-masking checks.
- Perturbation: accuracy under Gaussian, uniform and salt-and-pepper noise; the flip rate.
- Distributional: held-out corruptions at severities 1-5 (mCE against the run's baseline is added
  by :func:`relative_corruption_metrics` once the baseline is scored); an optional shifted set.
- Specification: behavioural checks of the guarded model.
- Post-processing: the confidence threshold for a target risk, OOD AUROC, calibration.
- Smoothed models: certified accuracy per radius.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from robustops.attacks import APGD, FGSM, PGD, PGDL2, Attack, Square
from robustops.config import EvalConfig, SmoothingConfig
from robustops.data import Dataset
from robustops.evaluation import postprocess as pp
from robustops.evaluation.adversarial import robust_mask
from robustops.evaluation.certify import Certificates, certify_dataset
from robustops.evaluation.corruption import corruption_accuracy, corruption_metrics
from robustops.evaluation.lipschitz import input_grad_norm, lipschitz_bound
from robustops.evaluation.masking import Check, masking_checks
from robustops.evaluation.metrics import adv_key, confusion_matrix, fmt, per_class_recall, predict, safe
from robustops.evaluation.perturbation import flip_rate, noise_curves, noise_metrics
from robustops.evaluation.specification import Guard, SpecContext, run_checks


@dataclass
class Scorecard:
    """Every number of one model's evaluation, keyed by structured metric names, and what the
    plots and the HTML report are drawn from."""

    metrics: dict[str, float]
    confusion: np.ndarray
    classes: list[str]
    attacks: list[dict[str, Any]] = field(default_factory=list)
    curves: dict[str, dict[float, float]] = field(default_factory=dict)
    corruption: dict[str, dict[int, float]] = field(default_factory=dict)
    n_test: int = 0
    n_attacked: int = 0
    certificates: Certificates | None = None
    noise: dict[str, dict[float, float]] = field(default_factory=dict)
    masking: list[Check] = field(default_factory=list)
    spec: list[Check] = field(default_factory=list)
    risk_coverage: tuple[np.ndarray, np.ndarray] | None = None
    calibration: pp.Calibration | None = None
    guard: Guard | None = None

    @property
    def masking_passed(self) -> bool:
        return all(c.passed for c in self.masking)

    @property
    def spec_passed(self) -> bool:
        return all(c.passed for c in self.spec)


def attacks_for(cfg: EvalConfig, seed: int) -> list[Attack]:
    """FGSM and PGD (cross-entropy, and the margin loss) at each L-inf eps; PGD-L2 at each L2 eps."""
    out: list[Attack] = []
    losses = ["ce"] if cfg.margin_loss == "none" else ["ce", cfg.margin_loss]
    for eps in cfg.eps:
        if eps == 0:
            continue
        out.append(FGSM(eps))
        out += [_pgd(cfg, eps, seed, loss) for loss in losses]
    for eps in cfg.l2_eps:
        if eps > 0:
            out.append(
                PGDL2(eps, steps=cfg.pgd_steps, step_size=cfg.pgd_rel_step * eps / cfg.pgd_steps, seed=seed)
            )
    return out


def _pgd(cfg: EvalConfig, eps: float, seed: int, loss: str = "ce", steps: int | None = None) -> PGD:
    steps = steps or cfg.pgd_steps
    return PGD(
        eps,
        steps=steps,
        step_size=cfg.pgd_rel_step * eps / steps,
        restarts=cfg.pgd_restarts,
        seed=seed,
        loss=loss,
    )


def ensemble_for(cfg: EvalConfig, eps: float, seed: int) -> list[Attack]:
    a = cfg.autoattack
    return [
        APGD(eps, steps=a.apgd_steps, restarts=a.apgd_restarts, loss="ce", seed=seed),
        APGD(eps, steps=a.apgd_steps, restarts=a.apgd_restarts, loss="dlr", seed=seed),
        Square(eps, queries=a.square_queries, seed=seed),
    ]


def _subsample(test: Dataset, n: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = test.x, test.y
    if n is not None and n < len(y):
        idx = np.sort(np.random.default_rng(seed).permutation(len(y))[:n])
        x, y = x[idx], y[idx]
    return x, y


def _adversarial(
    model: nn.Module, card: Scorecard, x: np.ndarray, y: np.ndarray, cfg: EvalConfig, seed: int, device: str
) -> None:
    m = card.metrics
    masks: dict[float, list[np.ndarray]] = {}  # L-inf eps -> robust masks of every attack run there

    def run(attack: Attack, record: bool = True) -> float:
        mask = robust_mask(model, attack, x, y, cfg.batch_size, device)
        acc = float(mask.mean())
        if attack.threat.value == "Linf":
            masks.setdefault(attack.eps, []).append(mask)
        if record:
            m[adv_key(attack.label, attack.eps)] = acc
            card.curves.setdefault(attack.label, {})[attack.eps] = acc
            card.attacks.append(attack.settings() | {"label": attack.label, "acc": acc, "n": len(y)})
        return acc

    for attack in attacks_for(cfg, seed):
        run(attack)
    white, black, more = {}, {}, {}
    if cfg.autoattack.enabled:
        for eps in cfg.autoattack.eps:
            first = len(masks.get(eps, []))
            accs = [run(a) for a in ensemble_for(cfg, eps, seed)]
            ensemble = np.logical_and.reduce(masks[eps][first:])
            m[adv_key("autoattack", eps)] = float(ensemble.mean())
            card.attacks.append({"label": "autoattack", "eps": eps, "acc": float(ensemble.mean()), "n": len(y),
                                 "members": ["apgd", "apgd_dlr", "square"], "worst_case": "per example"})  # fmt: skip
            white[eps] = min(accs[0], m.get(adv_key("pgd_linf", eps), 1.0))
            black[eps] = accs[2]
            more[eps] = run(_pgd(cfg, eps, seed, steps=cfg.masking.more_steps), record=False)
            m[f"masking/pgd_{cfg.masking.more_steps}_steps/eps_{fmt(eps)}/acc"] = more[eps]
    for eps, ms in masks.items():
        m[adv_key("worst", eps)] = float(np.logical_and.reduce(ms).mean())
    large = float(
        robust_mask(model, _pgd(cfg, cfg.masking.large_eps, seed), x, y, cfg.batch_size, device).mean()
    )
    m[f"masking/large_eps_{fmt(cfg.masking.large_eps)}/acc"] = large
    chance = float(np.bincount(y).max() / len(y)) if len(y) else 0.0
    card.masking = masking_checks(
        card.curves.get("fgsm", {}),
        card.curves.get("pgd_linf", {}),
        cfg.masking,
        chance,
        large,
        more,
        white,
        black,
    )
    for c in card.masking:
        m[f"masking/{c.name}/pass"] = float(c.passed)
    m["masking/pass"] = float(card.masking_passed)


def _postprocess(
    model: nn.Module, card: Scorecard, test: Dataset, val: Dataset, train: Dataset | None,
    logits: np.ndarray, cfg: EvalConfig, seed: int, device: str, ood_x: np.ndarray | None,
) -> None:  # fmt: skip
    m = card.metrics
    conf = pp.softmax(logits).max(1)
    correct = logits.argmax(1) == test.y
    val_logits = predict(model, val.x, device=device)
    val_conf = pp.softmax(val_logits).max(1)
    thr = pp.threshold_for_risk(val_conf, val_logits.argmax(1) == val.y, cfg.target_risk)
    accepted = conf >= thr
    m["selective/threshold"] = thr
    m["selective/coverage"] = float(accepted.mean())
    m["selective/risk"] = float((~correct[accepted]).mean()) if accepted.any() else 0.0
    m["selective/aurc"] = pp.aurc(conf, correct)
    card.risk_coverage = pp.risk_coverage(conf, correct)
    card.calibration = pp.calibration(conf, correct, cfg.calibration_bins)
    m["calibration/ece"] = card.calibration.ece
    # OOD flag at the energy that keeps ood_tpr of the validation images.
    e_thr = float(np.quantile(pp.energy(val_logits), 1 - cfg.ood_tpr))
    card.guard = Guard(thr, e_thr)
    m["ood/energy_threshold"] = e_thr
    sets = pp.noise_ood(test.shape, min(len(test.y), 200), seed)
    if ood_x is not None:
        sets["ood_data"] = ood_x
    maha = None
    if cfg.mahalanobis and train is not None:
        f = pp.features(model, train.x, device=device)
        maha = pp.Mahalanobis(f, train.y, train.num_classes) if f is not None else None
    test_scores = {"msp": conf, "energy": pp.energy(logits)}
    if maha is not None:
        test_scores["mahalanobis"] = maha.score(pp.features(model, test.x, device=device))
    for name, xo in sets.items():
        lo = predict(model, xo, device=device)
        scores = {"msp": pp.softmax(lo).max(1), "energy": pp.energy(lo)}
        if maha is not None:
            scores["mahalanobis"] = maha.score(pp.features(model, xo, device=device))
        for s, v in scores.items():
            m[f"ood/{name}/auroc_{s}"] = pp.auroc(test_scores[s], v)
        m[f"ood/{name}/flagged"] = float(card.guard.abstain(lo).mean())


def evaluate(
    model: nn.Module,
    test: Dataset,
    cfg: EvalConfig,
    seed: int = 0,
    device: str = "cpu",
    smoothing: SmoothingConfig | None = None,
    val: Dataset | None = None,
    train: Dataset | None = None,
    shift: Dataset | None = None,
    ood_x: np.ndarray | None = None,
) -> Scorecard:
    """Every score of one model.

    Args:
        model: the classifier (eval mode is set here).
        test: the split everything is scored on.
        cfg: the evaluation settings.
        seed: seeds every attack, noise draw and subsample.
        device: torch device.
        smoothing: for a smoothing defence, its settings: the card adds certificates.
        val: chooses the confidence and OOD thresholds (default: the test split, optimistic).
        train: training split: class means for Mahalanobis and the counts that name the rarest
            class (default: no Mahalanobis, rarest class by test counts).
        shift: a naturally shifted labelled set (``shift/acc``).
        ood_x: images of a second dataset for OOD AUROC (``ood/ood_data/...``).
    """
    model.eval()
    logits = predict(model, test.x, cfg.batch_size, device)
    pred = logits.argmax(1)
    cm = confusion_matrix(test.y, pred, test.num_classes)
    recall = per_class_recall(cm)
    metrics = {"clean/acc": float((pred == test.y).mean())}
    metrics |= {f"clean/recall/class_{safe(c)}": float(r) for c, r in zip(test.classes, recall, strict=True)}
    metrics["clean/recall/min"] = float(np.nanmin(recall))

    x, y = _subsample(test, cfg.max_samples, seed)
    card = Scorecard(metrics, cm, test.classes, n_test=len(test.y), n_attacked=len(y))
    _adversarial(model, card, x, y, cfg, seed, device)
    metrics["lipschitz/bound"] = lipschitz_bound(model, test.shape)
    metrics["lipschitz/input_grad_l2"] = input_grad_norm(model, x, y, cfg.batch_size, device)

    card.noise = noise_curves(model, test.x, test.y, cfg.noise, seed, device)
    metrics |= noise_metrics(card.noise, flip_rate(model, test.x, cfg.noise, seed, device))

    card.corruption = corruption_accuracy(
        model, test.x, test.y, cfg.corruptions, cfg.severities, seed, cfg.batch_size, device
    )
    metrics |= corruption_metrics(card.corruption)
    if shift is not None:
        metrics["shift/acc"] = float((predict(model, shift.x, device=device).argmax(1) == shift.y).mean())

    _postprocess(model, card, test, val or test, train, logits, cfg, seed, device, ood_x)
    counts = (
        train.counts()
        if train is not None
        else dict(zip(test.classes, map(int, np.bincount(test.y, minlength=test.num_classes)), strict=True))
    )
    ctx = SpecContext(
        model, test.x, test.y, test.classes, counts, card.guard, cfg.specification, seed, device
    )
    card.spec = run_checks(ctx)
    for c in card.spec:
        metrics[f"spec/{c.name}/pass"] = float(c.passed)
    metrics["spec/pass"] = float(card.spec_passed)

    if smoothing is not None:
        card.certificates = certify_test(model, test, smoothing, seed, device)
        metrics |= card.certificates.metrics()
    return card


def relative_corruption_metrics(card: Scorecard, baseline: Scorecard) -> dict[str, float]:
    """Corruption error (CE), mCE and relative mCE against the run's baseline (Hendrycks &
    Dietterich, 2019): CE_c = sum_s E(c, s) / sum_s E_base(c, s); relative CE_c = sum_s (E(c, s) -
    E_clean) / sum_s (E_base(c, s) - E_base_clean). The baseline itself scores 1 on both."""
    out: dict[str, float] = {}
    ces, rel = [], []
    e_clean, b_clean = 1 - card.metrics["clean/acc"], 1 - baseline.metrics["clean/acc"]
    for name, by_sev in card.corruption.items():
        base = baseline.corruption.get(name)
        if not base:
            continue
        sev = [s for s in by_sev if s in base]
        err = sum(1 - by_sev[s] for s in sev)
        berr = sum(1 - base[s] for s in sev)
        if berr > 0:
            ces.append(err / berr)
            out[f"corruption/{name}/ce"] = ces[-1]
        bgap = sum((1 - base[s]) - b_clean for s in sev)
        if bgap > 0:
            rel.append(sum((1 - by_sev[s]) - e_clean for s in sev) / bgap)
    if ces:
        out["corruption/mce"] = float(np.mean(ces))
    if rel:
        out["corruption/relative_mce"] = float(np.mean(rel))
    return out


def certify_test(
    model: nn.Module, test: Dataset, cfg: SmoothingConfig, seed: int = 0, device: str = "cpu"
) -> Certificates:
    """CERTIFY and PREDICT of the smoothed classifier on the test split (or a seeded subsample)."""
    x, y = _subsample(test, cfg.max_samples, seed)
    return certify_dataset(
        model,
        x,
        y,
        test.num_classes,
        cfg.sigma,
        cfg.n0,
        cfg.n,
        cfg.alpha,
        cfg.radii,
        cfg.batch_size,
        seed,
        device,
    )
