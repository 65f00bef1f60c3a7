"""Scoring a production batch: the guarded model's answers and the drift features, in chunks so a
batch of any size is scored in bounded memory; and, for a labelled batch, how well it answered.

The guarded model may abstain, so one accuracy cannot describe it: counting abstentions as errors
mixes how often it answers with how often it is right. A labelled batch is scored three ways,
each named for what it is: coverage (the share of images answered), accuracy on the answered
images, and the plain model's accuracy (its argmax, with no guard).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd

from robustops.config import MonitorConfig
from robustops.errors import DataValidationError
from robustops.evaluation.scorecard import wilson
from robustops.monitoring import estimate
from robustops.monitoring.drift import DriftResult, DriftSettings, detect
from robustops.monitoring.features import batch_features
from robustops.monitoring.reference import Reference, signals
from robustops.serving import GuardedModel

PLAIN_COLUMN = "plain_class_index"  # the model's argmax without the guard (-1: rejected image)


class Scored(NamedTuple):
    """A scored batch: the guarded model's answers (with :data:`PLAIN_COLUMN`), and for every image
    it did not reject the drift features and the plain model's logits, row for row."""

    predictions: pd.DataFrame
    features: pd.DataFrame
    logits: np.ndarray


def score(guarded: GuardedModel, ref: Reference, x: np.ndarray, chunk: int = 4096) -> Scored:
    """:class:`Scored` for every image of ``x``, ``chunk`` images at a time."""
    preds, feats, logit_parts = [], [], []
    classes = guarded.settings.classes
    for i in range(0, len(x), chunk):
        xb = np.ascontiguousarray(x[i : i + chunk], dtype=np.float32)
        preds.append(guarded.predict(xb))
        preds[-1][PLAIN_COLUMN] = -1
        # Rejected images (NaN, out of range) are not features of the data's distribution.
        ok = ~preds[-1]["rejected"].to_numpy()
        if ok.any():
            table, logits, _ = batch_features(guarded.model, xb[ok], classes, ref.projection)
            feats.append(table)
            logit_parts.append(logits)
            preds[-1].loc[ok, PLAIN_COLUMN] = logits.argmax(1)
    predictions = pd.concat(preds, ignore_index=True) if preds else pd.DataFrame()
    features = pd.concat(feats, ignore_index=True) if feats else ref.features.iloc[:0]
    logits = np.concatenate(logit_parts) if logit_parts else np.zeros((0, len(classes)), dtype=np.float32)
    return Scored(predictions, features, logits)


def check_batch_size(n: int, min_batch: int, where: str) -> None:
    """Refuses a batch with too few images for the drift tests.

    Evidently's tests fail outright below 3 images (a zero division in the MMD, a singular
    kernel density), and a handful of images says little about a distribution anyway.

    Raises:
        DataValidationError: fewer than ``min_batch`` images.
    """
    if n < min_batch:
        raise DataValidationError(
            f"{where}: {n} image(s); the drift tests need at least {min_batch} (monitor.min_batch): "
            "monitor a larger batch, or score this one with robustops predict"
        )


def drift(
    ref: Reference,
    features: pd.DataFrame,
    settings: DriftSettings,
    min_batch: int = 3,
    where: str = "the batch",
) -> DriftResult:
    """The drift decision for a batch's features (one row per image the guard did not reject);
    refuses a batch too small to test."""
    check_batch_size(len(features), min_batch, where)
    return detect(ref.features, features[ref.features.columns], settings)


