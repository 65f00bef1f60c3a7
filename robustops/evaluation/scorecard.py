"""The scorecard: one model along the four robustness dimensions, plus the post-processing layer.

- Clean: accuracy, per-class recall.
- Adversarial: FGSM and PGD (cross-entropy and a logit margin) at the L-inf eps list, PGD-L2 at the
  L2 list, the AutoAttack ensemble of ``evaluation.autoattack.version`` (worst case per
  example) at its L-inf radii and, in its L2 version, at its L2 radii, the worst case over every
  L-inf attack, Lipschitz figures, and the gradient-masking checks.
- Perturbation: accuracy under Gaussian, uniform and salt-and-pepper noise; the flip rate.
- Distributional: held-out corruptions at severities 1-5 (mCE against the run's baseline is added
  by :func:`relative_corruption_metrics` once the baseline is scored); an optional shifted set.
- Specification: behavioural checks of the guarded model.
- Post-processing: the confidence threshold for a target risk, OOD AUROC, calibration.
- Smoothed models: certified accuracy per radius.

Every accuracy is a share of a known number of images, logged once per dimension (``clean/n``,
``adv/n``, ``noise/n``, ``corruption/n``, ``shift/n``, ``certified/n``): :func:`metric_intervals`
turns each into a 95 % Wilson interval, so a reader can tell a difference from noise.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np
from scipy.stats import binomtest
from torch import nn

from robustops.attacks import (
    APGD,
    APGDL2,
    APGDT,
    APGDTL2,
    FABT,
    FABTL2,
    FGSM,
    PGD,
    PGDL2,
    Attack,
    Square,
    SquareL2,
)
from robustops.attacks.eot import Randomized
from robustops.config import EvalConfig
from robustops.data import Dataset
from robustops.errors import DataWarning
from robustops.evaluation import postprocess as pp
from robustops.evaluation.certify import Certificates
from robustops.evaluation.corruption import (
    benchmark_accuracy,
    benchmark_summary,
    corruption_accuracy,
    corruption_metrics,
)
from robustops.evaluation.lipschitz import input_grad_norm, lipschitz_bound
from robustops.evaluation.masking import Check, masking_checks
from robustops.evaluation.metrics import adv_key, confusion_matrix, per_class_recall
from robustops.evaluation.perturbation import flip_rate, noise_curves, noise_metrics
from robustops.evaluation.specification import CheckContext, Thresholds, run_checks
from robustops.inference import predict, robust_mask, served_correct
from robustops.names import number, segment

CONFIDENCE = 0.95
# Below this many test images, a 95 % interval on an accuracy near 0.9 is wider than +-0.04: the
# differences between defences the scorecard exists to show drown in it.
SMALL_TEST_SPLIT = 200


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
    specification: list[Check] = field(default_factory=list)  # the specification checks
    risk_coverage: tuple[np.ndarray, np.ndarray] | None = None
    calibration: pp.Calibration | None = None
    thresholds: Thresholds | None = None  # what the served guard abstains below
    seconds: dict[str, float] = field(default_factory=dict)  # compute time of each scored part
    # Per L-inf attack, which attacked images stayed correct ("eps_0.1/apgd", ...): the parts
    # score attacks apart and merge() takes the per-example worst cases from these.
    masks: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def masking_passed(self) -> bool:
        return all(c.passed for c in self.masking)

    @property
    def specification_passed(self) -> bool:
        return all(c.passed for c in self.specification)

    def class_counts(self) -> dict[str, int]:
        """Test images per class (the metric segment of its name): the n of each class's recall."""
        rows = self.confusion.sum(1) if self.confusion.size else []
        return {segment(c): int(r) for c, r in zip(self.classes, rows, strict=False)}

    def intervals(self, level: float = CONFIDENCE) -> dict[str, dict[str, float]]:
        """The Wilson interval and n of every accuracy of the card (see :func:`metric_intervals`)."""
        return metric_intervals(self.metrics, self.class_counts(), level)

    def as_json(self) -> dict[str, Any]:
        """The card as JSON (``evaluation/scorecard.json``): metrics, check results, the guard's
        thresholds, and n per dimension with every interval."""
        return {
            "metrics": self.metrics,
            "masking": [c.as_dict() for c in self.masking],
            "specification": [c.as_dict() for c in self.specification],
            "masking_passed": self.masking_passed,
            "specification_passed": self.specification_passed,
            "guard": vars(self.thresholds) if self.thresholds else None,
            "n_test": self.n_test,
            "n_attacked": self.n_attacked,
        } | self.stats()

    def stats(self) -> dict[str, Any]:
        """What the scorecard JSON holds about sampling: n per dimension and every interval."""
        return {
            "n": {k.removesuffix("/n"): int(v) for k, v in self.metrics.items() if k.endswith("/n")},
            "intervals": self.intervals(),
            "interval": f"{CONFIDENCE:.0%} Wilson score interval (scipy.stats.binomtest)",
            "small_test_split": small_test_note(self.n_test),
        }


