"""The promotion gate: which model, if any, may replace the champion. Pure: the registry I/O is
in ``tasks/gate.py`` and ``adapters/registry.py``.

1. Each model passes or fails the gate: every ``min`` and ``max`` threshold, the gradient-masking
   checks (a masked model's adversarial score is not trusted) and the required specification
   checks. Every failure is a reason.
2. The passing model with the best ``primary`` score is the challenger.
3. It is promoted when there is no champion, or when it was trained on data of the champion's
   input shape and classes, beats the champion on ``primary`` by more than noise, and no gated
   metric is worse than the champion's by more than ``tolerance``. Otherwise the champion stays,
   and the decision says why.

"More than noise": when the per-image outcomes of both models on ``primary`` are known for the
same test images, a one-sided exact McNemar test on the images where they disagree (a
binomial test of "only the challenger is right" against "only the champion is right") must give
p < ``significance``; otherwise the challenger must beat the champion by more than ``margin``.
The decision says which was used, with its p-value or margin.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robustops.config import GateConfig
from robustops.data import Dataset
from robustops.evaluation.scorecard import subsample

# adv/<attack>/eps_<eps>/acc: the L-inf scores whose per-image outcomes the scorecard keeps.
_ADV = re.compile(r"^adv/(?P<label>[^/]+)/eps_(?P<eps>[^/]+)/acc$")


@dataclass
class Candidate:
    name: str
    metrics: dict[str, float]
    masking_passed: bool
    specification: dict[str, bool]  # specification check name -> passed
    outcomes: np.ndarray | None = None  # per test image: correct on the primary metric


@dataclass(frozen=True)
class DataSignature:
    """What a model takes and answers: the input shape (C, H, W) and its classes. Two models are
    comparable on ``primary`` only when these agree; ``source`` is shown, never compared."""

    shape: tuple[int, ...]
    n_classes: int
    classes_digest: str | None = None  # None: only the count is known (an older version)
    classes_text: str = ""
    source: str = ""

    @classmethod
    def of(cls, shape: tuple[int, ...], classes: list[str], source: str = "") -> DataSignature:
        return cls(tuple(int(s) for s in shape), len(classes), classes_digest(classes), classes_text(classes),
                   source)  # fmt: skip

    def describe(self) -> str:
        c, h, w = (list(self.shape) + [0, 0, 0])[:3]
        return f"{c} channel{'s' * (c != 1)} of {h}x{w}, {self.n_classes} classes"

    def mismatch(self, other: DataSignature) -> list[str]:
        """How ``self`` (the challenger's data) differs from ``other`` (the champion's)."""
        out = []
        if tuple(self.shape[:1]) != tuple(other.shape[:1]):
            out.append(f"{self.shape[0]} input channels, the champion's {other.shape[0]}")
        if tuple(self.shape[1:]) != tuple(other.shape[1:]):
            out.append(
                f"input size {'x'.join(map(str, self.shape[1:]))}, the champion's "
                f"{'x'.join(map(str, other.shape[1:]))}"
            )
        if self.n_classes != other.n_classes:
            out.append(f"{self.n_classes} classes, the champion's {other.n_classes}")
        elif self.classes_digest and other.classes_digest and self.classes_digest != other.classes_digest:
            out.append(f"classes {self.classes_text}, the champion's {other.classes_text}")
        return out


def classes_digest(classes: list[str]) -> str:
    """A short digest of the class names in order (the order is the model's output order)."""
    return hashlib.sha256(json.dumps(list(classes)).encode()).hexdigest()[:16]


def classes_text(classes: list[str], limit: int = 400) -> str:
    """The classes as people read them, shortened to about ``limit`` characters."""
    text = ", ".join(classes)
    return text if len(text) <= limit else text[: limit - 5].rsplit(", ", 1)[0] + ", ..."


def images_fingerprint(x: np.ndarray, y: np.ndarray) -> str:
    """Identifies a set of test images and labels: two per-image outcome vectors are paired only
    when they were scored on the same images, in the same order."""
    h = hashlib.sha256()
    x = np.ascontiguousarray(x, dtype=np.float32)
    h.update(f"{x.shape}|{len(y)}".encode())
    h.update(x.tobytes())
    h.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def primary_outcomes(
    masks: dict[str, np.ndarray], primary: str, ensemble: list[str], ensemble_l2: Sequence[str] = ()
) -> np.ndarray | None:
    """Per attacked image, whether the model is right on the metric ``primary``, from the
    scorecard's masks (``Scorecard.masks``: ``eps_<eps>/<attack>`` in the L-inf ball,
    ``l2/eps_<eps>/<attack>`` in the L2 ball -> stayed correct); None when the card does not hold
    them for that metric (e.g. a clean or corruption score).

    ``autoattack`` is the ensemble's per-image worst case (``ensemble``: its members' labels),
    ``autoattack_l2`` its L2 version's (``ensemble_l2``), and ``worst`` the worst case over every
    L-inf attack at that eps, as the scorecard computes them."""
    if primary in masks:
        return np.asarray(masks[primary], dtype=bool)
    m = _ADV.match(primary)
    if m is None:
        return None
    label = m["label"]
    l2 = label == "autoattack_l2" or f"l2/eps_{m['eps']}/{label}" in masks
    group = f"l2/eps_{m['eps']}" if l2 else f"eps_{m['eps']}"
    at = {k.rpartition("/")[2]: v for k, v in masks.items() if k.startswith(group + "/")}
    if label in ("autoattack", "autoattack_l2"):
        members = list(ensemble_l2 if l2 else ensemble)
        parts = [at[a] for a in members] if members and all(a in at for a in members) else []
    elif label == "worst" and not l2:
        parts = list(at.values())
    else:
        parts = [at[label]] if label in at else []
    return np.logical_and.reduce([np.asarray(p, dtype=bool) for p in parts]) if parts else None


def mcnemar(challenger: np.ndarray, champion: np.ndarray) -> tuple[int, int, float]:
    """One-sided exact McNemar test that the challenger is right more often on the same images.

    Returns (images only the challenger gets right, images only the champion gets right, p).
    Under "neither is better" each disagreement is a fair coin (Clopper & Pearson's exact
    binomial test, as scipy computes it); images both get right or wrong say nothing about
    which is better, so a paired test needs far fewer images than comparing two accuracies."""
    from scipy.stats import binomtest

    new, old = np.asarray(challenger, dtype=bool), np.asarray(champion, dtype=bool)
    b, c = int((new & ~old).sum()), int((~new & old).sum())
    p = float(binomtest(b, b + c, 0.5, alternative="greater").pvalue) if b + c else 1.0
    return b, c, p


@dataclass
class Champion:
    """The champion as the gate sees it."""

    metrics: dict[str, float]
    name: str = "champion"
    data: DataSignature | None = None  # None: not recorded (a version from before robustops kept it)
    outcomes: np.ndarray | None = None  # per image, on the candidates' test images; None: unpaired
    unpaired: str = "the champion's per-image outcomes are not known"  # why outcomes is None


@dataclass
class Decision:
    promote: bool
    challenger: str | None
    summary: str
    failures: dict[str, list[str]] = field(default_factory=dict)  # model -> why it failed the gate
    comparison: list[str] = field(default_factory=list)  # challenger vs champion, metric by metric
    reason: str = ""  # why the challenger was or was not promoted, in a few words
    noise: dict[str, Any] = field(default_factory=dict)  # the test against noise: method and result

    def as_dict(self) -> dict[str, Any]:
        return {
            "promote": self.promote,
            "challenger": self.challenger,
            "summary": self.summary,
            "reason": self.reason,
            "failures": self.failures,
            "comparison": self.comparison,
            "noise": self.noise,
        }


def gate_failures(c: Candidate, cfg: GateConfig) -> list[str]:
    """Why ``c`` fails the gate (empty: it passes)."""
    out = []
    for key, lo in cfg.min.items():
        v = c.metrics.get(key)
        if v is None:
            out.append(f"{key} missing from the scorecard (check gate.min against the metric names)")
        elif v < lo:
            out.append(f"{key} {v:.4f} < {lo:g}")
    for key, hi in cfg.max.items():
        v = c.metrics.get(key)
        if v is None:
            out.append(f"{key} missing from the scorecard (check gate.max against the metric names)")
        elif v > hi:
            out.append(f"{key} {v:.4f} > {hi:g}")
    if cfg.require_masking and not c.masking_passed:
        out.append("failed a gradient-masking check: its adversarial score is not trusted")
    for check in cfg.spec_checks:
        if check in c.specification and not c.specification[check]:
            out.append(f"failed specification check {check}")
    if cfg.primary not in c.metrics:
        out.append(f"primary score {cfg.primary} missing from the scorecard")
    return out


def noise_test(best: Candidate, champion: Champion, cfg: GateConfig) -> dict[str, Any]:
    """Whether ``best`` beats ``champion`` on ``cfg.primary`` by more than noise: the paired
    McNemar test when both per-image outcome vectors are known and of the same images, else the
    margin. The result holds ``method``, ``passed`` and ``text`` (what the decision says)."""
    p_new, p_old = best.metrics[cfg.primary], champion.metrics[cfg.primary]
    new, old = best.outcomes, champion.outcomes
    why = champion.unpaired
    if new is None:
        why = f"the challenger's per-image outcomes on {cfg.primary} are not known"
    elif old is not None and len(new) != len(old):
        why = f"the outcomes are on {len(new)} and {len(old)} images"
    elif old is not None:
        b, c, p = mcnemar(new, old)
        ok = p < cfg.significance
        text = (
            f"one-sided exact McNemar test on the same {len(new)} test images: {b} only the challenger "
            f"gets right, {c} only the champion, p = {p:.3g} {'<' if ok else '>='} gate.significance "
            f"{cfg.significance:g}"
        )
        return {"method": "mcnemar", "passed": ok, "p_value": p, "alpha": cfg.significance, "n": len(new),
                "only_challenger": b, "only_champion": c, "text": text}  # fmt: skip
    diff = p_new - p_old
    ok = diff > cfg.margin
    text = (
        f"margin: the challenger leads by {diff:.4f}, {'above' if ok else 'not above'} gate.margin "
        f"{cfg.margin:g} (no paired test: {why})"
    )
    return {"method": "margin", "passed": ok, "margin": cfg.margin, "difference": diff, "why": why,
            "text": text}  # fmt: skip


def decide(
    candidates: list[Candidate],
    champion: Champion | dict[str, float] | None,
    cfg: GateConfig,
    champion_name: str = "champion",
    data: DataSignature | None = None,
) -> Decision:
    """The gate's decision for one pipeline run.

    Args:
        candidates: every model of the run.
        champion: the current champion, or its metrics alone, or None when the alias is not set.
        cfg: thresholds, primary score, tolerance, significance and margin.
        champion_name: how the summary names the champion (e.g. "champion (version 3)"), when
            ``champion`` is its metrics alone.
        data: the data the candidates were trained on; checked against the champion's.
    """
    if isinstance(champion, dict):
        champion = Champion(champion, champion_name)
    name = champion.name if champion is not None else champion_name
    failures = {c.name: gate_failures(c, cfg) for c in candidates}
    passing = [c for c in candidates if not failures[c.name]]
    if not passing:
        return Decision(
            False, None, f"no model passed the gate; {name} unchanged", failures, reason="no model passed"
        )
    best = max(passing, key=lambda c: (c.metrics[cfg.primary], c.metrics.get("clean/acc", 0.0)))
    if champion is None:
        return Decision(
            True, best.name, f"{best.name} passed the gate and there is no champion yet: promoted", failures,
            reason="promoted: first champion",
        )  # fmt: skip
    if data is not None and champion.data is not None:
        differs = data.mismatch(champion.data)
        if differs:
            return Decision(
                False, best.name,
                f"{best.name} passed the gate but cannot be compared with {name}: it was trained on other "
                f"data ({'; '.join(differs)}); {name} unchanged. A model of other data belongs under its own "
                "registered model: leave mlflow.registered_model unset to name it after the data, or set "
                "another name", failures,
                [f"data: challenger {data.describe()} vs champion {champion.data.describe()}"],
                reason="trained on other data than the champion: " + "; ".join(differs),
            )  # fmt: skip
    comparison, regressions = [], []
    p_new, p_old = best.metrics[cfg.primary], champion.metrics.get(cfg.primary)
    if p_old is None:
        comparison.append(f"{cfg.primary}: champion has no value; challenger {p_new:.4f}")
    else:
        comparison.append(f"{cfg.primary}: challenger {p_new:.4f} vs champion {p_old:.4f}")
    for key, higher_is_better in [(k, True) for k in cfg.min] + [(k, False) for k in cfg.max]:
        if key == cfg.primary or key not in champion.metrics:
            continue
        new, old = best.metrics[key], champion.metrics[key]
        worse = old - new if higher_is_better else new - old
        comparison.append(f"{key}: challenger {new:.4f} vs champion {old:.4f}")
        if worse > cfg.tolerance:
            regressions.append(f"{key} regresses by {worse:.4f} (> tolerance {cfg.tolerance:g})")
    if p_old is not None and p_new <= p_old:
        return Decision(
            False, best.name, f"{best.name} passed the gate but does not beat {name} on {cfg.primary} "
            f"({p_new:.4f} <= {p_old:.4f}); {name} unchanged", failures, comparison,
            reason=f"does not beat the champion on {cfg.primary}",
        )  # fmt: skip
    noise: dict[str, Any] = {}
    if p_old is not None:
        noise = noise_test(best, champion, cfg)
        comparison.append(f"noise: {noise['text']}")
        if not noise["passed"]:
            return Decision(
                False, best.name, f"{best.name} scores higher than {name} on {cfg.primary} ({p_new:.4f} vs "
                f"{p_old:.4f}) but within noise ({noise['text']}); {name} unchanged", failures, comparison,
                reason=f"within noise of the champion ({_short(noise)})", noise=noise,
            )  # fmt: skip
    if regressions:
        return Decision(
            False, best.name, f"{best.name} beats {name} on {cfg.primary} but " + "; ".join(regressions)
            + f"; {name} unchanged", failures, comparison, reason=regressions[0], noise=noise,
        )  # fmt: skip
    beyond = f" beyond noise ({_short(noise)})" if noise else ""
    return Decision(
        True, best.name, f"{best.name} beats {name} on {cfg.primary}{beyond} without regressions: promoted",
        failures, comparison, reason=f"promoted{beyond}", noise=noise,
    )  # fmt: skip


def _short(noise: dict[str, Any]) -> str:
    if noise["method"] == "mcnemar":
        op = "<" if noise["passed"] else ">="
        return f"McNemar p = {noise['p_value']:.3g} {op} {noise['alpha']:g} on {noise['n']} paired images"
    op = ">" if noise["passed"] else "<="
    return f"lead {noise['difference']:.4f} {op} margin {noise['margin']:g}, unpaired"


def model_lines(decision: dict[str, Any], scores: dict[str, dict[str, float]], primary: str) -> list[str]:
    """One line per model for the end of a run: PASS or FAIL, its primary score, its first
    reason. When no model passed, every reason of every model follows its line."""
    failures = decision.get("failures", {})
    challenger = decision.get("challenger")
    every = challenger is None
    width = max((len(n) for n in scores), default=0)
    out = []
    for name, metrics in scores.items():
        reasons = failures.get(name, [])
        score = metrics.get(primary)
        shown = f"{primary} {score:.4f}" if score is not None else f"{primary} -"
        if reasons:
            first = reasons[0] if every or len(reasons) == 1 else f"{reasons[0]} (+{len(reasons) - 1} more)"
            out.append(f"  FAIL  {name:<{width}}  {shown}  {first}")
            if every and len(reasons) > 1:
                out += [f"        {'':<{width}}  - {r}" for r in reasons[1:]]
        elif name == challenger:
            out.append(f"  PASS  {name:<{width}}  {shown}  the challenger: {decision.get('reason') or '-'}")
        else:
            out.append(f"  PASS  {name:<{width}}  {shown}  passed; {challenger} scores higher on the primary")
    return out


def worst_case_key(metrics: dict[str, float], primary: str) -> str | None:
    """The worst case over every attack at the primary's eps (else at the largest eps scored)."""
    m = _ADV.match(primary)
    if m and f"adv/worst/eps_{m['eps']}/acc" in metrics:
        return f"adv/worst/eps_{m['eps']}/acc"
    worst = [k for k in metrics if k.startswith("adv/worst/eps_")]
    return max(worst, key=lambda k: float(k.split("/")[2].removeprefix("eps_"))) if worst else None


def outcome_images(
    test: Dataset, max_samples: int | None, seed: int, n: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """The test images ``n`` per-image outcomes are on: the attacked subsample for an adversarial
    score, the whole split for one scored on every image; None when neither has ``n`` images."""
    x, y = subsample(test, max_samples, seed)  # the scorecard's own choice of images
    if len(y) == n:
        return x, y
    return (test.x, test.y) if len(test.y) == n else None
