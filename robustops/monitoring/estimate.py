"""Expected accuracy without labels: how well the model does on a production batch, estimated from
what it makes of the images, by estimators fitted on its labelled validation split.

- ``atc_msp`` and ``atc_ne``: average thresholded confidence (Garg et al., ICLR 2022). The
  threshold on a per-image score (the top softmax probability, or the negative entropy) is chosen
  so that the share of validation images above it equals the validation accuracy; a batch's
  estimate is its share above the threshold.
- ``atc_logit_z``: ATC on the top logit's z-score (how many standard deviations it stands above
  the mean of the image's logits), a score that a shift scaling all logits alike leaves unchanged.
- ``doc``: difference of confidences (Guillory et al., 2021): the validation accuracy moved by
  how far the batch's mean top probability is from the validation split's.
- ``temperature``: the mean top probability after temperature scaling fitted on the validation
  split (a CBPE-like estimate: each image contributes the probability that it is right).
- ``scorecard_match``: the validation split under every held-out corruption and severity, each
  with its measured accuracy and its profile (mean image statistics and confidence); a batch
  reads the accuracies of the profiles nearest to its own.

Every estimate comes with an interval (:func:`estimate`): a bootstrap over the batch's images,
widened by the estimator's own error under shift, its root mean square error on the held-out
corruptions with each corruption left out of its fitting (:func:`shift_rmse`).
Estimators are plug-ins (:data:`ESTIMATORS`), fitted once when a model is logged and stored beside
its drift reference as plain JSON (:func:`fit_all`, :func:`to_json`, :func:`from_json`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from scipy.stats import norm

from robustops.registry import Registry

ESTIMATORS: Registry[type[Estimator]] = Registry("estimator")
LEVEL = 0.95  # the interval's nominal coverage


@dataclass(frozen=True)
class Signals:
    """What the estimators read of a set of images: the model's logits (N, K) and the per-image
    statistics of :func:`robustops.monitoring.features.image_stats` (N, S)."""

    logits: np.ndarray
    stats: np.ndarray

    def __post_init__(self) -> None:
        if len(self.logits) != len(self.stats):
            raise ValueError(f"{len(self.logits)} logits but {len(self.stats)} image statistics")

    def __len__(self) -> int:
        return len(self.logits)

    def take(self, idx: np.ndarray) -> Signals:
        return Signals(self.logits[idx], self.stats[idx])


@dataclass(frozen=True)
class Shifted:
    """The validation split under one corruption and severity (``name``: ``fog/3``), with the
    model's measured accuracy on it."""

    name: str
    signals: Signals
    acc: float


