"""Scoring a production batch: the guarded model's answers and the drift features, in chunks so a
batch of any size is scored in bounded memory; and, for a labelled batch, how well it answered.

The guarded model may abstain, so one accuracy cannot describe it: counting abstentions as errors
mixes how often it answers with how often it is right. A labelled batch is scored three ways,
each named for what it is: coverage (the share of images answered), accuracy on the answered
images, and the plain model's accuracy (its argmax, with no guard).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from robustops.errors import DataValidationError
from robustops.evaluation.scorecard import wilson
from robustops.monitoring.drift import DriftResult, DriftSettings, detect
from robustops.monitoring.features import batch_features
from robustops.monitoring.reference import Reference
from robustops.serving import GuardedModel

PLAIN_COLUMN = "plain_class_index"  # the model's argmax without the guard (-1: rejected image)


def score(
    guarded: GuardedModel, ref: Reference, x: np.ndarray, chunk: int = 4096
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(predictions, features) for every image of ``x``, ``chunk`` images at a time. The
    predictions are the guarded model's columns plus :data:`PLAIN_COLUMN`."""
    preds, feats = [], []
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
            preds[-1].loc[ok, PLAIN_COLUMN] = logits.argmax(1)
    predictions = pd.concat(preds, ignore_index=True) if preds else pd.DataFrame()
    features = pd.concat(feats, ignore_index=True) if feats else ref.features.iloc[:0]
    return predictions, features


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
