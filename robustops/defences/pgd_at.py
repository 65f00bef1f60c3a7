"""PGD adversarial training (Madry et al., 2018)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from robustops.defences.adversarial import AdversarialDefence, IterativeConfig, iterative_pgd
from robustops.defences.base import Context, register
from robustops.training.adversarial import AdversarialObjective


class PGDATConfig(IterativeConfig):
    """PGD adversarial training (Madry et al., 2018)."""

    name: Literal["pgd_at"] = "pgd_at"
    clean_weight: float = Field(
        0.0, ge=0, le=1, description="mixed batches: loss = w * clean CE + (1 - w) * adversarial CE"
    )


@register
class PGDAT(AdversarialDefence):
    name, settings = "pgd_at", PGDATConfig

    def objective(self, cfg: PGDATConfig, ctx: Context) -> AdversarialObjective:
        return AdversarialObjective(
            cfg.eps, iterative_pgd(cfg), clean_weight=cfg.clean_weight, **self.common(cfg, ctx)
        )
