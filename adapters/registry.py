"""The model registry beyond what ``tracking`` wraps: a version's Description, the champion as the
gate compares against it (its scores, its data, its per-image outcomes) and the data a run's
versions were trained on."""

from __future__ import annotations

import tempfile
from typing import Any

import numpy as np

from adapters import tracking
from robustops.config import MlflowConfig
from robustops.errors import RobustopsError
from robustops.evaluation.gate import Champion, DataSignature
from robustops.evaluation.version_tags import FINGERPRINT_TAG, OUTCOMES, signature

MAX_DESCRIPTION = 5000  # a version's description column on a database store (VARCHAR(5000))


def describe_version(m: MlflowConfig, version: str, text: str) -> None:
    """Sets a version's Description (markdown in the MLflow UI)."""
    if len(text) > MAX_DESCRIPTION:
        text = text[: MAX_DESCRIPTION - 3] + "..."
    with tracking.translated(m):
        tracking.client(m).update_model_version(m.registered_model, version, description=text)


def version_description(m: MlflowConfig, version: str) -> str:
    with tracking.translated(m):
        return tracking.client(m).get_model_version(m.registered_model, version).description or ""


PROMOTED_FROM = "robustops.promoted_from"  # version tag: the champion it replaced ("none": first)


def logged_data(m: MlflowConfig, run_id: str) -> DataSignature | None:
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


def run_data(m: MlflowConfig, versions: dict[str, str]) -> tuple[DataSignature | None, str | None]:
    """The data this run's models were trained on and the fingerprint of the test images their
    per-image outcomes are on, from the tags ``register_model`` gave their versions (every model
    of a run shares both)."""
    c = tracking.client(m)
    for version in versions.values():
        tags = c.get_model_version(m.registered_model, version).tags
        data = signature(tags)
        if data is not None:
            return data, tags.get(FINGERPRINT_TAG)
    return None, None


def champion(m: MlflowConfig, current: Any, label: str, primary: str, fingerprint: str | None) -> Champion:
    """The champion as the gate compares against it: its metrics, its data, and its per-image
    outcomes on ``primary`` when they are on the same test images as this run's."""
    tags = dict(current.tags)
    champion = Champion(
        tracking.scorecard_metrics(m, current.run_id),
        label,
        signature(tags) or logged_data(m, current.run_id),
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
