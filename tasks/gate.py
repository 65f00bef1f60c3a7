"""The promotion gate and the run's report: decide, move the alias, log the HTML scorecard.

Promotion is one critical section: read the champion, decide against it, re-read the alias and
move it only if it still points at the champion the decision was made against (compare-and-set),
all under a lock that every robustops process promoting into the same registry takes. So two
runs that finish at once (two drift alerts, a retrain beside a pipeline) never both promote: the
second decides against the first one's champion, and the champion is always a version that passed
the gate and beat every champion before it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import re
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from prefect import task

from adapters import tracking
from adapters.log import logger
from adapters.retries import RETRY
from robustops.config import Config, MlflowConfig
from robustops.errors import PromotionConflict, RobustopsError
from robustops.evaluation import Scorecard
from robustops.evaluation.gate import Candidate, Champion, DataSignature, Decision, decide
from robustops.evaluation.html import report_meta, scorecard_report
from robustops.evaluation.scorecard import small_test_note
from tasks.record import (
    DIGEST_TAG,
    FINGERPRINT_TAG,
    GATE_NOTE,
    OUTCOMES,
    describe_version,
    outcomes_of,
    version_description,
)

LOCK_TIMEOUT = 120.0  # seconds to wait for another promotion into the same registry
PROMOTED_FROM = "robustops.promoted_from"  # version tag: the champion it replaced ("none": first)


def lock_path(m: MlflowConfig) -> Path:
    """The host-local lock file for promotions into the registry of ``m``'s tracking store."""
    uri = tracking.tracking_uri(m)
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///").split("?")[0]).resolve()
        return db.with_name(db.name + ".promote.lock")  # beside the store: every writer sees it
    if uri.startswith("file:") or "://" not in uri:
        folder = Path(uri.removeprefix("file://").removeprefix("file:")).resolve()
        return folder / ".robustops-promote.lock"
    digest = hashlib.sha256(f"{uri}|{m.registered_model}".encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"robustops-promote-{digest}.lock"


@contextlib.contextmanager
def file_lock(path: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """An exclusive ``flock`` on ``path``: excludes other processes and other threads alike (each
    acquisition opens its own file description), and the kernel releases it when the holder
    dies, SIGKILL included, so a crashed run never leaves a stale lock behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise PromotionConflict(
                        f"another promotion has held {path} for over {timeout:.0f} s; nothing promoted: "
                        "rerun when it has finished"
                    ) from None
                time.sleep(0.02)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def prefect_lock(name: str, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """One slot of a Prefect global concurrency limit of 1, created on first use. The slot is a
    lease on the server: if its holder dies, the lease expires and the next promotion goes on."""
    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency

    with get_client(sync_client=True) as c:
        c.upsert_global_concurrency_limit_by_name(name, 1)
    try:
        with concurrency(name, occupy=1, timeout_seconds=timeout, strict=True):
            yield
    except TimeoutError:
        raise PromotionConflict(
            f"another promotion has held the Prefect concurrency limit {name} for over {timeout:.0f} s; "
            "nothing promoted: rerun when it has finished"
        ) from None


def _shared_prefect_server() -> bool:
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


@contextlib.contextmanager
def promotion_lock(m: MlflowConfig, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """The lock that makes read-decide-set one step among robustops runs. Which lock, and why:

    - A local store (sqlite, file): every process that writes it runs on this host (sqlite over a
      network share is not supported), so a ``flock`` beside the store excludes all of them.
    - A remote store (MLflow server, database): runs may sit on other hosts, where a file lock is
      blind. The host-local file lock is taken first (runs on one host queue without a network
      round trip), then, when a Prefect server is configured (``PREFECT_API_URL``: the server
      every served deployment talks to), a global concurrency limit of 1 named after the
      registered model. Without one, a temporary Prefect server belongs to a single process and
      would exclude nothing, so only the host-local lock and the alias compare-and-set remain.
    """
    with file_lock(lock_path(m), timeout):
        uri = tracking.tracking_uri(m)
        if tracking.is_local(uri) or not _shared_prefect_server():
            yield
            return
        name = "robustops-promote-" + re.sub(r"[^A-Za-z0-9_.-]", "-", m.registered_model)
        with prefect_lock(name, timeout):
            yield


def _signature(tags: dict[str, str]) -> DataSignature | None:
    """The data a version was trained on, from its tags (``tasks.record.data_tags``)."""
    try:
        shape = tuple(int(v) for v in tags["data.shape"].split("x"))
        n = int(tags["data.classes"].split(":", 1)[0])
    except (KeyError, ValueError):
        return None
    text = tags["data.classes"].split(":", 1)[1].strip()
    return DataSignature(shape, n, tags.get(DIGEST_TAG), text, tags.get("data.source", ""))


def _logged_data(m: MlflowConfig, run_id: str) -> DataSignature | None:
    """A version registered before robustops tagged its data: the shape and class count its
    pipeline run logged as params (``data.shape``, ``data.num_classes``), if any."""
    import json

    c = tracking.client(m)
    parent = c.get_run(run_id).data.tags.get(tracking.PARENT_TAG)
    params = c.get_run(parent).data.params if parent else {}
    try:
        return DataSignature(tuple(json.loads(params["data.shape"])), int(params["data.num_classes"]))
    except (KeyError, ValueError, TypeError):
        return None


def _run_data(m: MlflowConfig, versions: dict[str, str]) -> tuple[DataSignature | None, str | None]:
    """The data this run's models were trained on and the fingerprint of the test images their
    per-image outcomes are on, from the tags ``register_model`` gave their versions (every model
    of a run shares both)."""
    c = tracking.client(m)
    for version in versions.values():
        tags = c.get_model_version(m.registered_model, version).tags
        data = _signature(tags)
        if data is not None:
            return data, tags.get(FINGERPRINT_TAG)
    return None, None


def _champion(m: MlflowConfig, current: Any, label: str, primary: str, fingerprint: str | None) -> Champion:
    """The champion as the gate compares against it: its metrics, its data, and its per-image
    outcomes on ``primary`` when they are on the same test images as this run's."""
    tags = dict(current.tags)
    champion = Champion(
        tracking.scorecard_metrics(m, current.run_id),
        label,
        _signature(tags) or _logged_data(m, current.run_id),
    )
    theirs = tags.get(FINGERPRINT_TAG)
    if theirs is None:
        champion.unpaired = f"{label} has no per-image outcomes on {primary} recorded"
    elif fingerprint is None:
        champion.unpaired = f"this run's models have no per-image outcomes on {primary} recorded"
    elif theirs != fingerprint:
        champion.unpaired = f"{label} was scored on other test images"
    else:
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = tracking.download(m, current.run_id, OUTCOMES, tmp)
                with np.load(path, allow_pickle=False) as f:
                    metric, correct = str(f["metric"]), f["correct"].astype(bool)
        except RobustopsError:  # the store is down: fail the gate rather than decide half-informed
            raise
        except Exception as e:  # noqa: BLE001 - deleted or damaged: the margin decides, and says why
            champion.unpaired = f"{label}'s per-image outcomes could not be read ({type(e).__name__})"
            return champion
        if metric != primary:
            champion.unpaired = f"{label}'s per-image outcomes are on {metric}, not {primary}"
        else:
            champion.outcomes = correct
    return champion


def _gate_note(decision: Decision, name: str, reasons: list[str], alias: str) -> str:
    """The first paragraph of a version's Description: what the gate said about it."""
    if reasons:
        mine = "failed: " + "; ".join(reasons)
    elif name == decision.challenger:
        mine = f"the challenger, {'promoted to @' + alias if decision.promote else 'not promoted'}"
    else:
        mine = f"passed; {decision.challenger} scored higher on the primary"
    return f"{GATE_NOTE} {mine}. The run's decision: {decision.summary}"


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
            data, fingerprint = _run_data(m, versions)
            champion = _champion(m, current, label, g.primary, fingerprint) if current is not None else None
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
            tracking.set_version_tag(m, new, PROMOTED_FROM, before or "none")
            tracking.set_version_tag(m, new, "robustops.promoted_at", datetime.now(UTC).isoformat())
            tracking.set_version_tag(m, new, "robustops.promoted_by", parent_id)
            try:  # compare-and-set against the champion the decision was made against
                tracking.set_alias(m, g.alias, new, before)
            except PromotionConflict:  # moved by someone outside the lock (the UI, a script)
                for key in (PROMOTED_FROM, "robustops.promoted_at", "robustops.promoted_by"):
                    tracking.delete_version_tag(m, new, key)
                raise
            decision.summary += f" ({m.registered_model} version {new} is now @{g.alias})"
    for name, version in versions.items():
        old = version_description(m, version)
        if old.startswith(GATE_NOTE):  # a retried task: the verdict is replaced, not stacked
            old = old.partition("\n\n")[2]
        note = _gate_note(decision, name, decision.failures.get(name, []), g.alias)
        describe_version(m, version, f"{note}\n\n{old}" if old else note)
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
