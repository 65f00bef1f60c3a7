"""Training-time augmentation as loss functions for :func:`robustops.training.fit`.

Two policies: random corruptions at random severity, and AugMix (Hendrycks et al., 2020): a
convex mix of several short chains of corruptions, blended with the original, optionally with the
Jensen-Shannon consistency loss between the clean image and two AugMix views.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from robustops.config import AugmentConfig, AugmentPolicy
from robustops.corruptions import CORRUPTIONS
from robustops.training.standard import LossFn, cross_entropy


def corrupt_batch(
    x: torch.Tensor, names: list[str], severity: tuple[int, int], p: float, gen: torch.Generator
) -> torch.Tensor:
    """Corrupts a random share ``p`` of the batch, each image with a random corruption and severity."""
    n = len(x)
    chosen = torch.rand(n, generator=gen) < p
    which = torch.randint(len(names), (n,), generator=gen)
    sev = torch.randint(severity[0], severity[1] + 1, (n,), generator=gen)
    out = x.clone()
    # One call per (corruption, severity) group keeps the work batched.
    for c in range(len(names)):
        for s in range(severity[0], severity[1] + 1):
            idx = torch.nonzero(chosen & (which == c) & (sev == s)).flatten()
            if len(idx):
                out[idx] = CORRUPTIONS.get(names[c])(x[idx], s, gen)
    return out


def augmix(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """One AugMix view of the batch: Dirichlet-weighted chains, Beta-blended with the original."""
    n = len(x)
    # torch.distributions takes no generator: make_transform seeds the global stream per batch instead.
    alpha = torch.full((cfg.width,), cfg.alpha)
    w = torch.distributions.Dirichlet(alpha).sample((n,)) if n else torch.zeros(0, cfg.width)
    m = torch.distributions.Beta(cfg.alpha, cfg.alpha).sample((n,))
    mix = torch.zeros_like(x)
    for i in range(cfg.width):
        depth = cfg.depth or int(torch.randint(1, 4, (1,), generator=gen))
        chain = x
        for _ in range(depth):
            chain = corrupt_batch(chain, cfg.corruptions, cfg.severity, 1.0, gen)
        mix += w[:, i].view(-1, 1, 1, 1).to(x) * chain
    m = m.view(-1, 1, 1, 1).to(x)
    return ((1 - m) * x + m * mix).clamp(0, 1)


def jsd(logits: list[torch.Tensor]) -> torch.Tensor:
    """Jensen-Shannon divergence between the predictive distributions of several views."""
    probs = [F.softmax(z, dim=1) for z in logits]
    mean = torch.stack(probs).mean(0).clamp(1e-7, 1).log()
    return sum(F.kl_div(mean, p, reduction="batchmean") for p in probs) / len(probs)


Transform = Callable[[torch.Tensor], torch.Tensor]


def make_transform(cfg: AugmentConfig, seed: int) -> Transform | None:
    """The policy as a batch transform with its own seeded stream; None for no augmentation.

    Defences apply it before their own objective (augment, then attack); the JSD consistency
    loss is the baseline's alone (see :func:`make_loss`).
    """
    if cfg.policy == AugmentPolicy.NONE or not cfg.corruptions:
        return None
    gen = torch.Generator().manual_seed(seed + 1)
    if cfg.policy == AugmentPolicy.CORRUPTIONS:
        return lambda x: corrupt_batch(x, cfg.corruptions, cfg.severity, cfg.p, gen)

    def view(x: torch.Tensor) -> torch.Tensor:
        # torch.distributions takes no generator: seed the global stream per batch instead.
        torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=gen)))
        return augmix(x, cfg, gen)

    return view


def make_loss(cfg: AugmentConfig, seed: int, label_smoothing: float = 0.0) -> LossFn:
    """The per-batch loss for the configured policy, with its own seeded random stream."""
    transform = make_transform(cfg, seed)
    if transform is None:
        if label_smoothing:
            return lambda model, x, y: F.cross_entropy(model(x), y, label_smoothing=label_smoothing)
        return cross_entropy

    if cfg.policy == AugmentPolicy.AUGMIX and cfg.jsd:

        def augmixed(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            views = torch.cat([x, transform(x), transform(x)])
            logits = model(views).chunk(3)
            ce = F.cross_entropy(logits[0], y, label_smoothing=label_smoothing)
            return ce + cfg.jsd_weight * jsd(list(logits))

        return augmixed

    def augmented(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(transform(x)), y, label_smoothing=label_smoothing)

    return augmented
