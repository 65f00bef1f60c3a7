"""The one adapter around MLflow: tracking URI, runs, metrics, figures, models, registry.

Runs are addressed by id through ``MlflowClient`` rather than MLflow's fluent active-run stack,
because Prefect may run tasks in worker threads and the fluent stack is per thread.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from matplotlib.figure import Figure
from mlflow.entities import Metric, Param, RunStatus
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from robustops.config import MlflowConfig

DEFAULT_URI = "sqlite:///mlflow.db"
PARENT_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"  # the run's Description in the MLflow UI (markdown)
# Opens the experiment in the UI's model-training view instead of its GenAI view.
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"


def tracking_uri(cfg: MlflowConfig) -> str:
    """Config first, then ``$MLFLOW_TRACKING_URI``, then the local sqlite store."""
    return cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def _is_local(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def client(cfg: MlflowConfig) -> MlflowClient:
    uri = tracking_uri(cfg)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri)


def experiment_id(cfg: MlflowConfig) -> str:
    """The configured experiment; new ones keep artifacts under ``artifact_root`` when local."""
    c = client(cfg)
    exp = c.get_experiment_by_name(cfg.experiment)
    if exp is not None:
        return exp.experiment_id
    location = None
    if _is_local(tracking_uri(cfg)):
        location = Path(cfg.artifact_root).resolve().as_uri()
    return c.create_experiment(cfg.experiment, artifact_location=location, tags={KIND_TAG: KIND})


def start_run(
    cfg: MlflowConfig, name: str, parent_id: str | None = None, tags: dict[str, str] | None = None
) -> str:
    tags = {
        "mlflow.source.name": "robustops: Prefect flow robustness-pipeline",
        "mlflow.source.type": "JOB",
    } | (tags or {})
    if parent_id:
        tags[PARENT_TAG] = parent_id
    run = client(cfg).create_run(experiment_id(cfg), run_name=name, tags=tags)
    return run.info.run_id


def end_run(cfg: MlflowConfig, run_id: str, ok: bool) -> None:
    status = RunStatus.to_string(RunStatus.FINISHED if ok else RunStatus.FAILED)
    client(cfg).set_terminated(run_id, status)


def log_params(cfg: MlflowConfig, run_id: str, params: dict[str, Any]) -> None:
    batch = [Param(k, str(v)[:6000]) for k, v in params.items()]
    c = client(cfg)
    for i in range(0, len(batch), 100):  # MLflow takes at most 100 params per batch
        c.log_batch(run_id, params=batch[i : i + 100])


def log_metrics(cfg: MlflowConfig, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    import time

    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if np.isfinite(v)]
    c = client(cfg)
    for i in range(0, len(batch), 1000):
        c.log_batch(run_id, metrics=batch[i : i + 1000])


def log_history(cfg: MlflowConfig, run_id: str, history: list[dict[str, float]]) -> None:
    """Per-epoch curves: ``train/loss``, ``train/acc``, ``val/acc``, ``val/loss`` by epoch."""
    import time

    now = int(time.time() * 1000)
    names = {
        "loss": "train/loss",
        "train_acc": "train/acc",
        "val_acc": "val/acc",
        "val_loss": "val/loss",
        "lr": "train/lr",
    }
    batch = [
        Metric(names[k], float(v), now, int(row["epoch"]))
        for row in history
        for k, v in row.items()
        if k in names
    ]
    c = client(cfg)
    for i in range(0, len(batch), 1000):
        c.log_batch(run_id, metrics=batch[i : i + 1000])


def set_tag(cfg: MlflowConfig, run_id: str, key: str, value: str) -> None:
    client(cfg).set_tag(run_id, key, value[:5000])


def set_note(cfg: MlflowConfig, run_id: str, markdown: str) -> None:
    client(cfg).set_tag(run_id, NOTE_TAG, markdown)


def log_text(cfg: MlflowConfig, run_id: str, text: str, path: str) -> None:
    client(cfg).log_text(run_id, text, path)


def log_json(cfg: MlflowConfig, run_id: str, obj: Any, path: str) -> None:
    client(cfg).log_text(run_id, json.dumps(obj, indent=2, default=str), path)


def log_file(cfg: MlflowConfig, run_id: str, path: Path, artifact_dir: str) -> None:
    client(cfg).log_artifact(run_id, str(path), artifact_dir)


def log_figure(cfg: MlflowConfig, run_id: str, fig: Figure, path: str) -> None:
    import matplotlib.pyplot as plt

    client(cfg).log_figure(run_id, fig, path)
    plt.close(fig)


def log_torch_model(cfg: MlflowConfig, run_id: str, model: torch.nn.Module, example: np.ndarray) -> str:
    """Logs the model in MLflow's pt2 format with a signature; returns its ``models:/`` URI.

    pt2 (torch.export) stores a graph, not a pickle, so loading it runs no arbitrary code. The
    example must hold more than one image so the batch dimension is exported as dynamic.
    """
    model = model.cpu().eval()
    example = np.ascontiguousarray(example[: max(2, min(4, len(example)))], dtype=np.float32)
    with torch.no_grad():
        out = model(torch.from_numpy(example)).numpy()
    signature = infer_signature(example, out)
    client(cfg)  # sets the tracking URI for the fluent call below
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(
            model,
            name="model",
            input_example=example,
            signature=signature,
            serialization_format="pt2",
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}"],
        )
    return info.model_uri


def register(cfg: MlflowConfig, model_uri: str, run_id: str, tags: dict[str, str]) -> str:
    """Registers a fully logged model under ``cfg.registered_model``; returns the version."""
    c = client(cfg)
    try:
        c.get_registered_model(cfg.registered_model)
    except mlflow.exceptions.MlflowException:
        c.create_registered_model(
            cfg.registered_model, description="Image classifier trained and scored by robustops."
        )
    mv = c.create_model_version(cfg.registered_model, model_uri, run_id=run_id, tags=tags)
    return mv.version


def ui_command(cfg: MlflowConfig) -> str:
    uri = tracking_uri(cfg)
    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    return f"mlflow ui --backend-store-uri {uri} --port 5000   # then open http://127.0.0.1:5000"


def alias_version(cfg: MlflowConfig, alias: str) -> Any | None:
    """The model version the alias points at, or None when the model or the alias does not exist."""
    c = client(cfg)
    try:
        return c.get_model_version_by_alias(cfg.registered_model, alias)
    except mlflow.exceptions.MlflowException:
        return None


def run_metrics(cfg: MlflowConfig, run_id: str) -> dict[str, float]:
    return dict(client(cfg).get_run(run_id).data.metrics)


def set_alias(cfg: MlflowConfig, alias: str, version: str, expected: str | None) -> None:
    """Points the alias at ``version`` if it still points at ``expected`` (None: unset).

    A compare-and-set in two calls, not atomic: it catches a champion changed while this run
    was deciding, so the decision is never made against a stale champion.
    """
    current = alias_version(cfg, alias)
    now = current.version if current is not None else None
    if now != expected:
        raise RuntimeError(
            f"alias {alias!r} of {cfg.registered_model} moved to version {now} while this run was deciding "
            f"(it was {expected}); nothing promoted: rerun to decide against the new champion"
        )
    client(cfg).set_registered_model_alias(cfg.registered_model, alias, version)


def set_version_tag(cfg: MlflowConfig, version: str, key: str, value: str) -> None:
    client(cfg).set_model_version_tag(cfg.registered_model, version, key, value)


def resolve_model(cfg: MlflowConfig, uri: str) -> Any:
    """The model version a ``models:/NAME@alias`` or ``models:/NAME/VERSION`` URI names.

    Raises:
        ModelNotFoundError: a malformed URI, or no such model, version or alias.
    """
    from robustops.errors import ModelNotFoundError

    m = re.fullmatch(r"models:/([^/@]+)(?:@([\w\-]+)|/(\d+))", uri.strip())
    if not m:
        raise ModelNotFoundError(
            f"model URI {uri!r} is not models:/NAME@ALIAS or models:/NAME/VERSION, e.g. models:/robustops-digits@champion"
        )
    name, alias, version = m.groups()
    c = client(cfg)
    try:
        return c.get_model_version_by_alias(name, alias) if alias else c.get_model_version(name, version)
    except mlflow.exceptions.MlflowException:
        what = f"alias @{alias}" if alias else f"version {version}"
        if _exists(c, name):
            known = sorted(int(mv.version) for mv in c.search_model_versions(f"name='{name}'"))
            aliases = sorted(c.get_registered_model(name).aliases)
            hint = f"{name} has versions {', '.join(map(str, known)) or 'none'}"
            hint += f" and aliases {', '.join('@' + a for a in aliases)}" if aliases else " and no aliases"
        else:
            hint = f"no registered model {name!r}"
        raise ModelNotFoundError(f"{uri}: no {what} ({hint}) in {tracking_uri(cfg)}") from None


def _exists(c: MlflowClient, name: str) -> bool:
    try:
        c.get_registered_model(name)
        return True
    except mlflow.exceptions.MlflowException:
        return False


def download(cfg: MlflowConfig, run_id: str, path: str, dst: str) -> str:
    return client(cfg).download_artifacts(run_id, path, dst)


def run_info(cfg: MlflowConfig, run_id: str) -> Any:
    return client(cfg).get_run(run_id)
