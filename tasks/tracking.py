"""The one adapter around MLflow: tracking URI, runs, metrics, figures, models, registry.

Runs are addressed by id through ``MlflowClient`` rather than MLflow's fluent active-run stack,
because Prefect may run tasks in worker threads and the fluent stack is per thread.

Faults: MLflow retries each HTTP request itself, with backoff; ``client`` bounds those retries (a
dead server fails in about 15-20 s per call, not MLflow's default of about 4 minutes) unless the
``MLFLOW_HTTP_REQUEST_*`` variables say otherwise. Every adapter call turns the final failure into
a robustops error that names the tracking URI or the artifact folder and the fix:
``TrackingUnavailable`` (server gone, store unusable) or ``ArtifactStoreError`` (folder read-only,
not a folder, disk full). Other errors pass through unchanged.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import mlflow
import numpy as np
import torch
from matplotlib.figure import Figure
from mlflow.entities import Metric, Param, RunStatus
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from robustops import names
from robustops.config import MlflowConfig
from robustops.errors import ArtifactStoreError, RobustopsError, TrackingUnavailable

DEFAULT_URI = "sqlite:///mlflow.db"
PARENT_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"  # the run's Description in the MLflow UI (markdown)
# Opens the experiment in the UI's model-training view instead of its GenAI view.
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"


# MLflow's own HTTP retries (urllib3, on connection errors and 408/429/5xx): it waits 0, 2, 4 and
# 8 s (backoff factor 1, plus up to 1 s of jitter each) before giving up, and a request that
# hangs times out after 30 s. A restarting server is back within that window; a dead one fails
# in about 15-20 s per call instead of MLflow's default of 7 retries at factor 2 (about 4 min).
HTTP_RETRIES = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
# Write failures of a local artifact folder (or a full disk): retrying does not help.
_WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR,
                 errno.EEXIST, errno.EFBIG, errno.EISDIR}  # fmt: skip
# A local sqlite store that cannot be written or opened (disk full, read-only, gone).
_SQLITE_FAULTS = re.compile(
    r"database or disk is full|disk I/O error|readonly database|unable to open database file", re.I
)
_F = TypeVar("_F", bound=Callable[..., Any])


def bound_http_retries() -> None:
    """Sets MLflow's HTTP retry settings to :data:`HTTP_RETRIES`, unless already set."""
    for key, value in HTTP_RETRIES.items():
        os.environ.setdefault(key, value)


def _chain(e: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _unreachable(e: BaseException) -> str | None:
    """Why the tracking server did not answer ("connection refused", "HTTP 503"), or None."""
    import requests

    for x in _chain(e):
        text = str(x)
        status = getattr(getattr(x, "response", None), "status_code", None)
        if (
            isinstance(x, requests.exceptions.HTTPError)
            and status
            and (status >= 500 or status in (408, 429))
        ):
            return f"HTTP {status}"
        if isinstance(x, requests.exceptions.Timeout) or "failed with timeout exception" in text:
            return "timed out"
        if isinstance(x, requests.exceptions.ConnectionError | ConnectionError) or re.search(
            r"API request to \S+ failed with exception", text
        ):
            m = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
            return m.group(1).strip().lower() if m else "connection failed"
        m = re.search(r"API request to (?:endpoint )?\S+ failed with error code (5\d\d|408|429)", text)
        if m:
            return f"HTTP {m.group(1)}"
    return None


def _unwritable(e: BaseException) -> OSError | None:
    for x in _chain(e):
        if isinstance(x, OSError) and x.errno in _WRITE_ERRNOS:
            return x
    return None


def translate(cfg: MlflowConfig, e: BaseException) -> RobustopsError | None:
    """The robustops error for an MLflow failure the user can act on; None for any other error."""
    if isinstance(e, RobustopsError):
        return e
    uri = re.sub(r"//[^/@\s]*@", "//***@", tracking_uri(cfg))  # no credentials in the message
    why = _unreachable(e)
    if why is not None:
        n = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", HTTP_RETRIES["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])
        return TrackingUnavailable(
            f"the MLflow tracking server at {uri} did not answer ({why}; {n} retries with backoff): "
            "start it or check the network, or point mlflow.tracking_uri / MLFLOW_TRACKING_URI at a "
            "running server, then rerun"
        )
    bad = _unwritable(e)
    if bad is not None:
        where = bad.filename or cfg.artifact_root
        folder = Path(where).parent if bad.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else where
        return ArtifactStoreError(
            f"cannot write MLflow artifacts to {folder} ({bad.strerror or type(bad).__name__}): free disk "
            "space or make the folder writable, or set mlflow.artifact_root to a writable folder together "
            "with a new mlflow.experiment (an experiment keeps the artifact folder it was created with)"
        )
    m = _SQLITE_FAULTS.search(str(e))
    if m is not None and uri.startswith("sqlite:"):
        return TrackingUnavailable(
            f"the MLflow store {uri} cannot be used ({m.group(0)}): free disk space or make its folder "
            "writable, or point mlflow.tracking_uri at another store"
        )
    return None


