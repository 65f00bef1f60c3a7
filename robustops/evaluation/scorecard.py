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
from robustops.evaluation.metrics import adv_key, confusion_matrix, per_class_recall, predict
from robustops.evaluation.perturbation import flip_rate, noise_curves, noise_metrics
from robustops.evaluation.specification import Guard, SpecContext, run_checks
from robustops.names import number, segment


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
    seconds: dict[str, float] = field(default_factory=dict)  # compute time of each scored part
    # Per L-inf attack, which attacked images stayed correct ("eps_0.1/apgd", ...): the parts
    # score attacks apart and merge() takes the per-example worst cases from these.
    masks: dict[str, np.ndarray] = field(default_factory=dict)

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


def _score(card: Scorecard, attack: Attack, acc: float, n: int) -> None:
    """One attack's robust accuracy into the card: its metric, its curve point and its settings."""
    card.metrics[adv_key(attack.label, attack.eps)] = acc
    card.curves.setdefault(attack.label, {})[attack.eps] = acc
    card.attacks.append(attack.settings() | {"label": attack.label, "acc": acc, "n": n})


def _linf_part(
    model: nn.Module, card: Scorecard, x: np.ndarray, y: np.ndarray, cfg: EvalConfig, eps: float,
    member: str, seed: int, device: str,
) -> None:  # fmt: skip
    """One part of the L-inf attacks at ``eps``: with ``member`` empty the config's FGSM and PGD;
    else one member of the AutoAttack-grade ensemble (its label), or ``more_steps``, the PGD with
    more steps of the masking check. Each is its own part so a runner spreads the ensemble,
    the slowest work of a scorecard, over workers; :func:`merge` takes the worst cases."""
    group = f"eps_{number(eps)}"

    def run(attack: Attack, name: str | None = None) -> float:
        """Scores ``attack`` and keeps its mask for merge(); a named run (the masking check's
        more-steps PGD) is kept out of the attack list and the curves."""
        mask = robust_mask(model, attack, x, y, cfg.batch_size, device)
        card.masks[f"{group}/{name or attack.label}"] = mask
        if name is None:
            _score(card, attack, float(mask.mean()), len(mask))
        return float(mask.mean())

    if not member:
        for attack in attacks_for(cfg, seed):
            if attack.threat.value == "Linf" and attack.eps == eps:
                run(attack)
    elif member == "more_steps":
        more = run(_pgd(cfg, eps, seed, steps=cfg.masking.more_steps), name="more_steps")
        card.metrics[f"masking/pgd_{cfg.masking.more_steps}_steps/eps_{number(eps)}/acc"] = more
    else:
        run(next(a for a in ensemble_for(cfg, eps, seed) if a.label == member))


def _worst_cases(card: Scorecard, cfg: EvalConfig) -> None:
    """Per eps, from the masks of its parts: the AutoAttack-grade ensemble (an image counts only if
    it survives every member) and the worst case over every attack at that eps."""
    for eps in _linf_eps(cfg):
        group = f"eps_{number(eps)}"
        masks = {k.rpartition("/")[2]: v for k, v in card.masks.items() if k.startswith(group + "/")}
        if not masks:
            continue
        members = [a.label for a in ensemble_for(cfg, eps, 0)]
        if all(a in masks for a in members):
            n = len(masks[members[0]])
            acc = float(np.logical_and.reduce([masks[a] for a in members]).mean())
            card.metrics[adv_key("autoattack", eps)] = acc
            # After its members in the attack list, as they were scored.
            at = max(i for i, a in enumerate(card.attacks) if a["label"] in members and a["eps"] == eps)
            card.attacks.insert(at + 1, {"label": "autoattack", "eps": eps, "acc": acc, "n": n,
                                         "members": members, "worst_case": "per example"})  # fmt: skip
        card.metrics[adv_key("worst", eps)] = float(np.logical_and.reduce(list(masks.values())).mean())


def _l2(model: nn.Module, card: Scorecard, x: np.ndarray, y: np.ndarray, cfg: EvalConfig, seed: int,
        device: str) -> None:  # fmt: skip
    for attack in attacks_for(cfg, seed):
        if attack.threat.value != "Linf":
            _score(
                card, attack, float(robust_mask(model, attack, x, y, cfg.batch_size, device).mean()), len(y)
            )


