"""The promotion gate and the run's report: decide, move the alias, log the HTML scorecard."""

from __future__ import annotations

from prefect import task

from robustops.config import Config
from robustops.evaluation import Scorecard
from robustops.evaluation.gate import Candidate, Decision, decide
from robustops.evaluation.html import png, render
from robustops.evaluation.plots import scorecard_figures
from tasks import tracking
from tasks.log import logger
from tasks.record import RETRY, scorecard_json


@task(name="promotion-gate", **RETRY)
def promote(cfg: Config, parent_id: str, cards: dict[str, Scorecard], versions: dict[str, str]) -> Decision:
    """Decides on the run's models against the current champion; moves the alias only on a win.

    Every version gets a ``gate`` tag (passed or failed) and the decision goes to the parent run
    (``gate/decision.json``, tag ``robustops.gate``, metric ``gate/promoted``).
    """
    m, g = cfg.mlflow, cfg.gate
    current = tracking.alias_version(m, g.alias)
    champion = tracking.run_metrics(m, current.run_id) if current is not None else None
    label = f"{g.alias} (version {current.version})" if current is not None else g.alias
    candidates = [
        Candidate(n, c.metrics, c.masking_passed, {s.name: s.passed for s in c.spec})
        for n, c in cards.items()
    ]
    decision = decide(candidates, champion, g, label)
    for name, version in versions.items():
        reasons = decision.failures.get(name, [])
        tracking.set_version_tag(m, version, "gate", "failed: " + "; ".join(reasons) if reasons else "passed")
    if decision.promote and decision.challenger in versions:
        new = versions[decision.challenger]
        tracking.set_alias(m, g.alias, new, current.version if current is not None else None)
        decision.summary += f" ({m.registered_model} version {new} is now @{g.alias})"
    tracking.log_json(m, parent_id, decision.as_dict(), "gate/decision.json")
    tracking.set_tag(m, parent_id, "robustops.gate", decision.summary)
    tracking.log_metrics(m, parent_id, {"gate/promoted": float(decision.promote)})
    logger().info("gate: %s", decision.summary)
    return decision


@task(name="log-report", **RETRY)
def log_report(cfg: Config, parent_id: str, cards: dict[str, Scorecard], decision: Decision | None) -> None:
    """The self-contained HTML scorecard and ``report/scorecard.json``, on the parent run."""
    plots = {
        name: {path.removeprefix("plots/").removesuffix(".png").replace("_", " "): png(fig)
               for path, fig in scorecard_figures(card, name).items()}
        for name, card in cards.items()
    }  # fmt: skip
    meta = {
        "data": cfg.data.source.value,
        "test images": str(next(iter(cards.values())).n_test),
        "seed": str(cfg.seed),
    }
    page = render(
        "robustops scorecard",
        {n: c.metrics for n, c in cards.items()},
        {n: [x.as_dict() for x in c.masking] for n, c in cards.items()},
        {n: [x.as_dict() for x in c.spec] for n, c in cards.items()},
        plots,
        decision,
        meta,
    )
    tracking.log_text(cfg.mlflow, parent_id, page, "report/scorecard.html")
    doc = {
        "models": {n: scorecard_json(c) for n, c in cards.items()},
        "gate": decision.as_dict() if decision else None,
    }
    tracking.log_json(cfg.mlflow, parent_id, doc, "report/scorecard.json")
