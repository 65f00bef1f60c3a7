"""The Square attack (Andriushchenko et al., 2020), AutoAttack's black-box member, in the L-inf
and the L2 ball: a random search that needs only the logits, so gradient masking cannot stop it.

Written here rather than wrapped from torchattacks for the reason given in
:mod:`robustops.attacks.autoattack`: every draw comes from the attack's own seeded generator.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from robustops.attacks.base import ATTACKS, Attack, ThreatModel, like
from robustops.attacks.l2 import TINY, l2_norms
from robustops.attacks.losses import LOSSES
from robustops.stop import raise_if_stopped


def _square_p(p_init: float, i: int, queries: int) -> float:
    """Share of pixels the square covers at query i: Square's schedule, rescaled to 10,000 queries."""
    i = int(i / queries * 10000)
    for bound, div in (
        (10, 1),
        (50, 2),
        (200, 4),
        (500, 8),
        (1000, 16),
        (2000, 32),
        (4000, 64),
        (6000, 128),
        (8000, 256),
    ):
        if i <= bound:
            return p_init / div
    return p_init / 512


@ATTACKS.register("square")
class Square(Attack):
    """Square attack in the L-inf ball: a black-box random search that needs only the logits
    (Andriushchenko et al., 2020). Each query redraws one random square window of the
    perturbation to +-eps per channel and keeps it if the margin (true logit minus the best other)
    falls. Gradient masking cannot stop it, which makes it the ensemble's check on the
    white-box attacks.

    Args:
        eps: radius of the L-inf ball.
        queries: model queries per image (AutoAttack uses 5000).
        p_init: initial share of pixels a square covers.
        seed: seeds the search.
    """

    name = "square"
    threat = ThreatModel.LINF

    def __init__(self, eps: float, queries: int = 1000, p_init: float = 0.8, seed: int = 0) -> None:
        super().__init__(eps)
        if queries < 1 or not 0 < p_init <= 1:
            raise ValueError(f"queries must be >= 1 and p_init in (0, 1], got {queries} and {p_init}")
        self.queries, self.p_init, self.seed = queries, p_init, seed

    @torch.no_grad()
    def _margin(
        self, model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, x: torch.Tensor
    ) -> torch.Tensor:
        """True minus best other logit at ``x_adv`` (< 0 once fooled), queried in x's layout."""
        return -LOSSES.get("cw")(model(like(x, x_adv)), y, None)

    @torch.no_grad()
    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed)
        n, c, h, w = x.shape
        # Start from vertical stripes of +-eps, one sign per column and channel.
        stripes = torch.where(torch.rand(n, c, 1, w, generator=gen) < 0.5, -1.0, 1.0).to(x.device, x.dtype)
        x_best = (x + self.eps * stripes).clamp(0, 1)
        margin = self._margin(model, x_best, y, x)
        rows = torch.arange(h, device=x.device).view(1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, w)
        for i in range(1, self.queries):
            raise_if_stopped()
            live = torch.nonzero(margin > 0).flatten()
            if len(live) == 0:
                break
            m = len(live)
            p = _square_p(self.p_init, i, self.queries)
            s = min(max(int(round(math.sqrt(p * h * w))), 1), min(h, w) - 1 if min(h, w) > 1 else 1)
            top = torch.randint(0, h - s + 1, (m,), generator=gen).to(x.device).view(m, 1, 1)
            left = torch.randint(0, w - s + 1, (m,), generator=gen).to(x.device).view(m, 1, 1)
            window = ((rows >= top) & (rows < top + s) & (cols >= left) & (cols < left + s))[:, None]
            signs = torch.where(torch.rand(m, c, 1, 1, generator=gen) < 0.5, -1.0, 1.0).to(x.device, x.dtype)
            xl, cur = x[live], x_best[live]
            cand = torch.where(window, (xl + self.eps * signs).clamp(0, 1), cur)
            new = self._margin(model, cand, y[live], xl)
            better = new < margin[live]
            x_best[live[better]] = cand[better]
            margin[live[better]] = new[better]
        return x_best

    def settings(self) -> dict[str, Any]:
        return super().settings() | {"queries": self.queries, "p_init": self.p_init, "seed": self.seed}