@dataclass
class BatchScores:
    """How the guarded model did on a batch; the accuracies only when the batch has labels."""

    n: int
    answered: int
    abstained: int
    rejected: int
    correct_answered: int | None = None  # right among the answered images
    plain_correct: int | None = None  # the plain model's argmax right, among the valid images

    @property
    def valid(self) -> int:
        """Images that passed input validation: the plain model scores these."""
        return self.n - self.rejected

    @property
    def coverage(self) -> float:
        return self.answered / self.n if self.n else 0.0

    @property
    def acc_answered(self) -> float | None:
        return (
            self.correct_answered / self.answered
            if self.correct_answered is not None and self.answered
            else None
        )

    @property
    def plain_acc(self) -> float | None:
        return self.plain_correct / self.valid if self.plain_correct is not None and self.valid else None

    def metrics(self) -> dict[str, float]:
        """``batch/*`` metrics: counts and shares, and with labels the two accuracies."""
        share = (lambda k: k / self.n) if self.n else (lambda k: 0.0)
        out = {
            "batch/n": float(self.n),
            "batch/rejected": share(self.rejected),
            "batch/abstained": share(self.abstained),
            "batch/coverage": self.coverage,
        }
        if self.acc_answered is not None:
            out["batch/acc_answered"] = self.acc_answered
        if self.plain_acc is not None:
            out["batch/plain_acc"] = self.plain_acc
        return out

    def lines(self) -> list[str]:
        """The scores as a person reads them, each accuracy with its n and 95 % interval."""
        out = [
            f"coverage {self.coverage:.4f}: answered {self.answered} of {self.n} images "
            f"(abstained {self.abstained}, rejected {self.rejected})"
        ]
        if self.correct_answered is None:
            return out
        if self.answered:
            out.append(
                f"accuracy on the answered images {self.acc_answered:.4f} "
                f"({_interval(self.correct_answered, self.answered)})"
            )
        else:
            out.append("accuracy on the answered images: none answered")
        if self.valid:
            out.append(
                f"plain model accuracy {self.plain_acc:.4f} (its argmax without the guard; "
                f"{_interval(self.plain_correct, self.valid)})"
            )
        return out


def _interval(k: int, n: int) -> str:
    low, high = wilson(k, n)
    return f"{n} images, 95 % interval {low:.4f}-{high:.4f}"


def batch_scores(predictions: pd.DataFrame, y: np.ndarray | None = None) -> BatchScores:
    """Coverage, and with labels ``y`` the accuracy on the answered images and the plain model's
    accuracy, from :func:`score`'s predictions."""
    rejected = predictions["rejected"].to_numpy(bool)
    abstained = predictions["abstain"].to_numpy(bool) & ~rejected
    answered = ~rejected & ~abstained
    out = BatchScores(len(predictions), int(answered.sum()), int(abstained.sum()), int(rejected.sum()))
    if y is not None and len(y) == len(predictions):
        out.correct_answered = int((predictions["class_index"].to_numpy()[answered] == y[answered]).sum())
        if PLAIN_COLUMN in predictions:
            plain = predictions[PLAIN_COLUMN].to_numpy()
            out.plain_correct = int((plain[~rejected] == y[~rejected]).sum())
    return out


@dataclass
class Expectation:
    """The expected accuracy of the plain model (its argmax, as ``batch/plain_acc`` measures it) on
    a batch, by every fitted estimator; ``method`` is the one that alerts; ``truth`` the measured
    accuracy when the batch has labels; ``reasons`` the accuracy alerts, in words."""

    estimates: dict[str, estimate.Estimate]
    method: str
    reference_acc: float
    n: int
    truth: float | None = None
    reasons: list[str] = field(default_factory=list)

    @property
    def alert(self) -> bool:
        return bool(self.reasons)

    @property
    def chosen(self) -> estimate.Estimate:
        return self.estimates[self.method]

    def metrics(self) -> dict[str, float]:
        """``estimate/*``: each method's value and interval, the chosen one as ``estimate/acc``,
        the validation accuracy it is read against and, with labels, the truth and each error."""
        m = {"estimate/acc": self.chosen.value, "estimate/reference_acc": self.reference_acc,
             "estimate/alert": float(self.alert)}  # fmt: skip
        for name, e in self.estimates.items():
            m |= {
                f"estimate/acc/{name}": e.value,
                f"estimate/acc/{name}/low": e.low,
                f"estimate/acc/{name}/high": e.high,
            }
        if self.truth is not None:
            m["estimate/truth"] = self.truth
            m |= {f"estimate/error/{name}": e.value - self.truth for name, e in self.estimates.items()}
        return m

    def as_json(self) -> dict[str, object]:
        return {"method": self.method, "reference_acc": self.reference_acc, "n": self.n, "truth": self.truth,
                "alert": self.alert, "reasons": self.reasons,
                "estimates": {k: {"value": v.value, "low": v.low, "high": v.high, "sampling": list(v.sampling)}
                              for k, v in self.estimates.items()}}  # fmt: skip

    def line(self) -> str:
        e = self.chosen
        out = (f"expected accuracy {e.value:.4f} ({e.method}; 95 % interval {e.low:.4f}-{e.high:.4f} over "
               f"{self.n} images; validation accuracy {self.reference_acc:.4f})")  # fmt: skip
        return out + (f", measured {self.truth:.4f}" if self.truth is not None else "")

    def html(self) -> str:
        """A table of the estimates, for the top of the monitor's report."""
        truth = self.truth is not None
        head = (
            "<tr><th>method</th><th>expected accuracy</th><th>95 % interval</th><th>sampling alone</th>"
            + ("<th>error vs measured</th>" if truth else "")
        )
        rows = []
        for name, e in self.estimates.items():
            mark = " (alerts)" if name == self.method else ""
            err = f"<td>{e.value - self.truth:+.4f}</td>" if truth else ""
            rows.append(f"<tr><td>{html.escape(name)}{mark}</td><td>{e.value:.4f}</td>"
                        f"<td>{e.low:.4f}-{e.high:.4f}</td><td>{e.sampling[0]:.4f}-{e.sampling[1]:.4f}</td>"
                        f"{err}</tr>")  # fmt: skip
        measured = f"<p>Measured accuracy (labels): {self.truth:.4f}.</p>" if truth else ""
        alerts = "".join(f"<p><b>Alert:</b> {html.escape(r)}</p>" for r in self.reasons)
        return (f"<section style='font-family:sans-serif;margin:1em'><h2>Expected accuracy</h2>"
                f"<p>The plain model's accuracy on this batch of {self.n} images, estimated without labels; "
                f"validation accuracy {self.reference_acc:.4f}.</p>{alerts}{measured}"
                f"<table border='1' cellpadding='4'>{head}</tr>{''.join(rows)}</table></section>")  # fmt: skip


