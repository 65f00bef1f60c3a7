"""The promotion gate and the run's report: decide, move the alias, log the HTML scorecard.

Promotion is one critical section: read the champion, decide against it, re-read the alias and
move it only if it still points at the champion the decision was made against (compare-and-set),
all under a lock that every robustops process promoting into the same registry takes
(``adapters.locks``). So two runs that finish at once (two drift alerts, a retrain beside a
pipeline) never both promote: the second decides against the first one's champion, and the
champion is always a version that passed the gate and beat every champion before it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import task

from adapters import registry, tracking
from adapters.locks import promotion_lock
from adapters.log import logger
from adapters.retries import RETRY
from robustops.config import Config
from robustops.errors import PromotionConflict
from robustops.evaluation import Scorecard
from robustops.evaluation.gate import Candidate, Decision, decide
from robustops.evaluation.html import report_meta, scorecard_report
from robustops.evaluation.notes import GATE_NOTE, gate_note
from robustops.evaluation.scorecard import small_test_note
from robustops.evaluation.version_tags import outcomes_of


@task(name="promotion-gate", **RETRY)
def promote(cfg: Config, parent_id: str, cards: dict[str, Scorecard], versions: dict[str, str]) -> Decision:
    """Decides on the run's models against the current champion; moves the alias only on a win.

    The challenger must have been trained on data of the champion's shape and classes (read from
    the versions' ``data.*`` tags) and beat it by more than noise: a paired McNemar test when
    both per-image outcome vectors are on the same test images, else ``gate.margin``.

    Every version gets a ``gate`` tag (passed or failed) and a Description that starts with the
    gate's verdict, and the decision goes to the parent run (``gate/decision.json``, tag
    ``robustops.gate``, metric ``gate/promoted``). A promoted version is tagged
    ``robustops.promoted_from`` (the champion it replaced), ``robustops.promoted_at`` and
    ``robustops.promoted_by`` (this run): the alias history, one link per promotion.
    """
    m, g = cfg.mlflow, cfg.gate
    candidates = [
        Candidate(
            n, c.metrics, c.masking_passed, {s.name: s.passed for s in c.specification}, outcomes_of(c, cfg)
        )
        for n, c in cards.items()
    ]
    with promotion_lock(m):
        # Read the champion inside the lock: no other robustops promotion can move it until this
        # decision has landed or been dropped.
        current = tracking.alias_version(m, g.alias)
        label = f"{g.alias} (version {current.version})" if current is not None else g.alias
        with tracking.translated(m):
            data, fingerprint = registry.run_data(m, versions)
            champion = (
                registry.champion(m, current, label, g.primary, fingerprint) if current is not None else None
            )
        decision = decide(candidates, champion, g, label, data)
        for name, version in versions.items():
            reasons = decision.failures.get(name, [])
            tracking.set_version_tag(
                m, version, "gate", "failed: " + "; ".join(reasons) if reasons else "passed"
            )
        if decision.promote and decision.challenger in versions:
            new = versions[decision.challenger]
            before = str(current.version) if current is not None else None
            # The history link goes first: a version that holds the alias always says whom it replaced.
            tracking.set_version_tag(m, new, registry.PROMOTED_FROM, before or "none")
            tracking.set_version_tag(m, new, "robustops.promoted_at", datetime.now(UTC).isoformat())
            tracking.set_version_tag(m, new, "robustops.promoted_by", parent_id)
            try:  # compare-and-set against the champion the decision was made against
                tracking.set_alias(m, g.alias, new, before)
            except PromotionConflict:  # moved by someone outside the lock (the UI, a script)
                for key in (registry.PROMOTED_FROM, "robustops.promoted_at", "robustops.promoted_by"):
                    tracking.delete_version_tag(m, new, key)
                raise
            decision.summary += f" ({m.registered_model} version {new} is now @{g.alias})"
    for name, version in versions.items():
        old = registry.version_description(m, version)
        if old.startswith(GATE_NOTE):  # a retried task: the verdict is replaced, not stacked
            old = old.partition("\n\n")[2]
        note = gate_note(decision, name, decision.failures.get(name, []), g.alias)
        registry.describe_version(m, version, f"{note}\n\n{old}" if old else note)
    tracking.log_json(m, parent_id, decision.as_dict(), "gate/decision.json")
    tracking.set_tag(m, parent_id, "robustops.gate", decision.summary)
    tracking.log_metrics(m, parent_id, {"gate/promoted": float(decision.promote)})
    logger().info("gate: %s", decision.summary)
    return decision


@task(name="log-report", **RETRY)
def log_report(cfg: Config, parent_id: str, cards: dict[str, Scorecard], decision: Decision | None) -> None:
    """The self-contained HTML scorecard and ``report/scorecard.json``, on the parent run."""
    first = next(iter(cards.values()))
    note = small_test_note(first.n_test)
    if note:
        logger().warning("%s", note)
    page, doc = scorecard_report(cards, decision, report_meta(cfg, first), cfg.gate)
    tracking.log_text(cfg.mlflow, parent_id, page, "report/scorecard.html")
    tracking.log_json(cfg.mlflow, parent_id, doc, "report/scorecard.json")
