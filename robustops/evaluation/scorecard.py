"""The scorecard: clean accuracy, per-class recall, FGSM and PGD accuracy (cross-entropy and a
logit margin), held-out corruptions, Lipschitz figures and, for smoothed models, certificates."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from robustops.attacks import FGSM, PGD, Attack
from robustops.config import EvalConfig, SmoothingConfig
from robustops.data import Dataset
from robustops.evaluation.adversarial import robust_accuracy
from robustops.evaluation.certify import Certificates, certify_dataset
from robustops.evaluation.corruption import corruption_accuracy, corruption_metrics
from robustops.evaluation.lipschitz import input_grad_norm, lipschitz_bound
from robustops.evaluation.metrics import adv_key, confusion_matrix, per_class_recall, predict, safe


@dataclass
class Scorecard:
    """Every number of one model's evaluation, keyed by structured metric names."""

    metrics: dict[str, float]
    confusion: np.ndarray
    classes: list[str]
    attacks: list[dict[str, Any]] = field(default_factory=list)
    curves: dict[str, dict[float, float]] = field(default_factory=dict)
    corruption: dict[str, dict[int, float]] = field(default_factory=dict)
    n_test: int = 0
    n_attacked: int = 0
    certificates: Certificates | None = None


def attacks_for(cfg: EvalConfig, seed: int) -> list[Attack]:
    out: list[Attack] = []
    for eps in cfg.eps:
        if eps == 0:
            continue
        out.append(FGSM(eps))
        losses = ["ce"] if cfg.margin_loss == "none" else ["ce", cfg.margin_loss]
        out += [
            PGD(
                eps,
                steps=cfg.pgd_steps,
                step_size=cfg.pgd_rel_step * eps / cfg.pgd_steps,
                restarts=cfg.pgd_restarts,
                seed=seed,
                loss=loss,
            )
            for loss in losses
        ]
    return out


def evaluate(
    model: nn.Module,
    test: Dataset,
    cfg: EvalConfig,
    seed: int = 0,
    device: str = "cpu",
    smoothing: SmoothingConfig | None = None,
) -> Scorecard:
    """Every score of one model on the test split; with ``smoothing``, also the certificates of
    the smoothed classifier built on it."""
    model.eval()
    pred = predict(model, test.x, cfg.batch_size, device).argmax(1)
    cm = confusion_matrix(test.y, pred, test.num_classes)
    recall = per_class_recall(cm)
    metrics = {"clean/acc": float((pred == test.y).mean())}
    metrics |= {f"clean/recall/class_{safe(c)}": float(r) for c, r in zip(test.classes, recall, strict=True)}
    metrics["clean/recall/min"] = float(np.nanmin(recall))

    x, y = test.x, test.y
    if cfg.max_samples is not None and cfg.max_samples < len(y):
        idx = np.sort(np.random.default_rng(seed).permutation(len(y))[: cfg.max_samples])
        x, y = x[idx], y[idx]
    card = Scorecard(metrics, cm, test.classes, n_test=len(test.y), n_attacked=len(y))
    for attack in attacks_for(cfg, seed):
        acc = robust_accuracy(model, attack, x, y, cfg.batch_size, device)
        metrics[adv_key(attack.label, attack.eps)] = acc
        card.curves.setdefault(attack.label, {})[attack.eps] = acc
        card.attacks.append(attack.settings() | {"label": attack.label, "acc": acc, "n": len(y)})
    card.corruption = corruption_accuracy(
        model, test.x, test.y, cfg.corruptions, cfg.severities, seed, cfg.batch_size, device
    )
    metrics |= corruption_metrics(card.corruption)
    metrics["lipschitz/bound"] = lipschitz_bound(model, test.shape)
    metrics["lipschitz/input_grad_l2"] = input_grad_norm(model, x, y, cfg.batch_size, device)
    if smoothing is not None:
        card.certificates = certify_test(model, test, smoothing, seed, device)
        metrics |= card.certificates.metrics()
    return card


def certify_test(
    model: nn.Module, test: Dataset, cfg: SmoothingConfig, seed: int = 0, device: str = "cpu"
) -> Certificates:
    """CERTIFY and PREDICT of the smoothed classifier on the test split (or a seeded subsample)."""
    x, y = test.x, test.y
    if cfg.max_samples is not None and cfg.max_samples < len(y):
        idx = np.sort(np.random.default_rng(seed).permutation(len(y))[: cfg.max_samples])
        x, y = x[idx], y[idx]
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