def _rectangles(a: int, b: int) -> torch.Tensor:
    """An a x b block of concentric rectangles weighted 1 / (k + 1)^2 from the centre out, of
    unit L2 norm: the reference's pseudo-Gaussian bump."""
    d = torch.zeros(a, b)
    ca, cb = a // 2, b // 2
    for k in range(max(ca, cb) + 1):
        d[max(ca - k, 0) : ca + k + 1, max(cb - k, 0) : cb + k + 1] += 1.0 / (k + 1) ** 2
    return d / d.pow(2).sum().sqrt().clamp_min(TINY)


def _bump(s: int, gen: torch.Generator) -> torch.Tensor:
    """An s x s window's update: a bump over its upper half and its negative over the lower
    half, of unit L2 norm, transposed with probability 1/2 (the reference's ``eta``)."""
    d = torch.zeros(s, s)
    d[: s // 2] = _rectangles(s // 2, s)
    d[s // 2 :] = -_rectangles(s - s // 2, s)
    d = d / d.pow(2).sum().sqrt().clamp_min(TINY)
    return d.T if torch.rand(1, generator=gen).item() > 0.5 else d


def _signs(shape: tuple[int, ...], gen: torch.Generator, like_: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.rand(shape, generator=gen) < 0.5, -1.0, 1.0).to(like_.device, like_.dtype)


@ATTACKS.register("square_l2")
class SquareL2(Square):
    """Square attack in the L2 ball, as the reference's L2 version: the perturbation starts as a
    grid of signed pseudo-Gaussian bumps scaled to the sphere of radius eps; each query moves
    the mass of one random square window, plus a second window it empties, into a fresh signed
    bump in the first, rescaled so the whole perturbation stays on the sphere, and keeps it if
    the margin falls. One window position per query for all images, as the reference draws it.

    Args:
        eps: radius of the L2 ball.
        queries: model queries per image (AutoAttack uses 5000).
        p_init: initial share of pixels a square covers.
        seed: seeds the search.
    """

    name = "square_l2"
    threat = ThreatModel.L2

    @torch.no_grad()
    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed)
        n, c, h, w = x.shape
        delta = torch.zeros_like(x)
        s = max(h // 5, 1)
        for top in range((h - s * 5) // 2, h - s + 1, s):
            for left in range((w - s * 5) // 2, w - s + 1, s):
                bump = _bump(s, gen).to(x.device, x.dtype).view(1, 1, s, s)
                delta[:, :, top : top + s, left : left + s] += bump * _signs((n, c, 1, 1), gen, x)
        x_best = (x + self.eps * delta / l2_norms(delta).clamp_min(TINY)).clamp(0, 1)
        margin = self._margin(model, x_best, y, x)
        for i in range(1, self.queries):
            raise_if_stopped()
            live = torch.nonzero(margin > 0).flatten()
            if len(live) == 0:
                break
            m = len(live)
            xl = x[live]
            d = x_best[live] - xl
            s = max(int(round(math.sqrt(_square_p(self.p_init, i, self.queries) * h * w))), 3)
            s = min(s + (s % 2 == 0), h, w)  # odd, as the reference's, and inside the image
            (t1, t2), (l1, l2) = (torch.randint(0, k - s + 1, (2,), generator=gen).tolist() for k in (h, w))
            win = d[:, :, t1 : t1 + s, l1 : l1 + s]
            win_norm = win.pow(2).sum((-2, -1), keepdim=True).sqrt()
            both = torch.zeros(1, 1, h, w, device=x.device, dtype=x.dtype)
            both[..., t1 : t1 + s, l1 : l1 + s] = 1
            both[..., t2 : t2 + s, l2 : l2 + s] = 1
            # The mass the two windows may hold: theirs now plus what the sphere has left,
            # shared between the channels.
            budget = ((self.eps**2 - l2_norms(d).pow(2)).clamp_min(0) / c + l2_norms(d * both).pow(2)).sqrt()
            new = _bump(s, gen).to(x.device, x.dtype).view(1, 1, s, s) * _signs((m, c, 1, 1), gen, x)
            new = new + win / (win_norm + TINY)
            new = new / (new.pow(2).sum((-2, -1), keepdim=True).sqrt() + TINY) * budget
            d = d.clone()
            d[:, :, t2 : t2 + s, l2 : l2 + s] = 0
            d[:, :, t1 : t1 + s, l1 : l1 + s] = new
            cand = (xl + self.eps * d / l2_norms(d).clamp_min(TINY)).clamp(0, 1)
            new_margin = self._margin(model, cand, y[live], xl)
            better = new_margin < margin[live]
            x_best[live[better]] = cand[better]
            margin[live[better]] = new_margin[better]
        return x_best