@contextlib.contextmanager
def translated(cfg: MlflowConfig) -> Iterator[None]:
    """Raises MLflow failures the user can act on as robustops errors (see :func:`translate`)."""
    try:
        yield
    except Exception as e:
        err = translate(cfg, e)
        if err is None or err is e:
            raise
        raise err from e


def _adapter(fn: _F) -> _F:
    """An adapter call: its first argument is the MlflowConfig; failures go through ``translated``."""

    @functools.wraps(fn)
    def call(cfg: MlflowConfig, *args: Any, **kwargs: Any) -> Any:
        with translated(cfg):
            return fn(cfg, *args, **kwargs)

    return call  # type: ignore[return-value]


def tracking_uri(cfg: MlflowConfig) -> str:
    """Config first, then ``$MLFLOW_TRACKING_URI``, then the local sqlite store."""
    return cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def is_local(uri: str) -> bool:
    """A store on this host's disk (sqlite, a file store), not a server or a remote database."""
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def client(cfg: MlflowConfig) -> MlflowClient:
    bound_http_retries()
    uri = tracking_uri(cfg)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri)


@_adapter
def experiment_id(cfg: MlflowConfig) -> str:
    """The configured experiment; new ones keep artifacts under ``artifact_root`` when local."""
    c = client(cfg)
    exp = c.get_experiment_by_name(cfg.experiment)
    if exp is not None:
        return exp.experiment_id
    location = None
    if is_local(tracking_uri(cfg)):
        location = Path(cfg.artifact_root).resolve().as_uri()
    return c.create_experiment(cfg.experiment, artifact_location=location, tags={KIND_TAG: KIND})


@_adapter
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


@_adapter
def end_run(cfg: MlflowConfig, run_id: str, ok: bool, killed: bool = False) -> None:
    """Marks the run FINISHED, or FAILED (KILLED when a signal stopped it).

    Marking a failed run first asks a tracking server for ``/health`` (one try, 3 s): after the
    server went away, the cleanup fails at once instead of waiting through the retries again.
    """
    status = RunStatus.to_string(
        RunStatus.FINISHED if ok else RunStatus.KILLED if killed else RunStatus.FAILED
    )
    if not ok:
        _check_alive(cfg)
    client(cfg).set_terminated(run_id, status)


def _check_alive(cfg: MlflowConfig) -> None:
    import requests

    uri = tracking_uri(cfg)
    if not uri.startswith(("http://", "https://")):
        return
    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=3).raise_for_status()
    except requests.RequestException as e:
        shown = re.sub(r"//[^/@\s]*@", "//***@", uri)
        raise TrackingUnavailable(
            f"the MLflow tracking server at {shown} did not answer ({_unreachable(e) or type(e).__name__}): "
            "start it or check the network, or point mlflow.tracking_uri / MLFLOW_TRACKING_URI at a "
            "running server, then rerun"
        ) from e