def _masking(card: Scorecard, y: np.ndarray, cfg: EvalConfig) -> None:
    """The gradient-masking checks, from the merged numbers of every eps group."""
    m = card.metrics
    white, black, more = {}, {}, {}
    if cfg.autoattack.enabled:
        for eps in cfg.autoattack.eps:
            white[eps] = min(m[adv_key("apgd", eps)], m.get(adv_key("pgd_linf", eps), 1.0))
            black[eps] = m[adv_key("square", eps)]
            more[eps] = m[f"masking/pgd_{cfg.masking.more_steps}_steps/eps_{number(eps)}/acc"]
    chance = float(np.bincount(y).max() / len(y)) if len(y) else 0.0
    card.masking = masking_checks(
        card.curves.get("fgsm", {}),
        card.curves.get("pgd_linf", {}),
        cfg.masking,
        chance,
        m[f"masking/large_eps_{number(cfg.masking.large_eps)}/acc"],
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


def _linf_eps(cfg: EvalConfig) -> list[float]:
    """Every L-inf radius attacked: the eps list and the ensemble's radii."""
    return sorted(
        {e for e in cfg.eps if e > 0} | (set(cfg.autoattack.eps) if cfg.autoattack.enabled else set())
    )


def plan(cfg: EvalConfig, smoothing: SmoothingConfig | None = None, shift: bool = False) -> list[str]:
    """The independent parts of one model's scorecard, in report order: a runner may score them
    in any order or in parallel (each part seeds its own randomness), and :func:`merge` joins
    them into the same card."""
    parts = ["clean"]
    for e in _linf_eps(cfg):
        parts += [f"adv/eps_{number(e)}"] if e in cfg.eps else []
        if cfg.autoattack.enabled and e in cfg.autoattack.eps:
            members = [a.label for a in ensemble_for(cfg, e, 0)]
            parts += [f"adv/eps_{number(e)}/{m}" for m in [*members, "more_steps"]]
    parts += ["adv/l2"] if any(e > 0 for e in cfg.l2_eps) else []
    parts += ["adv/large_eps", "lipschitz", "noise", *(f"corruption/{c}" for c in cfg.corruptions)]
    parts += ["shift"] if shift else []
    parts += ["post"]
    parts += ["certify"] if smoothing is not None else []
    return parts


def evaluate_part(
    part: str,
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
    """One part of :func:`plan`: a partial card that holds only that part's numbers."""
    model.eval()
    card = Scorecard({}, np.zeros((0, 0), dtype=np.int64), test.classes, n_test=len(test.y))
    m = card.metrics
    x, y = _subsample(test, cfg.max_samples, seed)
    kind, _, arg = part.partition("/")
    if part == "clean":
        pred = predict(model, test.x, cfg.batch_size, device).argmax(1)
        card.confusion = confusion_matrix(test.y, pred, test.num_classes)
        recall = per_class_recall(card.confusion)
        m["clean/acc"] = float((pred == test.y).mean())
        m |= {f"clean/recall/class_{segment(c)}": float(r) for c, r in zip(test.classes, recall, strict=True)}
        m["clean/recall/min"] = float(np.nanmin(recall))
    elif kind == "adv" and arg.startswith("eps_"):
        group, _, member = arg.partition("/")
        eps = next(e for e in [*cfg.eps, *cfg.autoattack.eps] if number(e) == group.removeprefix("eps_"))
        _linf_part(model, card, x, y, cfg, eps, member, seed, device)
    elif part == "adv/l2":
        _l2(model, card, x, y, cfg, seed, device)
    elif part == "adv/large_eps":
        big = _pgd(cfg, cfg.masking.large_eps, seed)
        m[f"masking/large_eps_{number(cfg.masking.large_eps)}/acc"] = float(
            robust_mask(model, big, x, y, cfg.batch_size, device).mean()
        )
    elif part == "lipschitz":
        m["lipschitz/bound"] = lipschitz_bound(model, test.shape)
        m["lipschitz/input_grad_l2"] = input_grad_norm(model, x, y, cfg.batch_size, device)
    elif part == "noise":
        card.noise = noise_curves(model, test.x, test.y, cfg.noise, seed, device)
        m |= noise_metrics(card.noise, flip_rate(model, test.x, cfg.noise, seed, device))
    elif kind == "corruption":
        card.corruption = corruption_accuracy(
            model, test.x, test.y, [arg], cfg.severities, seed, cfg.batch_size, device
        )
    elif part == "shift":
        if shift is not None:
            m["shift/acc"] = float((predict(model, shift.x, device=device).argmax(1) == shift.y).mean())
    elif part == "post":
        logits = predict(model, test.x, cfg.batch_size, device)
        _postprocess(model, card, test, val or test, train, logits, cfg, seed, device, ood_x)
        counts = (
            train.counts()
            if train is not None
            else dict(
                zip(test.classes, map(int, np.bincount(test.y, minlength=test.num_classes)), strict=True)
            )
        )
        ctx = SpecContext(
            model, test.x, test.y, test.classes, counts, card.guard, cfg.specification, seed, device
        )
        card.spec = run_checks(ctx)
        for c in card.spec:
            m[f"spec/{c.name}/pass"] = float(c.passed)
        m["spec/pass"] = float(card.spec_passed)
    elif part == "certify":
        if smoothing is None:
            raise ValueError("the certify part needs the smoothing settings")
        card.certificates = certify_test(model, test, smoothing, seed, device)
        m |= card.certificates.metrics()
    else:
        raise ValueError(f"unknown scorecard part {part!r}; the parts are those of plan()")
    return card


def merge(parts: list[Scorecard], test: Dataset, cfg: EvalConfig, seed: int = 0) -> Scorecard:
    """One card from the partial cards of :func:`plan` (in plan order): their numbers, the
    corruption summaries and the gradient-masking checks, which need every eps group."""
    clean = parts[0]
    _, y = _subsample(test, cfg.max_samples, seed)  # the attacked images: their count and chance level
    card = Scorecard({}, clean.confusion, test.classes, n_test=len(test.y), n_attacked=len(y))
    for p in parts:
        card.metrics |= p.metrics
        card.attacks += p.attacks
        for label, curve in p.curves.items():
            card.curves.setdefault(label, {}).update(curve)
        card.corruption |= p.corruption
        card.noise |= p.noise
        card.spec += p.spec
        card.risk_coverage = card.risk_coverage or p.risk_coverage
        card.calibration = card.calibration or p.calibration
        card.guard = card.guard or p.guard
        card.certificates = card.certificates or p.certificates
        card.seconds |= p.seconds
        card.masks |= p.masks
    for label in card.curves:
        card.curves[label] = dict(sorted(card.curves[label].items()))
    card.metrics |= corruption_metrics(card.corruption)
    _worst_cases(card, cfg)
    _masking(card, y, cfg)
    return card


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
    """Every score of one model: the parts of :func:`plan`, scored one after another and merged.

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
    args = (model, test, cfg, seed, device, smoothing, val, train, shift, ood_x)
    return merge([evaluate_part(p, *args) for p in plan(cfg, smoothing, shift is not None)], test, cfg, seed)


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
