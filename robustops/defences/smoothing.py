"""Randomized smoothing (Cohen et al., 2019): the base classifier trained under Gaussian noise;
its scorecard adds certified L2 radii, and the served model answers with the smoothed
classifier's PREDICT, abstaining where the vote is not significant."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import nn

from robustops.attacks.eot import EoT, Noisy, Randomized
from robustops.config import DefenceConfig, radii
from robustops.data import Dataset
from robustops.defences.base import Context, Defence, build_and_fit, register
from robustops.evaluation.certify import ABSTAIN, Certificates, Smoothed, certify_dataset, sample_counts
from robustops.evaluation.scorecard import Scorecard, ScorePart, subsample
from robustops.training.augment import make_transform
from robustops.training.smoothing import NoiseCE, noise_probe
from robustops.training.standard import TrainResult

# The served model draws at most this many noise samples per image: PREDICT's cost per request.
SERVED_SAMPLES = 1000


class SmoothingConfig(DefenceConfig):
    """Randomized smoothing (Cohen et al., 2019): Gaussian-noise training, certified L2 radii."""

    name: Literal["smoothing"] = "smoothing"
    sigma: float = Field(0.25, gt=0, description="std of the Gaussian noise, for training and certifying")
    n0: int = Field(100, ge=1, description="noise samples that select the top class")
    n: int = Field(1000, ge=1, description="noise samples that estimate its probability")
    alpha: float = Field(0.001, gt=0, lt=0.5, description="failure probability of each certificate")
    radii: list[float] = Field(
        [0.0, 0.125, 0.25, 0.375, 0.5],
        description="L2 radii to report; n caps the radius at sigma * Phi^-1(alpha ** (1 / n))",
    )
    batch_size: int = Field(2000, ge=1, description="noisy copies classified at once")
    max_samples: int | None = Field(None, ge=1, description="certify at most this many test images")

    @field_validator("radii")
    @classmethod
    def _radii(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("radii must be a non-empty list of numbers >= 0")
        return radii(v, "radii")


def certify_test(
    model: nn.Module, test: Dataset, cfg: SmoothingConfig, seed: int = 0, device: str = "cpu"
) -> Certificates:
    """CERTIFY and PREDICT of the smoothed classifier on the test split (or a seeded subsample)."""
    x, y = subsample(test, cfg.max_samples, seed)
    return certify_dataset(
        model,
        x,
        y,
        test.num_classes,
        cfg.sigma,
        cfg.n0,
        cfg.n,
        cfg.alpha,
        cfg.radii,
        cfg.batch_size,
        seed,
        device,
    )


@register
class Smoothing(Defence):
    name, settings = "smoothing", SmoothingConfig
    metric_prefixes = ("certified/", "smoothed/", "base/adv/")
    undecided = "the smoothed classifier cannot decide"

    def train(self, train: Dataset, val: Dataset, ctx: Context, cfg: SmoothingConfig) -> TrainResult:
        """The base classifier of randomized smoothing, trained under Gaussian noise at sigma."""
        reg = cfg.regularize or ctx.regularize
        loss = NoiseCE(cfg.sigma, ctx.seed, make_transform(ctx.augment, ctx.seed), reg.label_smoothing)
        result = build_and_fit(
            train,
            val,
            ctx,
            cfg,
            loss,
            probe=noise_probe(val, cfg.sigma, ctx.seed, ctx.device),
            select="val_noise_acc",
        )
        result.extras["train/val_noise_acc"] = result.history[result.best_epoch - 1]["val_noise_acc"]
        return result

    def scorecard_parts(self, cfg: SmoothingConfig) -> dict[str, ScorePart]:
        def certify(card: Scorecard, model: nn.Module, test: Dataset, seed: int, device: str) -> None:
            c = card.certificates = certify_test(model, test, cfg, seed, device)
            card.metrics |= c.metrics()
            answered = (
                c.predict != ABSTAIN
            )  # smoothed/acc counts abstentions as errors, as certification does
            if answered.any():
                card.metrics["smoothed/acc_answered"] = float((c.predict[answered] == c.y[answered]).mean())

        return {"certify": certify}

    def randomized(
        self, model: nn.Module, cfg: SmoothingConfig, num_classes: int, draws: int, seed: int
    ) -> Randomized:
        """Attacked through an EoT of the base classifier under its noise (the smoothed soft
        classifier, as Salman et al., 2019 attack it) and judged by the served PREDICT, whose
        abstentions count as errors; the base network without noise is reported beside it."""
        device = next((str(q.device) for q in model.parameters()), "cpu")  # where the model lives
        smooth = Smoothed(model, num_classes, cfg.sigma, cfg.batch_size, device)
        n = min(cfg.n, SERVED_SAMPLES)

        def served(x: torch.Tensor) -> torch.Tensor:
            gen = torch.Generator().manual_seed(seed)  # the same draws for the clean and the attacked image
            return torch.from_numpy(smooth.predict(x.cpu(), n, cfg.alpha, gen))

        return Randomized(EoT(Noisy(model, cfg.sigma, seed), draws), served, draws, base=model)

    def quick(self, cfg: SmoothingConfig) -> SmoothingConfig:
        return cfg.model_copy(update={"n0": 4, "n": 16, "max_samples": None})

    def serving(self, cfg: SmoothingConfig) -> dict[str, Any]:
        return {"sigma": cfg.sigma, "n": min(cfg.n, SERVED_SAMPLES), "alpha": cfg.alpha}

    def answer(
        self, model: nn.Module, x: np.ndarray, settings: dict[str, Any], num_classes: int, seed: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """PREDICT of the smoothed classifier (-1: abstain), and the share of noise samples that
        voted for the top class as its confidence."""
        smooth = Smoothed(model, num_classes, settings["sigma"])
        gen = torch.Generator().manual_seed(seed)
        pred = smooth.predict(torch.from_numpy(x), settings["n"], settings["alpha"], gen)
        counts = sample_counts(model, torch.from_numpy(x), settings["n"], settings["sigma"], num_classes, gen)
        return pred, counts.max(1) / max(1, settings["n"])