# A defence's own part of its scorecard: fills the partial card (metrics, and e.g. certificates)
# for a model on the test split, with a seed and a device.
ScorePart = Callable[[Scorecard, nn.Module, Dataset, int, str], None]


@dataclass(frozen=True, eq=False)
class ScoreInputs:
    """What one model's scorecard is computed from: every part of :func:`plan` is scored from the
    same inputs (:func:`score`), and :func:`merge` joins the parts with them.

    Attributes:
        model: the classifier (eval mode is set when a part is scored).
        test: the split everything is scored on.
        cfg: the evaluation settings.
        seed: seeds every attack, noise draw and subsample.
        device: torch device.
        val: chooses the confidence and OOD thresholds (None: the test split, optimistic).
        train: training split: class means for Mahalanobis and the counts that name the rarest
            class (None: no Mahalanobis, rarest class by test counts).
        shift: a naturally shifted labelled set (``shift/acc``).
        ood_x: images of a second dataset for OOD AUROC (``ood/ood_data/...``).
        extra: a defence's own parts by name (:meth:`robustops.defences.Defence.scorecard_parts`),
            e.g. smoothing's certificates.
        randomized: for a model whose served output is random (smoothing, a user's random
            model): what the attacks run on (EoT) and the served prediction that judges them.
    """

    model: nn.Module
    test: Dataset
    cfg: EvalConfig
    seed: int = 0
    device: str = "cpu"
    val: Dataset | None = None
    train: Dataset | None = None
    shift: Dataset | None = None
    ood_x: np.ndarray | None = None
    extra: Mapping[str, ScorePart] = field(default_factory=dict)
    randomized: Randomized | None = None

    def attacked(self) -> tuple[np.ndarray, np.ndarray]:
        """The images the attacks run on: a seeded subsample of ``evaluation.max_samples``."""
        return subsample(self.test, self.cfg.max_samples, self.seed)


@dataclass(frozen=True)
class Part:
    """One independent part of a scorecard (see :func:`plan`), scored by :func:`score`.

    Attributes:
        kind: what the part scores, a key of :data:`KINDS` (``clean``, ``linf``, ``l2``,
            ``large_eps``, ``lipschitz``, ``noise``, ``corruption``, ``corruption_benchmark``,
            ``shift``, ``post``, ``defence``).
        eps: the L-inf radius of a ``linf`` part, the L2 radius of an ``l2`` part's ensemble member.
        member: which one of its kind: for ``linf`` a member of the AutoAttack ensemble
            (its attack label) or ``more_steps`` (the masking check's PGD with more steps), None
            for the config's FGSM and PGD; for ``l2`` a member of the ensemble's L2 version (its
            label), None for the config's PGD-L2; for ``corruption`` and
            ``corruption_benchmark`` the corruption's name; for ``defence`` the name of the
            defence's own part.
    """

    kind: str
    eps: float | None = None
    member: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown scorecard part kind {self.kind!r}; the kinds: {', '.join(KINDS)}")

    @property
    def label(self) -> str:
        """The part's name, as in Prefect's task-run names and :attr:`Scorecard.seconds`:
        ``clean``, ``adv/eps_0.1``, ``adv/eps_0.1/apgd_dlr``, ``adv/l2/eps_0.5/square_l2``,
        ``corruption/fog``, ``certify``."""
        eps = number(self.eps) if self.eps is not None else ""
        member = self.member or ""
        at = f"/eps_{eps}" if eps else ""
        return KINDS[self.kind].label.format(
            eps=eps, at=at, member=member, sub=f"/{member}" if member else ""
        )

    def __str__(self) -> str:
        return self.label