@_adapter
def log_params(cfg: MlflowConfig, run_id: str, params: dict[str, Any]) -> None:
    batch = [Param(k, str(v)[:6000]) for k, v in params.items()]
    c = client(cfg)
    for i in range(0, len(batch), 100):  # MLflow takes at most 100 params per batch
        c.log_batch(run_id, params=batch[i : i + 100])


@_adapter
def log_metrics(cfg: MlflowConfig, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    import time

    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if np.isfinite(v)]
    c = client(cfg)
    for i in range(0, len(batch), 1000):
        c.log_batch(run_id, metrics=batch[i : i + 1000])


@_adapter
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


@_adapter
def set_tag(cfg: MlflowConfig, run_id: str, key: str, value: str) -> None:
    client(cfg).set_tag(run_id, key, value[:5000])


@_adapter
def set_note(cfg: MlflowConfig, run_id: str, markdown: str) -> None:
    client(cfg).set_tag(run_id, NOTE_TAG, markdown)


@_adapter
def log_text(cfg: MlflowConfig, run_id: str, text: str, path: str) -> None:
    client(cfg).log_text(run_id, text, path)


@_adapter
def log_json(cfg: MlflowConfig, run_id: str, obj: Any, path: str) -> None:
    client(cfg).log_text(run_id, json.dumps(obj, indent=2, default=str), path)


@_adapter
def log_file(cfg: MlflowConfig, run_id: str, path: Path, artifact_dir: str) -> None:
    client(cfg).log_artifact(run_id, str(path), artifact_dir)


@_adapter
def log_figure(cfg: MlflowConfig, run_id: str, fig: Figure, path: str) -> None:
    import matplotlib.pyplot as plt

    client(cfg).log_figure(run_id, fig, path)
    plt.close(fig)


@_adapter
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


@_adapter
def register(cfg: MlflowConfig, model_uri: str, run_id: str, tags: dict[str, str]) -> str:
    """Registers a fully logged model under ``cfg.registered_model``; returns the version."""
    c = client(cfg)
    try:
        c.get_registered_model(cfg.registered_model)
    except mlflow.exceptions.MlflowException as e:
        if not _not_found(cfg, e):
            raise
        try:
            c.create_registered_model(
                cfg.registered_model, description="Image classifier trained and scored by robustops."
            )
        except mlflow.exceptions.MlflowException as e2:  # another run created it meanwhile
            if e2.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
    # A tracking server needs the logged model's id beside a models:/m-... source (sqlite does not).
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    mv = c.create_model_version(cfg.registered_model, model_uri, run_id=run_id, tags=tags, model_id=model_id)
    return mv.version


def _not_found(cfg: MlflowConfig, e: Exception) -> bool:
    """An MLflow error that means "no such model, version or alias", not a fault of the store."""
    return translate(cfg, e) is None


def ui_command(cfg: MlflowConfig) -> str:
    uri = tracking_uri(cfg)
    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    return f"mlflow ui --backend-store-uri {uri} --port 5000   # then open http://127.0.0.1:5000"


@_adapter
def alias_version(cfg: MlflowConfig, alias: str) -> Any | None:
    """The model version the alias points at, or None when the model or the alias does not exist."""
    c = client(cfg)
    try:
        return c.get_model_version_by_alias(cfg.registered_model, alias)
    except mlflow.exceptions.MlflowException as e:
        # Only "not there" means no champion: a store that does not answer must not read as an
        # empty registry, or the gate would promote against no champion.
        if _not_found(cfg, e):
            return None
        raise


@_adapter
def run_metrics(cfg: MlflowConfig, run_id: str) -> dict[str, float]:
    return dict(client(cfg).get_run(run_id).data.metrics)


