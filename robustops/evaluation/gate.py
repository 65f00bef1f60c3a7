"""The promotion gate: which model, if any, may replace the champion. Pure: the registry I/O is
in ``tasks/gate.py``.

1. Each model passes or fails the gate: every ``min`` and ``max`` threshold, the gradient-masking
   checks (a masked model's adversarial score is not trusted) and the required specification
   checks. Every failure is a reason.
2. The passing model with the best ``primary`` score is the challenger.
3. It is promoted when there is no champion, or when it beats the champion on ``primary`` and no
   gated metric is worse than the champion's by more than ``tolerance``. Otherwise the champion
   stays, and the decision says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from robustops.config import GateConfig


@dataclass
class Candidate:
    name: str
    metrics: dict[str, float]
    masking_passed: bool
    spec: dict[str, bool]  # check name -> passed


@dataclass
class Decision:
    promote: bool
    challenger: str | None
    summary: str
    failures: dict[str, list[str]] = field(default_factory=dict)  # model -> why it failed the gate
    comparison: list[str] = field(default_factory=list)  # challenger vs champion, metric by metric

    def as_dict(self) -> dict[str, Any]:
        return {
            "promote": self.promote,
            "challenger": self.challenger,
            "summary": self.summary,
            "failures": self.failures,
            "comparison": self.comparison,
        }


def gate_failures(c: Candidate, cfg: GateConfig) -> list[str]:
    """Why ``c`` fails the gate (empty: it passes)."""
    out = []
    for key, lo in cfg.min.items():
        v = c.metrics.get(key)
        if v is None:
            out.append(f"{key} missing from the scorecard (check gate.min against the metric names)")
        elif v < lo:
            out.append(f"{key} {v:.4f} < {lo:g}")
    for key, hi in cfg.max.items():
        v = c.metrics.get(key)
        if v is None:
            out.append(f"{key} missing from the scorecard (check gate.max against the metric names)")
        elif v > hi:
            out.append(f"{key} {v:.4f} > {hi:g}")
    if cfg.require_masking and not c.masking_passed:
        out.append("failed a gradient-masking check: its adversarial score is not trusted")
    for check in cfg.spec_checks:
        if check in c.spec and not c.spec[check]:
            out.append(f"failed specification check {check}")
    if cfg.primary not in c.metrics:
        out.append(f"primary score {cfg.primary} missing from the scorecard")
    return out


def decide(
    candidates: list[Candidate],
    champion: dict[str, float] | None,
    cfg: GateConfig,
    champion_name: str = "champion",
) -> Decision:
    """The gate's decision for one pipeline run.

    Args:
        candidates: every model of the run.
        champion: the current champion's metrics, or None when the alias is not set.
        cfg: thresholds, primary score and tolerance.
        champion_name: how the summary names the champion (e.g. "version 3").
    """
    failures = {c.name: gate_failures(c, cfg) for c in candidates}
    passing = [c for c in candidates if not failures[c.name]]
    if not passing:
        return Decision(False, None, f"no model passed the gate; {champion_name} unchanged", failures)
    best = max(passing, key=lambda c: (c.metrics[cfg.primary], c.metrics.get("clean/acc", 0.0)))
    if champion is None:
        return Decision(
            True, best.name, f"{best.name} passed the gate and there is no champion yet: promoted", failures
        )
    comparison, regressions = [], []
    p_new, p_old = best.metrics[cfg.primary], champion.get(cfg.primary)
    if p_old is None:
        comparison.append(f"{cfg.primary}: champion has no value; challenger {p_new:.4f}")
    else:
        comparison.append(f"{cfg.primary}: challenger {p_new:.4f} vs champion {p_old:.4f}")
    for key, higher_is_better in [(k, True) for k in cfg.min] + [(k, False) for k in cfg.max]:
        if key == cfg.primary or key not in champion:
            continue
        new, old = best.metrics[key], champion[key]
        worse = old - new if higher_is_better else new - old
        comparison.append(f"{key}: challenger {new:.4f} vs champion {old:.4f}")
        if worse > cfg.tolerance:
            regressions.append(f"{key} regresses by {worse:.4f} (> tolerance {cfg.tolerance:g})")
    if p_old is not None and p_new <= p_old:
        return Decision(
            False, best.name, f"{best.name} passed the gate but does not beat {champion_name} on {cfg.primary} "
            f"({p_new:.4f} <= {p_old:.4f}); {champion_name} unchanged", failures, comparison,
        )  # fmt: skip
    if regressions:
        return Decision(
            False, best.name, f"{best.name} beats {champion_name} on {cfg.primary} but " + "; ".join(regressions)
            + f"; {champion_name} unchanged", failures, comparison,
        )  # fmt: skip
    return Decision(
        True,
        best.name,
        f"{best.name} beats {champion_name} on {cfg.primary} without regressions: promoted",
        failures,
        comparison,
    )