# The count each accuracy is a share of: the n metric of its dimension. A mean over noise levels,
# severities or corruptions of the same images gets that count too: the images are the
# independent unit, so its interval is conservative rather than several times too narrow.
_N_OF = [
    (re.compile(r"^clean/acc$"), "clean/n"),
    (re.compile(r"^(base/)?(adv|masking)/.+/acc$"), "adv/n"),
    (re.compile(r"^noise/.+acc$"), "noise/n"),
    (re.compile(r"^corruption/.*acc$"), "corruption/n"),
    (re.compile(r"^corruption_benchmark/.*acc$"), "corruption_benchmark/n"),
    (re.compile(r"^shift/acc$"), "shift/n"),
    (re.compile(r"^(certified/r_[^/]+/acc|smoothed/acc)$"), "certified/n"),
    (re.compile(r"^(guard|selective)/coverage$"), "clean/n"),
]


@lru_cache(maxsize=4096)
def wilson(k: int, n: int, level: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of ``k`` successes in ``n`` trials (scipy)."""
    ci = binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def sample_size(
    metrics: dict[str, float], key: str, class_counts: dict[str, int] | None = None
) -> int | None:
    """How many images the accuracy ``key`` is a share of (None: not an accuracy, or unknown)."""

    def n(name: str) -> int | None:
        v = metrics.get(name)
        return int(v) if v is not None and math.isfinite(v) and v > 0 else None

    for pattern, count in _N_OF:
        if pattern.match(key):
            return n(count)
    # Accuracy on the answered images: a share of those the guard (or the smoothed classifier) answered.
    if key == "guard/acc_answered" and n("clean/n") and "guard/coverage" in metrics:
        return round(n("clean/n") * metrics["guard/coverage"]) or None
    if key == "smoothed/acc_answered" and n("certified/n") and "smoothed/abstain" in metrics:
        return round(n("certified/n") * (1 - metrics["smoothed/abstain"])) or None
    if class_counts and key.startswith("clean/recall/class_"):
        return class_counts.get(key.removeprefix("clean/recall/class_")) or None
    if class_counts and key == "clean/recall/min":
        # The class (the fewest images among ties) whose recall is the minimum.
        lowest = [
            class_counts[c]
            for c in class_counts
            if metrics.get(f"clean/recall/class_{c}") == metrics[key] and class_counts[c] > 0
        ]
        return min(lowest) if lowest else None
    return None


def metric_intervals(
    metrics: dict[str, float], class_counts: dict[str, int] | None = None, level: float = CONFIDENCE
) -> dict[str, dict[str, float]]:
    """``{metric: {"n", "low", "high"}}``: the Wilson interval of every accuracy (and coverage)
    whose count is known, at ``level``. An accuracy is a share of n images, so its count of
    correct images is ``round(acc * n)``."""
    out: dict[str, dict[str, float]] = {}
    for key, v in metrics.items():
        n = sample_size(metrics, key, class_counts)
        if n is None or not math.isfinite(v) or not 0 <= v <= 1:
            continue
        low, high = wilson(round(v * n), n, level)
        out[key] = {"n": n, "low": low, "high": high}
    return out


def small_test_note(n: int) -> str | None:
    """What a test split under :data:`SMALL_TEST_SPLIT` images means for the scores (None: enough)."""
    if not 0 < n < SMALL_TEST_SPLIT:
        return None
    low, high = wilson(round(0.9 * n), n)
    return (
        f"the test split has only {n} images: an accuracy of 0.90 on it has a 95 % interval of "
        f"{low:.2f}-{high:.2f}, so scores closer than that do not tell models apart; use a test split "
        f"of at least {SMALL_TEST_SPLIT} images (a larger data.test_fraction, or more data)"
    )


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


def ensemble_for(cfg: EvalConfig, eps: float, seed: int, l2: bool = False) -> list[Attack]:
    """The members of the AutoAttack ensemble of ``evaluation.autoattack.version`` at ``eps``, in
    the L-inf ball or (``l2``) their L2 versions in the L2 ball."""
    a = cfg.autoattack
    apgd, apgd_t, fab_t, square = (APGDL2, APGDTL2, FABTL2, SquareL2) if l2 else (APGD, APGDT, FABT, Square)
    ce = apgd(eps, steps=a.apgd_steps, restarts=a.apgd_restarts, loss="ce", seed=seed)
    last = square(eps, queries=a.queries, seed=seed)
    if a.version == "standard":
        return [ce, apgd_t(eps, steps=a.apgd_steps, targets=a.targets, seed=seed),
                fab_t(eps, steps=a.apgd_steps, targets=a.targets), last]  # fmt: skip
    return [ce, apgd(eps, steps=a.apgd_steps, restarts=a.apgd_restarts, loss="dlr", seed=seed), last]


def ensemble_label(l2: bool = False) -> str:
    """The ensemble's label in metric keys: ``autoattack``, ``autoattack_l2`` for its L2 version."""
    return "autoattack_l2" if l2 else "autoattack"


def mask_group(eps: float, l2: bool = False) -> str:
    """The prefix of the masks (:attr:`Scorecard.masks`) of the attacks at one radius:
    ``eps_<eps>`` in the L-inf ball, ``l2/eps_<eps>`` in the L2 ball."""
    return f"l2/eps_{number(eps)}" if l2 else f"eps_{number(eps)}"


def subsample(test: Dataset, n: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = test.x, test.y
    if n is not None and n < len(y):
        idx = np.sort(np.random.default_rng(seed).permutation(len(y))[:n])
        x, y = x[idx], y[idx]
    return x, y


def _score(card: Scorecard, attack: Attack, acc: float, n: int, s: ScoreInputs) -> None:
    """One attack's robust accuracy into the card: its metric, its curve point and its settings
    (with the EoT draws and the served prediction that judged it, for a random model)."""
    card.metrics[adv_key(attack.label, attack.eps)] = acc
    card.curves.setdefault(attack.label, {})[attack.eps] = acc
    how = {"eot_draws": s.randomized.draws, "judged_by": "served prediction"} if s.randomized else {}
    card.attacks.append(attack.settings() | {"label": attack.label, "acc": acc, "n": n} | how)


def _masker(s: ScoreInputs) -> Callable[[Attack], np.ndarray]:
    """How an attack is scored on the attacked images (its robust mask): on the model itself, or
    for a random model on its EoT, judged by its served prediction (the clean answers judged once
    for every attack of the part)."""
    x, y = s.attacked()
    r = s.randomized
    if r is None:
        return lambda attack: robust_mask(s.model, attack, x, y, s.cfg.batch_size, s.device)
    correct = served_correct(r.served, x, y, s.cfg.batch_size, s.device)
    return lambda attack: robust_mask(r.attacked, attack, x, y, s.cfg.batch_size, s.device, r.served, correct)


def _clean(card: Scorecard, part: Part, s: ScoreInputs) -> None:
    test, m = s.test, card.metrics
    pred = predict(s.model, test.x, s.cfg.batch_size, s.device).argmax(1)
    card.confusion = confusion_matrix(test.y, pred, test.num_classes)
    recall = per_class_recall(card.confusion)
    m["clean/acc"] = float((pred == test.y).mean())
    m |= {f"clean/recall/class_{segment(c)}": float(r) for c, r in zip(test.classes, recall, strict=True)}
    m["clean/recall/min"] = float(np.nanmin(recall))


def _linf(card: Scorecard, part: Part, s: ScoreInputs) -> None:
    """One part of the L-inf attacks at ``part.eps``: with no member the config's FGSM and PGD;
    else one member of the AutoAttack-grade ensemble (its label), or ``more_steps``, the PGD with
    more steps of the masking check. Each is its own part so a runner spreads the ensemble,
    the slowest work of a scorecard, over workers; :func:`merge` takes the worst cases."""
    cfg, eps, seed = s.cfg, part.eps, s.seed
    x, y = s.attacked()
    group = mask_group(eps)

    mask_of = _masker(s)

    def run(attack: Attack, name: str | None = None) -> float:
        """Scores ``attack`` and keeps its mask for merge(); a named run (the masking check's
        more-steps PGD) is kept out of the attack list and the curves."""
        mask = mask_of(attack)
        card.masks[f"{group}/{name or attack.label}"] = mask
        if name is None:
            _score(card, attack, float(mask.mean()), len(mask), s)
        return float(mask.mean())

    if not part.member:
        for attack in attacks_for(cfg, seed):
            if attack.threat.value == "Linf" and attack.eps == eps:
                run(attack)
        base = s.randomized.base if s.randomized is not None else None
        if base is not None:  # beside the honest figure: PGD through the deterministic base
            pgd = _pgd(cfg, eps, seed)
            card.metrics[f"base/{adv_key(pgd.label, eps)}"] = float(
                robust_mask(base, pgd, x, y, cfg.batch_size, s.device).mean()
            )
    elif part.member == "more_steps":
        more = run(_pgd(cfg, eps, seed, steps=cfg.masking.more_steps), name="more_steps")
        card.metrics[f"masking/pgd_{cfg.masking.more_steps}_steps/eps_{number(eps)}/acc"] = more
    else:
        run(next(a for a in ensemble_for(cfg, eps, seed) if a.label == part.member))


def _worst_cases(card: Scorecard, cfg: EvalConfig) -> None:
    """Per L-inf eps, from the masks of its parts: the AutoAttack ensemble (an image counts only
    if it survives every member) and the worst case over every attack at that eps; per radius of
    ``autoattack.l2_eps``, the ensemble's L2 version."""
    for eps, l2 in [(e, False) for e in _linf_eps(cfg)] + [(e, True) for e in _l2_ensemble_eps(cfg)]:
        group = mask_group(eps, l2)
        masks = {k.rpartition("/")[2]: v for k, v in card.masks.items() if k.startswith(group + "/")}
        if not masks:
            continue
        members = [a.label for a in ensemble_for(cfg, eps, 0, l2)]
        if all(a in masks for a in members):
            n = len(masks[members[0]])
            acc = float(np.logical_and.reduce([masks[a] for a in members]).mean())
            label = ensemble_label(l2)
            card.metrics[adv_key(label, eps)] = acc
            # After its members in the attack list, as they were scored.
            at = max(i for i, a in enumerate(card.attacks) if a["label"] in members and a["eps"] == eps)
            card.attacks.insert(at + 1, {"label": label, "eps": eps, "acc": acc, "n": n,
                                         "threat": "L2" if l2 else "Linf",
                                         "version": cfg.autoattack.version, "members": members,
                                         "worst_case": "per example"})  # fmt: skip
        if not l2:
            card.metrics[adv_key("worst", eps)] = float(np.logical_and.reduce(list(masks.values())).mean())


def _l2(card: Scorecard, part: Part, s: ScoreInputs) -> None:
    """With no member, PGD-L2 at each radius of ``evaluation.l2_eps``; else one member of the
    ensemble's L2 version at ``part.eps`` (its label), its own part as in :func:`_linf`."""
    mask_of = _masker(s)

    def run(attack: Attack) -> None:
        mask = mask_of(attack)
        card.masks[f"{mask_group(attack.eps, l2=True)}/{attack.label}"] = mask
        _score(card, attack, float(mask.mean()), len(mask), s)

    if part.member:
        assert part.eps is not None  # planned with its radius
        run(next(a for a in ensemble_for(s.cfg, part.eps, s.seed, l2=True) if a.label == part.member))
        return
    for attack in attacks_for(s.cfg, s.seed):
        if attack.threat.value != "Linf":
            run(attack)


def _large_eps(card: Scorecard, part: Part, s: ScoreInputs) -> None:
    big = _pgd(s.cfg, s.cfg.masking.large_eps, s.seed)
    mask_of = _masker(s)
    card.metrics[f"masking/large_eps_{number(s.cfg.masking.large_eps)}/acc"] = float(mask_of(big).mean())


def _lipschitz(card: Scorecard, part: Part, s: ScoreInputs) -> None:
    x, y = s.attacked()
    card.metrics["lipschitz/bound"] = lipschitz_bound(s.model, s.test.shape)
    card.metrics["lipschitz/input_grad_l2"] = input_grad_norm(s.model, x, y, s.cfg.batch_size, s.device)


def _noise(card: Scorecard, part: Part, s: ScoreInputs) -> None:
    test = s.test
    card.noise = noise_curves(s.model, test.x, test.y, s.cfg.noise, s.seed, s.device)
    card.metrics |= noise_metrics(card.noise, flip_rate(s.model, test.x, s.cfg.noise, s.seed, s.device))


def _corruption(card: Scorecard, part: Part, s: ScoreInputs) -> None:
    card.corruption = corruption_accuracy(
        s.model, s.test.x, s.test.y, [part.member], s.cfg.severities, s.seed, s.cfg.batch_size, s.device
    )


def _benchmark(card: Scorecard, part: Part, s: ScoreInputs) -> None:
    cb = s.cfg.corruption_benchmark
    assert cb is not None and part.member is not None  # planned only with a benchmark
    card.metrics |= benchmark_accuracy(
        s.model, cb, part.member, s.test.shape, s.test.classes, s.seed, s.cfg.batch_size, s.device
    )


def _shift(card: Scorecard, part: Part, s: ScoreInputs) -> None:
    if s.shift is not None:
        pred = predict(s.model, s.shift.x, device=s.device).argmax(1)
        card.metrics["shift/acc"] = float((pred == s.shift.y).mean())
        card.metrics["shift/n"] = float(len(s.shift.y))


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


def _post(card: Scorecard, part: Part, s: ScoreInputs) -> None:
    """The post-processing layer (thresholds, OOD, calibration), then the specification checks of
    the model guarded by those thresholds."""
    test, train, m = s.test, s.train, card.metrics
    logits = predict(s.model, test.x, s.cfg.batch_size, s.device)
    _postprocess(card, s, logits)
    counts = (
        train.counts()
        if train is not None
        else dict(zip(test.classes, map(int, np.bincount(test.y, minlength=test.num_classes)), strict=True))
    )
    ctx = CheckContext(
        s.model, test.x, test.y, test.classes, counts, card.thresholds, s.cfg.specification, s.seed, s.device
    )
    card.specification = run_checks(ctx)
    for c in card.specification:
        m[f"spec/{c.name}/pass"] = float(c.passed)
    m["spec/pass"] = float(card.specification_passed)


def _postprocess(card: Scorecard, s: ScoreInputs, logits: np.ndarray) -> None:
    model, test, val, train, cfg, device = s.model, s.test, s.val or s.test, s.train, s.cfg, s.device
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
    card.thresholds = Thresholds(thr, e_thr)
    m["ood/energy_threshold"] = e_thr
    # The served guard abstains on either threshold: its coverage, and its accuracy on the images
    # it answers (abstentions are no answer, not errors; the plain model's accuracy is clean/acc).
    answered = ~card.thresholds.abstain(logits)
    m["guard/coverage"] = float(answered.mean()) if len(answered) else 0.0
    if answered.any():
        m["guard/acc_answered"] = float(correct[answered].mean())
    sets = pp.noise_ood(test.shape, min(len(test.y), 200), s.seed)
    if s.ood_x is not None:
        sets["ood_data"] = s.ood_x
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
        for sc, v in scores.items():
            m[f"ood/{name}/auroc_{sc}"] = pp.auroc(test_scores[sc], v)
        m[f"ood/{name}/flagged"] = float(card.thresholds.abstain(lo).mean())


def _defence(card: Scorecard, part: Part, s: ScoreInputs) -> None:
    if part.member not in s.extra:
        known = ", ".join(s.extra) or "none"
        raise ValueError(f"the model's defence has no scorecard part {part.member!r} (its parts: {known})")
    s.extra[part.member](card, s.model, s.test, s.seed, s.device)


class Kind(NamedTuple):
    """One kind of scorecard part: its label (a format of ``eps``, ``member`` and ``sub``, the
    member after a slash) and the function that fills a partial card with its numbers."""

    label: str
    score: Callable[[Scorecard, Part, ScoreInputs], None]


# Every kind of part, in report order: what :func:`score` dispatches on.
KINDS: dict[str, Kind] = {
    "clean": Kind("clean", _clean),
    "linf": Kind("adv/eps_{eps}{sub}", _linf),
    "l2": Kind("adv/l2{at}{sub}", _l2),
    "large_eps": Kind("adv/large_eps", _large_eps),
    "lipschitz": Kind("lipschitz", _lipschitz),
    "noise": Kind("noise", _noise),
    "corruption": Kind("corruption/{member}", _corruption),
    "corruption_benchmark": Kind("corruption_benchmark/{member}", _benchmark),
    "shift": Kind("shift", _shift),
    "post": Kind("post", _post),
    "defence": Kind("{member}", _defence),
}


def _linf_eps(cfg: EvalConfig) -> list[float]:
    """Every L-inf radius attacked: the eps list and the ensemble's radii."""
    return sorted(
        {e for e in cfg.eps if e > 0} | (set(cfg.autoattack.eps) if cfg.autoattack.enabled else set())
    )


def _l2_ensemble_eps(cfg: EvalConfig) -> list[float]:
    """The L2 radii the ensemble's L2 version runs at."""
    return list(cfg.autoattack.l2_eps) if cfg.autoattack.enabled else []


def plan(cfg: EvalConfig, extra: Iterable[str] = (), shift: bool = False) -> list[Part]:
    """The independent parts of one model's scorecard, in report order: a runner may score them
    in any order or in parallel (each part seeds its own randomness), and :func:`merge` joins
    them into the same card. ``extra``: the names of a defence's own parts, scored last (one
    named like a common part is left out); ``shift``: the run has a shifted set."""
    parts = [Part("clean")]
    for e in _linf_eps(cfg):
        parts += [Part("linf", e)] if e in cfg.eps else []
        if cfg.autoattack.enabled and e in cfg.autoattack.eps:
            members = [a.label for a in ensemble_for(cfg, e, 0)]
            parts += [Part("linf", e, m) for m in [*members, "more_steps"]]
    parts += [Part("l2")] if any(e > 0 for e in cfg.l2_eps) else []
    for e in _l2_ensemble_eps(cfg):
        parts += [Part("l2", e, a.label) for a in ensemble_for(cfg, e, 0, l2=True)]
    parts += [Part("large_eps"), Part("lipschitz"), Part("noise")]
    parts += [Part("corruption", member=c) for c in cfg.corruptions]
    if cfg.corruption_benchmark is not None:
        parts += [Part("corruption_benchmark", member=c) for c in cfg.corruption_benchmark.names]
    parts += [Part("shift")] if shift else []
    parts += [Part("post")]
    common = {p.label for p in parts}
    return parts + [Part("defence", member=name) for name in extra if name not in common]


def longest_first(parts: list[Part]) -> list[Part]:
    """``parts`` in the order a runner should start them: a defence's own parts (certificates)
    and the ensemble's members (Square's queries, APGD's restarts) take several times longer
    than the others, and started last they would trail alone on one worker while the others
    idle. Plan order within each group."""

    def rank(p: Part) -> int:
        return 0 if p.kind == "defence" else 1 if p.kind in ("linf", "l2") and p.member is not None else 2

    return sorted(parts, key=rank)


def score(part: Part, inputs: ScoreInputs) -> Scorecard:
    """One part of :func:`plan`: a partial card that holds only that part's numbers."""
    inputs.model.eval()
    card = Scorecard({}, np.zeros((0, 0), dtype=np.int64), inputs.test.classes, n_test=len(inputs.test.y))
    KINDS[part.kind].score(card, part, inputs)
    return card


def merge(cards: list[Scorecard], inputs: ScoreInputs) -> Scorecard:
    """One card from the partial cards of :func:`plan` (in plan order): their numbers, the
    corruption summaries and the gradient-masking checks, which need every eps group. Reads only
    the test split, the settings and the seed of ``inputs``."""
    test = inputs.test
    _, y = inputs.attacked()  # the attacked images: their count and chance level
    card = Scorecard({}, cards[0].confusion, test.classes, n_test=len(test.y), n_attacked=len(y))
    for p in cards:
        card.metrics |= p.metrics
        card.attacks += p.attacks
        for label, curve in p.curves.items():
            card.curves.setdefault(label, {}).update(curve)
        card.corruption |= p.corruption
        card.noise |= p.noise
        card.specification += p.specification
        card.risk_coverage = card.risk_coverage or p.risk_coverage
        card.calibration = card.calibration or p.calibration
        card.thresholds = card.thresholds or p.thresholds
        card.certificates = card.certificates or p.certificates
        card.seconds |= p.seconds
        card.masks |= p.masks
    for label in card.curves:
        card.curves[label] = dict(sorted(card.curves[label].items()))
    card.metrics |= corruption_metrics(card.corruption)
    if inputs.cfg.corruption_benchmark is not None:
        card.metrics |= benchmark_summary(card.metrics, inputs.cfg.corruption_benchmark)
    _worst_cases(card, inputs.cfg)
    _masking(card, y, inputs.cfg)
    card.metrics |= _sample_sizes(card)
    note = small_test_note(card.n_test)
    if note:
        warnings.warn(DataWarning(note), stacklevel=2)
    return card


def _sample_sizes(card: Scorecard) -> dict[str, float]:
    """The n of each dimension, once: clean, noise and corruptions score the whole test split,
    attacks a subsample (``evaluation.max_samples``), certification its own subsample."""
    m = card.metrics
    out = {"clean/n": float(card.n_test)}
    if any(k.startswith(("adv/", "masking/")) and k.endswith("/acc") for k in m):
        out["adv/n"] = float(card.n_attacked)
    if card.noise:
        out["noise/n"] = float(card.n_test)
    if card.corruption:
        out["corruption/n"] = float(card.n_test)
    if card.certificates is not None:
        out["certified/n"] = float(len(card.certificates.y))
    return out


def evaluate(inputs: ScoreInputs) -> Scorecard:
    """Every score of one model: each part of :func:`plan` scored (:func:`score`) and the parts
    merged (:func:`merge`), the one route to a scorecard. Here the parts run one after another;
    the flows' tasks (``tasks/evaluation.py``) spread the same parts over the runner's workers."""
    parts = plan(inputs.cfg, inputs.extra, inputs.shift is not None)
    return merge([score(p, inputs) for p in parts], inputs)


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
