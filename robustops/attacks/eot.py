"""Attacking a model whose eval-mode output is random: Expectation over Transformation.

A single random draw's gradient points somewhere else each time, so an attack that follows it
fails and the model looks robust when it is not (Athalye et al., 2018). :class:`EoT` averages
the model's softmax over several draws, so every attack (gradient or query based) follows the
expected prediction instead. The attacked model's answers are then judged by the prediction the
model actually serves (:class:`Randomized`): for randomized smoothing its PREDICT, whose
abstentions count as errors, as certification counts them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


class EoT(nn.Module):
    """The log of ``model``'s softmax averaged over ``draws`` forward passes (each one a fresh
    random draw); its gradient is the average of theirs."""

    def __init__(self, model: nn.Module, draws: int) -> None:
        super().__init__()
        if draws < 1:
            raise ValueError(f"draws must be >= 1, got {draws}")
        self.model, self.draws = model, draws

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = sum(torch.softmax(self.model(x), 1) for _ in range(self.draws)) / self.draws
        return p.clamp_min(1e-12).log()


class Noisy(nn.Module):
    """``model`` under Gaussian noise of std ``sigma`` on its input: one draw of the base
    classifier that randomized smoothing votes with. The noise comes from a generator of its own,
    seeded: torch's global one may be drawn from by a model training beside it."""

    def __init__(self, model: nn.Module, sigma: float, seed: int = 0) -> None:
        super().__init__()
        self.model, self.sigma = model, sigma
        self.gen = torch.Generator().manual_seed(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=self.gen, dtype=x.dtype).to(x.device)
        return self.model(x + self.sigma * noise)


@dataclass
class Randomized:
    """How a model with random eval output is attacked and judged.

    Attributes:
        attacked: what the attacks run on (an :class:`EoT` of the random model).
        served: the served prediction of a batch: class indices, -1 for an abstention (wrong).
        draws: the EoT draws, recorded with each attack's settings.
        base: what the served prediction is built on, deterministic (smoothing: the base network
            without noise; None: nothing deterministic to report beside it).
    """

    attacked: nn.Module
    served: Callable[[torch.Tensor], torch.Tensor]
    draws: int
    base: nn.Module | None = None


def one_draw(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The served prediction of a random model: the argmax of one forward pass."""

    @torch.no_grad()
    def served(x: torch.Tensor) -> torch.Tensor:
        return model(x).argmax(1)

    return served