def top_probability(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return softmax(logits / temperature, axis=1).max(1)


def top_logit_z(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    spread = z.std(1)
    return (z.max(1) - z.mean(1)) / np.where(spread > 0, spread, 1.0)


def negative_entropy(logits: np.ndarray) -> np.ndarray:
    logp = log_softmax(logits, axis=1)
    return (np.exp(logp) * logp).sum(1)


class Estimator:
    """Fitted on the validation split (:meth:`fit`), then estimates a batch's accuracy
    (:meth:`estimate`); its fitted state is a small JSON-able dict (:meth:`state`)."""

    name: ClassVar[str]

    def fit(self, val: Signals, y: np.ndarray, shifted: list[Shifted]) -> None:
        raise NotImplementedError

    def estimate(self, batch: Signals) -> float:
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        return dict(vars(self))

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Estimator:
        out = cls.__new__(cls)
        out.__dict__.update(state)
        return out


def _accuracy(val: Signals, y: np.ndarray) -> float:
    return float((val.logits.argmax(1) == y).mean())


class _ATC(Estimator):
    score_name: ClassVar[str]

    @staticmethod
    def score(logits: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def fit(self, val: Signals, y: np.ndarray, shifted: list[Shifted]) -> None:
        s = np.sort(self.score(val.logits))
        wrong = len(s) - round(_accuracy(val, y) * len(s))
        # Halfway between the scores either side of the cut: exactly the right share lies above.
        if wrong == 0:
            self.threshold = float(s[0]) - 1.0
        elif wrong == len(s):
            self.threshold = float(s[-1]) + 1.0
        else:
            self.threshold = float((s[wrong - 1] + s[wrong]) / 2)

    def estimate(self, batch: Signals) -> float:
        return float((self.score(batch.logits) > self.threshold).mean())


@ESTIMATORS.register("atc_msp")
class ATCConfidence(_ATC):
    """ATC on the top softmax probability."""

    name = "atc_msp"

    @staticmethod
    def score(logits: np.ndarray) -> np.ndarray:
        return top_probability(logits)


@ESTIMATORS.register("atc_ne")
class ATCEntropy(_ATC):
    """ATC on the negative entropy of the softmax."""

    name = "atc_ne"

    @staticmethod
    def score(logits: np.ndarray) -> np.ndarray:
        return negative_entropy(logits)


@ESTIMATORS.register("atc_logit_z")
class ATCLogitZ(_ATC):
    """ATC on the top logit's z-score within the image's logits. A fading image (contrast,
    darkening) shrinks a ReLU network's logits about evenly, which lowers the softmax's
    confidence while the ranking, and so the answer, holds; the z-score does not move with it."""

    name = "atc_logit_z"

    @staticmethod
    def score(logits: np.ndarray) -> np.ndarray:
        return top_logit_z(logits)


@ESTIMATORS.register("doc")
class DifferenceOfConfidences(Estimator):
    """DoC: validation accuracy + (batch's mean top probability - validation's)."""

    name = "doc"

    def fit(self, val: Signals, y: np.ndarray, shifted: list[Shifted]) -> None:
        self.val_acc = _accuracy(val, y)
        self.val_confidence = float(top_probability(val.logits).mean())

    def estimate(self, batch: Signals) -> float:
        moved = self.val_acc + float(top_probability(batch.logits).mean()) - self.val_confidence
        return min(max(moved, 0.0), 1.0)


@ESTIMATORS.register("temperature")
class TemperatureScaled(Estimator):
    """The mean top probability after temperature scaling (the temperature that minimises the
    validation split's negative log-likelihood, found by scipy on log T)."""

    name = "temperature"

    def fit(self, val: Signals, y: np.ndarray, shifted: list[Shifted]) -> None:
        logits = val.logits.astype(np.float64)

        def nll(log_t: float) -> float:
            return float(-log_softmax(logits / math.exp(log_t), axis=1)[np.arange(len(y)), y].mean())

        self.temperature = float(math.exp(minimize_scalar(nll, bounds=(-4, 4), method="bounded").x))

    def estimate(self, batch: Signals) -> float:
        return float(top_probability(batch.logits, self.temperature).mean())


def profile(s: Signals) -> np.ndarray:
    """A set of images in one vector: the mean of each image statistic, the mean top probability
    and the mean negative entropy."""
    return np.concatenate(
        [s.stats.mean(0), [top_probability(s.logits).mean(), negative_entropy(s.logits).mean()]]
    )


@ESTIMATORS.register("scorecard_match")
class ScorecardMatch(Estimator):
    """Reads the measured accuracy of the held-out corruptions and severities (and the clean
    split) whose profiles (:func:`profile`) lie nearest the batch's: the mean of the ``k``
    nearest, weighted by inverse distance, in units of each profile entry's spread across them."""

    name = "scorecard_match"
    k: ClassVar[int] = 3

    def fit(self, val: Signals, y: np.ndarray, shifted: list[Shifted]) -> None:
        rows = [("clean", profile(val), _accuracy(val, y))] + [
            (s.name, profile(s.signals), s.acc) for s in shifted
        ]
        self.names = [r[0] for r in rows]
        self.profiles = np.stack([r[1] for r in rows]).tolist()
        self.accs = [float(r[2]) for r in rows]
        spread = np.stack([r[1] for r in rows]).std(0)
        self.scale = np.where(spread > 1e-9, spread, 1.0).tolist()

    def nearest(self, batch: Signals) -> list[tuple[str, float, float]]:
        """The ``k`` nearest (name, distance, accuracy), nearest first."""
        d = np.sqrt((((np.asarray(self.profiles) - profile(batch)) / np.asarray(self.scale)) ** 2).sum(1))
        order = np.argsort(d)[: self.k]
        return [(self.names[i], float(d[i]), self.accs[i]) for i in order]

    def estimate(self, batch: Signals) -> float:
        near = self.nearest(batch)
        w = np.array([1 / max(dist, 1e-6) for _, dist, _ in near])
        return float((w * np.array([acc for _, _, acc in near])).sum() / w.sum())


@dataclass
class Fitted:
    """The fitted estimators of one model and what they were fitted on."""

    estimators: dict[str, Estimator]
    val_acc: float
    n_val: int
    shifted: list[str] = field(default_factory=list)
    shift_rmse: dict[str, float] = field(default_factory=dict)


def _corruption(s: Shifted) -> str:
    return s.name.split("/")[0]


def shift_rmse(name: str, val: Signals, y: np.ndarray, shifted: list[Shifted]) -> float:
    """Estimator ``name``'s root mean square error on the held-out corruptions: each corruption
    (all its severities) scored by the estimator fitted without it, so that the figure stands for
    a shift the estimator has not seen. 0 without held-out corruptions."""
    errors = []
    for left_out in sorted({_corruption(s) for s in shifted}):
        est = ESTIMATORS.get(name)()
        est.fit(val, y, [s for s in shifted if _corruption(s) != left_out])
        errors += [est.estimate(s.signals) - s.acc for s in shifted if _corruption(s) == left_out]
    return float(np.sqrt(np.mean(np.square(errors)))) if errors else 0.0


def fit_all(val: Signals, y: np.ndarray, shifted: list[Shifted], names: list[str] | None = None) -> Fitted:
    """Every registered estimator (or those of ``names``) fitted on the validation split, with its
    error under the held-out corruptions (:func:`shift_rmse`)."""
    out, rmse = {}, {}
    for name in names or ESTIMATORS.names():
        est = ESTIMATORS.get(name)()
        est.fit(val, y, shifted)
        out[name] = est
        rmse[name] = shift_rmse(name, val, y, shifted)
    return Fitted(out, _accuracy(val, y), len(y), [s.name for s in shifted], rmse)


def to_json(f: Fitted) -> dict[str, Any]:
    return {
        "val_acc": f.val_acc,
        "n_val": f.n_val,
        "shifted": f.shifted,
        "shift_rmse": f.shift_rmse,
        "estimators": {name: e.state() for name, e in f.estimators.items()},
    }


def from_json(d: dict[str, Any]) -> Fitted:
    ests = {name: ESTIMATORS.get(name).from_state(state) for name, state in d["estimators"].items()}
    return Fitted(
        ests,
        float(d["val_acc"]),
        int(d["n_val"]),
        list(d.get("shifted", [])),
        {k: float(v) for k, v in d.get("shift_rmse", {}).items()},
    )


@dataclass(frozen=True)
class Estimate:
    """One estimator's expected accuracy on a batch, with its interval (:func:`estimate`) and the
    bootstrap interval that interval widens (``sampling``: the batch's sampling error alone)."""

    method: str
    value: float
    low: float
    high: float
    sampling: tuple[float, float]


def estimate(
    fitted: Fitted, batch: Signals, boot: int = 200, seed: int = 0, level: float = LEVEL
) -> dict[str, Estimate]:
    """Each fitted estimator's estimate on ``batch`` with its interval: a percentile bootstrap over
    the batch's images (``boot`` resamples, seeded), each side widened in quadrature by the normal
    quantile of ``level`` times the estimator's :attr:`Fitted.shift_rmse`, within [0, 1]."""
    if len(batch) == 0:
        raise ValueError("no images to estimate an accuracy on")
    gen = np.random.default_rng(seed)
    draws = [gen.integers(0, len(batch), len(batch)) for _ in range(boot)]
    tail = (1 - level) / 2
    z = float(norm.ppf(1 - tail))
    out = {}
    for name, est in fitted.estimators.items():
        values = np.array([est.estimate(batch.take(idx)) for idx in draws]) if boot else np.array([])
        point = est.estimate(batch)
        low, high = (
            (float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail)))
            if boot
            else (point, point)
        )
        # The bootstrap sees only which images the batch holds; the shift itself moves the
        # estimator by about its error under the held-out corruptions, independent of that.
        low, high = min(low, point), max(high, point)
        shift = z * fitted.shift_rmse.get(name, 0.0)
        out[name] = Estimate(
            name,
            point,
            max(point - math.hypot(point - low, shift), 0.0),
            min(point + math.hypot(high - point, shift), 1.0),
            (low, high),
        )
    return out