def expect(
    ref: Reference, scored: Scored, cfg: MonitorConfig, y: np.ndarray | None = None, seed: int = 0
) -> Expectation | None:
    """The batch's expected accuracy by the reference's estimators, the alerts of
    ``monitor.min_expected_acc`` and ``monitor.max_expected_drop`` on ``monitor.estimator``'s
    estimate (:func:`alerts`), and with labels ``y`` the measured accuracy. None when the reference
    has no estimators or no image was scored."""
    fitted = ref.fitted
    if fitted is None or len(scored.features) == 0:
        return None
    if cfg.estimator not in fitted.estimators:
        raise DataValidationError(
            f"monitor.estimator {cfg.estimator!r}: the model was logged without it (it has "
            f"{', '.join(fitted.estimators)}); choose one of those"
        )
    estimates = estimate.estimate(fitted, signals(scored.features, scored.logits), cfg.estimate_boot, seed)
    truth = batch_scores(scored.predictions, y).plain_acc if y is not None else None
    out = Expectation(estimates, cfg.estimator, fitted.val_acc, len(scored.features), truth)
    out.reasons.extend(alerts(out.chosen, fitted.val_acc, cfg))
    return out


def alerts(e: estimate.Estimate, reference_acc: float, cfg: MonitorConfig) -> list[str]:
    """The reasons ``e`` raises the accuracy alerts, in words. Each needs the estimate past its
    bound, and the batch below the accuracy the bound is measured from beyond its sampling error
    (the bootstrap's upper end below ``min_expected_acc`` itself, or below the validation accuracy
    ``reference_acc`` for ``max_expected_drop``), so that a small batch does not fire on noise."""
    said = f"expected accuracy {e.value:.2f} ({e.method}, 95 % interval {e.low:.2f}-{e.high:.2f})"
    out = []
    lowest = cfg.min_expected_acc
    if lowest is not None and e.value < lowest and e.sampling[1] < lowest:
        out.append(f"{said}, below {lowest:.2f}")
    drop = cfg.max_expected_drop
    if drop is not None and e.value < reference_acc - drop and e.sampling[1] < reference_acc:
        out.append(
            f"{said}, {reference_acc - e.value:.2f} below the validation accuracy {reference_acc:.2f} "
            f"(more than {drop:.2f})"
        )
    return out


def verdict(result: DriftResult, expectation: Expectation | None) -> tuple[bool, list[str]]:
    """Whether the batch raises the drift event, and why: the drift tests' reasons, then the
    accuracy alerts'."""
    alerts = expectation.reasons if expectation is not None else []
    return result.drift or bool(alerts), result.reasons + alerts