@_adapter
def set_alias(cfg: MlflowConfig, alias: str, version: str, expected: str | None) -> None:
    """Points the alias at ``version`` if it still points at ``expected`` (None: unset).

    A compare-and-set in two calls, not atomic by itself: the gate calls it under its promotion
    lock (``tasks.gate``), so among robustops runs it is atomic; against anyone else who moves
    the alias (the MLflow UI, a script) it still catches a champion changed while this run was
    deciding, so a decision made against a stale champion never lands.

    Raises:
        PromotionConflict: the alias no longer points at ``expected``.
    """
    from robustops.errors import PromotionConflict

    current = alias_version(cfg, alias)
    now = str(current.version) if current is not None else None
    if now != (str(expected) if expected is not None else None):
        raise PromotionConflict(
            f"alias {alias!r} of {cfg.registered_model} moved to version {now} while this run was deciding "
            f"(it was {expected}); nothing promoted: rerun to decide against the new champion"
        )
    client(cfg).set_registered_model_alias(cfg.registered_model, alias, version)


@_adapter
def set_version_tag(cfg: MlflowConfig, version: str, key: str, value: str) -> None:
    client(cfg).set_model_version_tag(cfg.registered_model, version, key, value)


@_adapter
def delete_version_tag(cfg: MlflowConfig, version: str, key: str) -> None:
    client(cfg).delete_model_version_tag(cfg.registered_model, version, key)


@_adapter
def child_runs(cfg: MlflowConfig, parent_id: str) -> dict[str, str]:
    """The nested runs of a parent run: run id -> status."""
    c = client(cfg)
    parent = c.get_run(parent_id)
    found = c.search_runs(
        [parent.info.experiment_id], f"tags.`{PARENT_TAG}` = '{parent_id}'", max_results=1000
    )
    return {r.info.run_id: r.info.status for r in found}


def versions_of(c: MlflowClient, name: str) -> list[Any]:
    """Every version of the registered model ``name`` (quoted for MLflow's filter syntax)."""
    return c.search_model_versions(f"name = {names.filter_literal(name)}")


@_adapter
def delete_unaliased(cfg: MlflowConfig, run_ids: set[str]) -> list[str]:
    """Deletes the versions of ``cfg.registered_model`` that the runs registered, unless an alias
    points at one (a champion is never deleted); returns the deleted versions."""
    c = client(cfg)
    deleted = []
    for mv in versions_of(c, cfg.registered_model):
        if mv.run_id in run_ids and not mv.aliases:
            c.delete_model_version(mv.name, mv.version)
            deleted.append(str(mv.version))
    return deleted


@_adapter
def resolve_model(cfg: MlflowConfig, uri: str) -> Any:
    """The model version a ``models:/NAME@alias`` or ``models:/NAME/VERSION`` URI names.

    Raises:
        ModelNotFoundError: a malformed URI, or no such model, version or alias.
    """
    from robustops.errors import ModelNotFoundError

    try:
        name, alias, version = names.model_uri(uri)
    except ValueError as e:
        raise ModelNotFoundError(str(e)) from None
    c = client(cfg)
    try:
        return c.get_model_version_by_alias(name, alias) if alias else c.get_model_version(name, version)
    except mlflow.exceptions.MlflowException as e:
        if not _not_found(cfg, e):
            raise
        what = f"alias @{alias}" if alias else f"version {version}"
        if _exists(cfg, c, name):
            known = sorted(int(mv.version) for mv in versions_of(c, name))
            aliases = sorted(c.get_registered_model(name).aliases)
            hint = f"{name} has versions {', '.join(map(str, known)) or 'none'}"
            hint += f" and aliases {', '.join('@' + a for a in aliases)}" if aliases else " and no aliases"
        else:
            hint = f"no registered model {name!r}"
        raise ModelNotFoundError(f"{uri}: no {what} ({hint}) in {tracking_uri(cfg)}") from None


def _exists(cfg: MlflowConfig, c: MlflowClient, name: str) -> bool:
    try:
        c.get_registered_model(name)
        return True
    except mlflow.exceptions.MlflowException as e:
        if _not_found(cfg, e):
            return False
        raise


@_adapter
def download(cfg: MlflowConfig, run_id: str, path: str, dst: str) -> str:
    return client(cfg).download_artifacts(run_id, path, dst)


@_adapter
def run_info(cfg: MlflowConfig, run_id: str) -> Any:
    return client(cfg).get_run(run_id)
