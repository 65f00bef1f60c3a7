"""Defence layer 3, post-processing: confidence thresholding (selective prediction), OOD scores
and calibration.

- Selective prediction: sort by confidence (max softmax); the risk-coverage curve gives the error
  among the accepted inputs at each coverage. The threshold is chosen on the validation split as
  the lowest confidence whose accepted set keeps the error at most ``target_risk``, then applied
  to the test split (choosing it on test would flatter it).
- OOD scores, higher = more in-distribution: max softmax (Hendrycks & Gimpel, 2017), negative
  energy logsumexp(logits) (Liu et al., 2020), and optionally minus the Mahalanobis distance of
  penultimate features to the nearest class mean under a shared covariance (Lee et al., 2018).
  AUROC separates test images from OOD sets; sklearn computes it.
- Calibration: expected calibration error over equal-width confidence bins, and the bins for a
  reliability diagram.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from robustops.sources import SourceModel


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def risk_coverage(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coverage and risk (error among accepted) when accepting the k most confident, k = 1..N."""
    order = np.argsort(-confidence, kind="stable")
    errors = np.cumsum(~correct[order])
    k = np.arange(1, len(order) + 1)
    return k / len(order), errors / k


def aurc(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Area under the risk-coverage curve (lower is better)."""
    cov, risk = risk_coverage(confidence, correct)
    return float(risk.mean()) if len(risk) else float("nan")


def threshold_for_risk(confidence: np.ndarray, correct: np.ndarray, target: float) -> float:
    """The lowest confidence threshold whose accepted set has error <= target (on this data);
    1.0 + epsilon (reject all) when no threshold meets it."""
    order = np.argsort(-confidence, kind="stable")
    conf = confidence[order]
    risk = np.cumsum(~correct[order]) / np.arange(1, len(order) + 1)
    ok = np.flatnonzero(risk <= target)
    if len(ok) == 0:
        return float(np.nextafter(1.0, 2.0))
    # Accept ties with the last accepted confidence too: a threshold is a value, not a rank.
    return float(conf[ok[-1]])


@dataclass
class Calibration:
    ece: float
    bins: list[dict[str, float]] = field(default_factory=list)


def calibration(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> Calibration:
    edges = np.linspace(0, 1, bins + 1)
    ece, out = 0.0, []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence > lo) & (confidence <= hi) if lo > 0 else (confidence >= lo) & (confidence <= hi)
        n = int(inside.sum())
        if n:
            acc, conf = float(correct[inside].mean()), float(confidence[inside].mean())
            ece += n / len(confidence) * abs(acc - conf)
            out.append({"lo": float(lo), "hi": float(hi), "n": n, "acc": acc, "conf": conf})
    return Calibration(float(ece), out)


def energy(logits: np.ndarray) -> np.ndarray:
    """Negative free energy, logsumexp of the logits: higher means more in-distribution."""
    m = logits.max(1)
    return m + np.log(np.exp(logits - m[:, None]).sum(1))


def _last_linear(model: nn.Module) -> nn.Module | None:
    if isinstance(model, SourceModel):
        # A user's network is read by its outputs only: saved for serving (exported, TorchScript)
        # it has no layers to hook, and features must be the same when it is scored and served.
        return None
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    return last


@torch.no_grad()
def features(
    model: nn.Module, x: np.ndarray, batch_size: int = 512, device: str = "cpu"
) -> np.ndarray | None:
    """Penultimate features: the input of the last dense layer (None if the model has none)."""
    layer = _last_linear(model)
    if layer is None:
        return None
    got: list[torch.Tensor] = []
    me = threading.get_ident()

    def keep(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        # The model is shared: scoring parts run in other threads at once, and a hook sees their
        # forward passes too. Only this call's own passes are its features.
        if threading.get_ident() == me:
            got.append(args[0].detach().cpu())

    hook = layer.register_forward_pre_hook(keep)
    model.eval()
    try:
        t = torch.as_tensor(x)
        for i in range(0, len(t), batch_size):
            model(t[i : i + batch_size].to(device))
    finally:
        hook.remove()
    return torch.cat(got).numpy() if got else None


class Mahalanobis:
    """Class means and a shared covariance of penultimate features from the training split."""

    def __init__(self, feats: np.ndarray, y: np.ndarray, num_classes: int) -> None:
        self.means = np.stack(
            [feats[y == c].mean(0) if (y == c).any() else feats.mean(0) for c in range(num_classes)]
        )
        centred = feats - self.means[y]
        cov = centred.T @ centred / max(1, len(feats) - 1)
        # pinv: dead ReLU units make the covariance singular.
        self.precision = np.linalg.pinv(cov + 1e-6 * np.eye(len(cov)))

    def score(self, feats: np.ndarray) -> np.ndarray:
        """Minus the distance to the nearest class mean (higher = more in-distribution)."""
        d = feats[:, None, :] - self.means[None]
        dist = np.einsum("nkd,de,nke->nk", d, self.precision, d)
        return -dist.min(1)


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """AUROC of telling in-distribution (positive) from OOD by a score (higher = in)."""
    if not len(in_scores) or not len(out_scores):
        return float("nan")
    labels = np.r_[np.ones(len(in_scores)), np.zeros(len(out_scores))]
    return float(roc_auc_score(labels, np.r_[in_scores, out_scores]))


def noise_ood(shape: tuple[int, ...], n: int, seed: int) -> dict[str, np.ndarray]:
    """Synthetic OOD sets: uniform noise and Gaussian noise around mid-grey, clipped to [0, 1]."""
    rng = np.random.default_rng(seed + 101)
    return {
        "uniform_noise": rng.random((n, *shape), dtype=np.float32),
        "gaussian_noise": np.clip(0.5 + 0.25 * rng.standard_normal((n, *shape)), 0, 1).astype(np.float32),
    }
