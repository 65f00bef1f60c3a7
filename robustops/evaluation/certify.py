"""Randomized smoothing: the smoothed classifier's PREDICT and CERTIFY (Cohen et al., 2019).

The smoothed classifier g(x) = argmax_c P(f(x + N(0, sigma^2 I)) = c). CERTIFY picks the top
class from n0 noisy samples, estimates its probability from n fresh ones, and lower-bounds it with
a one-sided Clopper-Pearson interval at level alpha; if that bound pA exceeds 1/2, g is constant
within the L2 radius sigma * Phi^-1(pA) with probability at least 1 - alpha. PREDICT abstains
unless a two-sided binomial test separates the top two classes at level alpha.

Noise is drawn in batches for several images at once, which is what makes n = 1000 per image
cheap on small models. Scipy supplies the exact binomial test and the beta quantiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import beta, binomtest, norm
from torch import nn

from robustops.names import number
from robustops.stop import raise_if_stopped

ABSTAIN = -1


def lower_confidence_bound(n_a: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion n_a / n."""
    return float(beta.ppf(alpha, n_a, n - n_a + 1)) if n_a > 0 else 0.0


def certified_radius(p_lower: float, sigma: float) -> float:
    """sigma * Phi^-1(p_lower) for p_lower > 1/2, else 0 (no certificate)."""
    return float(sigma * norm.ppf(p_lower)) if p_lower > 0.5 else 0.0


@torch.no_grad()
def sample_counts(
    model: nn.Module,
    x: torch.Tensor,
    num: int,
    sigma: float,
    num_classes: int,
    gen: torch.Generator,
    batch_size: int = 2000,
    device: str = "cpu",
) -> np.ndarray:
    """Votes of the base classifier on ``num`` noisy copies of each image: (len(x), num_classes)."""
    model.eval()
    counts = torch.zeros(len(x), num_classes, dtype=torch.long)
    per = max(1, batch_size // max(1, len(x)))  # noisy copies per image in one forward pass
    done = 0
    while done < num:
        raise_if_stopped()
        m = min(per, num - done)
        batch = x.repeat_interleave(m, dim=0)
        noise = torch.randn(batch.shape, generator=gen) * sigma
        pred = model((batch + noise).to(device)).argmax(1).cpu().view(len(x), m)
        counts.scatter_add_(1, pred, torch.ones_like(pred))
        done += m
    return counts.numpy()


@dataclass
class Smoothed:
    """The smoothed classifier around a base model.

    Args:
        model: the base classifier (trained under Gaussian noise of the same sigma).
        num_classes: number of classes.
        sigma: noise standard deviation.
        batch_size: noisy inputs per forward pass.
        device: torch device.
    """

    model: nn.Module
    num_classes: int
    sigma: float
    batch_size: int = 2000
    device: str = "cpu"

    def _counts(self, x: torch.Tensor, num: int, gen: torch.Generator) -> np.ndarray:
        return sample_counts(
            self.model, x, num, self.sigma, self.num_classes, gen, self.batch_size, self.device
        )

    def predict(self, x: torch.Tensor, n: int, alpha: float, gen: torch.Generator) -> np.ndarray:
        """PREDICT for each image of ``x``: the class, or ABSTAIN when the top two classes are not
        separated by a two-sided binomial test at level alpha."""
        counts = self._counts(x, n, gen)
        top2 = np.argsort(-counts, axis=1, kind="stable")[:, :2]
        out = np.full(len(x), ABSTAIN, dtype=np.int64)
        for i, (a, b) in enumerate(top2):
            n_a, n_b = int(counts[i, a]), int(counts[i, b])
            if binomtest(n_a, n_a + n_b, 0.5).pvalue <= alpha:
                out[i] = a
        return out

    def certify(
        self, x: torch.Tensor, n0: int, n: int, alpha: float, gen: torch.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """CERTIFY for each image of ``x``: (class or ABSTAIN, certified L2 radius)."""
        chosen = self._counts(x, n0, gen).argmax(1)
        counts = self._counts(x, n, gen)
        pred = np.full(len(x), ABSTAIN, dtype=np.int64)
        radius = np.zeros(len(x))
        for i, c in enumerate(chosen):
            p = lower_confidence_bound(int(counts[i, c]), n, alpha)
            if p > 0.5:
                pred[i], radius[i] = c, certified_radius(p, self.sigma)
        return pred, radius


@dataclass
class Certificates:
    """Per-image results of CERTIFY and PREDICT on a test set, and the certified-accuracy curve."""

    pred: np.ndarray
    radius: np.ndarray
    y: np.ndarray
    predict: np.ndarray
    radii: list[float]
    settings: dict

    def certified_accuracy(self, r: float) -> float:
        """Share certified correct at radius >= r; abstentions count as errors."""
        return float(((self.pred == self.y) & (self.radius >= r)).mean()) if len(self.y) else float("nan")

    def metrics(self) -> dict[str, float]:
        correct = self.pred == self.y
        out = {f"certified/r_{number(r)}/acc": self.certified_accuracy(r) for r in self.radii}
        out["certified/abstain"] = float((self.pred == ABSTAIN).mean())
        # Average certified radius (Zhai et al., 2020): the radius where correct, else 0.
        out["certified/acr"] = float(np.where(correct, self.radius, 0.0).mean())
        # The largest radius n samples can certify (all n votes agree): beyond it every image fails.
        s = self.settings
        out["certified/max_radius"] = certified_radius(
            lower_confidence_bound(s["n"], s["n"], s["alpha"]), s["sigma"]
        )
        out["smoothed/acc"] = float((self.predict == self.y).mean())
        out["smoothed/abstain"] = float((self.predict == ABSTAIN).mean())
        return out


def certify_dataset(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    sigma: float,
    n0: int,
    n: int,
    alpha: float,
    radii: list[float],
    batch_size: int = 2000,
    seed: int = 0,
    device: str = "cpu",
    images_per_pass: int = 8,
) -> Certificates:
    """CERTIFY and PREDICT every image, in groups of ``images_per_pass`` images at once."""
    smooth = Smoothed(model, num_classes, sigma, batch_size, device)
    gen = torch.Generator().manual_seed(seed)
    preds, rads, votes = [], [], []
    for i in range(0, len(y), images_per_pass):
        xb = torch.from_numpy(x[i : i + images_per_pass])
        p, r = smooth.certify(xb, n0, n, alpha, gen)
        preds.append(p)
        rads.append(r)
        votes.append(smooth.predict(xb, n, alpha, gen))
    settings = {
        "sigma": sigma,
        "n0": n0,
        "n": n,
        "alpha": alpha,
        "radii": radii,
        "seed": seed,
        "images": len(y),
    }
    empty = np.zeros(0, dtype=np.int64)
    return Certificates(
        pred=np.concatenate(preds) if preds else empty,
        radius=np.concatenate(rads) if rads else np.zeros(0),
        y=np.asarray(y),
        predict=np.concatenate(votes) if votes else empty,
        radii=list(radii),
        settings=settings,
    )
