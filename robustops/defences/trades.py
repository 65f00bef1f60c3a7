"""TRADES (Zhang et al., 2019): clean cross-entropy plus beta * KL(clean || adversarial)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from robustops.defences.adversarial import AdversarialDefence, IterativeConfig, iterative_pgd
from robustops.defences.base import Context, register
from robustops.training.adversarial import AdversarialObjective


class TRADESConfig(IterativeConfig):
    """TRADES (Zhang et al., 2019): clean cross-entropy plus beta * KL(clean || adversarial)."""

    name: Literal["trades"] = "trades"
    beta: float = Field(6.0, ge=0, description="weight of the robust KL term")


@register
class TRADES(AdversarialDefence):
    name, settings = "trades", TRADESConfig

    def objective(self, cfg: TRADESConfig, ctx: Context) -> AdversarialObjective:
        # The inner attack maximises the same KL term the outer step minimises.
        return AdversarialObjective(
            cfg.eps, iterative_pgd(cfg, "kl"), kl_beta=cfg.beta, **self.common(cfg, ctx)
        )
