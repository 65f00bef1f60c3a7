"""Randomized smoothing: PREDICT and CERTIFY on toy base classifiers whose vote shares are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm
from torch import nn

from robustops.evaluation.certify import (
    ABSTAIN,
    Smoothed,
    certified_radius,
    certify_dataset,
    lower_confidence_bound,
)

SIGMA = 0.5


class Threshold(nn.Module):
    """Class 0 when the first pixel is below t, else class 1: under N(0, sigma^2) noise the vote
    share of class 0 at pixel value v is Phi((t - v) / sigma), known in closed form."""

    def __init__(self, t: float = 0.5) -> None:
        super().__init__()
        self.t = t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        below = (x.flatten(1)[:, 0] < self.t).float()
        return torch.stack([below, 1 - below, torch.zeros_like(below)], 1)


def _images(values) -> torch.Tensor:
    x = torch.zeros(len(values), 1, 4, 4)
    x[:, 0, 0, 0] = torch.tensor(values, dtype=torch.float32)
    return x


def test_clopper_pearson_bound_by_hand():
    # All n votes agree: the one-sided bound solves p^n = alpha.
    assert lower_confidence_bound(1000, 1000, 0.001) == pytest.approx(0.001 ** (1 / 1000))
    assert lower_confidence_bound(0, 100, 0.05) == 0.0
    b = lower_confidence_bound(80, 100, 0.05)
    assert 0.7 < b < 0.8  # below the estimate, by about 1.645 standard errors
    assert certified_radius(0.5, 1.0) == 0.0 and certified_radius(norm.cdf(1.0), 0.25) == pytest.approx(0.25)


def test_certify_abstains_when_the_classes_are_tied():
    smooth = Smoothed(Threshold(0.5), 3, SIGMA)
    gen = torch.Generator().manual_seed(0)
    pred, radius = smooth.certify(_images([0.5] * 6), n0=100, n=1000, alpha=0.001, gen=gen)
    assert (pred == ABSTAIN).all() and (radius == 0).all()  # pA = 1/2: nothing to certify
    assert (smooth.predict(_images([0.5] * 6), n=1000, alpha=0.001, gen=gen) == ABSTAIN).sum() >= 5


def test_radius_grows_with_the_top_class_probability():
    values = [0.4, 0.2, 0.0, -0.3, -0.8]  # further below t: a larger share votes class 0
    smooth = Smoothed(Threshold(0.5), 3, SIGMA)
    pred, radius = smooth.certify(
        _images(values), n0=100, n=4000, alpha=0.001, gen=torch.Generator().manual_seed(1)
    )
    assert (pred == 0).all()
    assert np.all(np.diff(radius) > 0), radius
    # pA = Phi((t - v) / sigma), so the true radius is t - v; the certificate is a lower bound.
    true = 0.5 - np.array(values)
    assert np.all(radius <= true) and np.all(radius > 0.6 * true)


def test_certify_dataset_counts_abstentions_as_errors():
    x = _images([0.0, 0.0, 0.5, 0.5]).numpy()
    y = np.array([0, 1, 0, 0])  # one correct, one wrong, two ties
    c = certify_dataset(Threshold(0.5), x, y, 3, SIGMA, n0=50, n=500, alpha=0.001, radii=[0.0, 0.1, 2.0])
    m = c.metrics()
    assert m["certified/r_0/acc"] == 0.25 and m["certified/r_0.1/acc"] == 0.25 and m["certified/r_2/acc"] == 0
    assert m["certified/abstain"] == 0.5
    assert m["certified/max_radius"] == pytest.approx(SIGMA * norm.ppf(0.001 ** (1 / 500)))
    assert 0 < m["certified/acr"] < m["certified/max_radius"]


def test_certificates_are_seeded():
    x = _images([0.3, 0.1]).numpy()
    a = certify_dataset(Threshold(0.5), x, np.zeros(2, int), 3, SIGMA, 20, 200, 0.01, [0.0], seed=3)
    b = certify_dataset(Threshold(0.5), x, np.zeros(2, int), 3, SIGMA, 20, 200, 0.01, [0.0], seed=3)
    np.testing.assert_array_equal(a.radius, b.radius)


class Recording(nn.Module):
    """A base classifier that remembers the largest batch it was given."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base, self.largest, self.seen = base, 0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.largest, self.seen = max(self.largest, len(x)), self.seen + len(x)
        return self.base(x)


def test_certify_with_100000_samples_stays_in_bounded_batches_and_tightens_the_radius():
    values = [0.2, -0.3]
    base = Recording(Threshold(0.5))
    c = certify_dataset(base, _images(values).numpy(), np.zeros(2, int), 3, SIGMA, n0=100, n=100_000,
                        alpha=0.001, radii=[0.0, 0.25, 0.5, 0.75], batch_size=2000)  # fmt: skip
    # Every forward pass holds at most batch_size noisy images, whatever n is.
    assert base.largest <= 2000 and base.seen == 2 * (
        100 + 100_000 + 100_000
    )  # CERTIFY's n0 and n, PREDICT's n
    # With 100,000 votes the lower bound nearly reaches the true radius t - v (at 1,000 it does not).
    true = 0.5 - np.array(values)
    assert np.all(c.radius <= true) and np.all(c.radius > 0.97 * true), c.radius
    few = certify_dataset(
        Threshold(0.5), _images(values).numpy(), np.zeros(2, int), 3, SIGMA, 100, 1000, 0.001, [0.0]
    )
    assert np.all(few.radius < 0.95 * true)
    m = c.metrics()
    assert [m[f"certified/r_{r}/acc"] for r in ("0", "0.25", "0.5", "0.75")] == [1.0, 1.0, 0.5, 0.5]
    assert m["certified/max_radius"] == pytest.approx(SIGMA * norm.ppf(0.001 ** (1 / 100_000)))
