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
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import mlflow
import numpy as np
from matplotlib.figure import Figure
from mlflow.entities import Metric, Param, RunStatus
from mlflow.tracking import MlflowClient

from robustops import names
from robustops.config import MlflowConfig
from robustops.errors import ArtifactStoreError, RobustopsError, TrackingUnavailable
from robustops.redact import redact, redact_params

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
# MLflow draws a progress bar for every artifact download (a model, a checkpoint, a drift
# reference: files of a few kB), which buries a run's log lines; a user may still turn them on.
QUIET = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


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
    for key, value in QUIET.items():
        os.environ.setdefault(key, value)
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
    cfg: MlflowConfig,
    name: str,
    parent_id: str | None = None,
    tags: dict[str, str] | None = None,
    flow: str = "robustness-pipeline",
) -> str:
    """A new run of the configured experiment; its Source in the UI names the Prefect ``flow``."""
    tags = {
        "mlflow.source.name": f"robustops: Prefect flow {flow}",
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
    """Logs params (key -> value, each value as its ``str``, cut at 6,000 characters) with every URI
    password and secret query value replaced by ``***`` (:func:`robustops.redact.redact_params`):
    the config's paths and addresses, a batch path, a model URI."""
    batch = [Param(k, str(v)[:6000]) for k, v in redact_params(params).items()]
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


# A scorecard's curves, logged as stepped metrics so that the MLflow UI draws each as a line and
# the compare view overlays the models, instead of one single-bar chart per point. MLflow steps
# are integers: a radius or a noise strength is logged at step round(1000 x value) (eps 0.1 at
# step 100, 8/255 at step 31), which keeps the x-axis proportional to the value and lines up
# models scored at other radii; a severity is its own step. Step 0 is the clean figure (no
# attack, no corruption, no noise), so each curve starts where the model does. Any statistic of
# a point (``acc``, or another a later scorecard adds) gets its own curve.
STEP_SCALE = 1000
_CURVES = [
    (re.compile(r"^adv/(?P<name>[^/]+)/eps_(?P<x>[0-9.e+-]+)/(?P<stat>[^/]+)$"),
     "adv/{stat}_vs_eps_x1000/{name}", STEP_SCALE, True),
    (re.compile(r"^corruption/(?P<name>[^/]+)/s(?P<x>[0-9]+)/(?P<stat>[^/]+)$"),
     "corruption/{stat}_vs_severity/{name}", 1, True),
    (re.compile(r"^noise/(?P<name>[^/]+)/s_(?P<x>[0-9.e+-]+)/(?P<stat>[^/]+)$"),
     "noise/{stat}_vs_strength_x1000/{name}", STEP_SCALE, True),
    (re.compile(r"^certified/r_(?P<x>[0-9.e+-]+)/(?P<stat>[^/]+)$"),
     "certified/{stat}_vs_radius_x1000", STEP_SCALE, False),
]  # fmt: skip


def gate_metrics(gate: Any) -> set[str]:
    """The metrics a gate config reads (its primary score, its ``min`` and ``max`` keys)."""
    return {gate.primary, *gate.min, *gate.max}


def split_curves(
    metrics: dict[str, float], keep: Iterable[str] = ()
) -> tuple[dict[str, float], dict[str, dict[int, float]]]:
    """A scorecard's metrics as MLflow should hold them: (scalars, curves).

    Each point of a curve (``adv/pgd_linf/eps_0.1/acc``, ``corruption/fog/s3/acc``,
    ``noise/gaussian/s_0.1/acc``, ``certified/r_0.25/acc``) goes to its curve
    (``adv/acc_vs_eps_x1000/pgd_linf`` at step 100, ...). A point stays a scalar as well when
    ``keep`` names it (what the gate reads, also from a champion's run) or it is one of the
    headline figures (:func:`robustops.evaluation.report.summary`), or when its step would
    collide with another point's (radii closer than 0.001): no number is lost.
    """
    from robustops.evaluation.report import summary

    keep = set(keep) | set(summary(metrics))
    scalars: dict[str, float] = {}
    curves: dict[str, dict[int, float]] = {}
    for key, value in metrics.items():
        for pattern, template, scale, clean_start in _CURVES:
            m = pattern.match(key)
            if m is None:
                continue
            try:
                step = round(float(m["x"]) * scale)
            except ValueError:
                break
            name = template.format(**m.groupdict())
            curve = curves.setdefault(name, {})
            clean = metrics.get(f"clean/{m['stat']}")
            if clean_start and clean is not None:
                curve.setdefault(0, clean)
            if step in curve:  # the clean start or another point holds it: keep this one by name
                scalars[key] = value
            else:
                curve[step] = value
            if key in keep:
                scalars[key] = value
            break
        else:
            scalars[key] = value
    return scalars, {k: dict(sorted(v.items())) for k, v in curves.items()}


@_adapter
def log_scorecard(
    cfg: MlflowConfig, run_id: str, metrics: dict[str, float], keep: Iterable[str] = ()
) -> None:
    """A scorecard's metrics: the scalars and the stepped curves of :func:`split_curves`."""
    import time

    scalars, curves = split_curves(metrics, keep)
    log_metrics(cfg, run_id, scalars)
    now = int(time.time() * 1000)
    batch = [
        Metric(name, float(v), now, step)
        for name, points in curves.items()
        for step, v in points.items()
        if np.isfinite(v)
    ]
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


UI_PORT = 5000  # where `mlflow ui` serves a local store (its default port)
# MLflow 3's UI opens an experiment in its GenAI view (traces, prompts) unless told otherwise:
# the choice is kept in the browser, "genai" on a fresh one, and the experiment's
# ``mlflow.experimentKind`` tag does not override it. This query parameter picks the
# model-training view, where these runs, their charts and the compare view are.
ML_VIEW = "workflowType=machine_learning"
_CREDENTIALS = re.compile(r"//[^/@\s]*@")


def _is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def script(name: str) -> str:
    """A console script of this environment (``mlflow``, ``prefect``) as a user can run it: the
    bare name when it is on PATH, else its path (``.venv/bin/mlflow`` from the project folder),
    since a virtualenv's scripts are often not on PATH."""
    path = Path(sys.executable).with_name(name)  # not resolved: a venv's python is a symlink
    if not path.exists():
        return f"{sys.executable} -m {name}"
    found = shutil.which(name)
    if found and Path(found).resolve() == path.resolve():
        return name
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path.absolute())


def ui_base(cfg: MlflowConfig) -> str:
    """The MLflow UI's address: the tracking server itself, or where ``mlflow ui`` serves a local store."""
    uri = tracking_uri(cfg)
    if _is_server(uri):
        return _CREDENTIALS.sub("//", uri).rstrip("/")  # never a password in a link
    return f"http://127.0.0.1:{UI_PORT}"


def ui_url(
    cfg: MlflowConfig,
    run_id: str | None = None,
    experiment_id: str | None = None,
    artifact: str | None = None,
) -> str:
    """A link into the MLflow UI's model-training view: a run's artifact, the run, the
    experiment's runs, or the list of experiments. Looks the run's experiment up when not given."""
    base = ui_base(cfg)
    if run_id and experiment_id is None:
        experiment_id = run_info(cfg, run_id).info.experiment_id
    if run_id:
        page = f"/artifacts/{artifact}" if artifact else ""
        return f"{base}/#/experiments/{experiment_id}/runs/{run_id}{page}?{ML_VIEW}"
    if experiment_id:
        return f"{base}/#/experiments/{experiment_id}/runs?{ML_VIEW}"
    return f"{base}/#/experiments?{ML_VIEW}"


def experiment_url(cfg: MlflowConfig) -> str:
    """The configured experiment's runs in the UI (the list of experiments while it does not
    exist yet); creates nothing."""
    try:
        exp = client(cfg).get_experiment_by_name(cfg.experiment)
    except Exception:  # noqa: BLE001 - a store that cannot be read yet: the UI will say why
        exp = None
    return ui_url(cfg, experiment_id=exp.experiment_id if exp is not None else None)


def ui_command(cfg: MlflowConfig) -> str:
    """What serves the MLflow UI, runnable as printed: ``mlflow ui`` on a local store (the
    environment's own script), nothing to start for a tracking server (its address)."""
    uri = tracking_uri(cfg)
    if _is_server(uri):
        return ui_base(cfg)
    return f"{script('mlflow')} ui --backend-store-uri {redact(uri)} --port {UI_PORT}"


def _make_target(target: str) -> bool:
    """Whether the working folder's Makefile (the project's) has ``target``."""
    try:
        text = Path("Makefile").read_text(errors="replace")
    except OSError:
        return False
    return re.search(rf"^{re.escape(target)}:", text, re.M) is not None


PREFECT_UI = "http://127.0.0.1:4200"  # where `prefect server start` serves by default


def end_of_run_hints(cfg: Any, run_id: str, flow_run_id: str | None = None) -> list[str]:
    """The lines that end a command's output: how to open its MLflow run in the UI's
    model-training view and its flow run in the Prefect UI, each runnable as printed.

    Args:
        cfg: the config (or its ``mlflow`` section).
        run_id: the MLflow run to open (a pipeline's parent run).
        flow_run_id: the Prefect flow run (default: the run's ``prefect.flow_run_id`` tag).
    """
    from prefect.settings import PREFECT_API_URL

    m = getattr(cfg, "mlflow", cfg)
    try:
        run = run_info(m, run_id)
        url = ui_url(m, run_id, run.info.experiment_id)
        flow_run_id = flow_run_id or run.data.tags.get("prefect.flow_run_id")
    except Exception:  # noqa: BLE001 - the hints never fail a run that succeeded
        url = ui_url(m)
    uri = tracking_uri(m)
    if _is_server(uri):
        lines = [f"MLflow UI:  {url}"]
    else:
        alt = "   (or: make ui)" if uri == DEFAULT_URI and _make_target("ui") else ""
        lines = [f"MLflow UI:  {ui_command(m)}{alt}", f"            then open {url}"]
    api = PREFECT_API_URL.value()
    run = f"/runs/flow-run/{flow_run_id}" if flow_run_id else "/runs"
    if api:
        lines.append(f"Prefect UI: {api.rstrip('/').removesuffix('/api')}{run}")
        return lines
    # Without PREFECT_API_URL the flow ran on a temporary server that stopped with this command;
    # its history stays in the local Prefect database, which a server started later serves.
    alt = "   (or: make prefect-ui)" if _make_target("prefect-ui") else ""
    lines += [
        "Prefect UI: this run used a temporary Prefect server, now stopped; its flow runs are kept in the local",
        f"            Prefect database. To see them: {script('prefect')} server start{alt}",
        f"            then open {PREFECT_UI}{run}",
        "            To follow runs live, start that server first and, before the next run,",
        f"            export PREFECT_API_URL={PREFECT_UI}/api",
    ]
    return lines


def link_in_prefect(cfg: MlflowConfig, run_id: str, kind: str, title: str, lines: Iterable[str] = ()) -> None:
    """A markdown artifact on the current Prefect flow run (key ``mlflow-<kind>-run``) that links
    its MLflow run in the UI's model-training view. It belongs to the flow run itself, also when a
    task calls this, so the flow run's Artifacts tab shows it first. Outside a flow run (a task
    called with ``.fn``) it does nothing; a failure is a warning, never the run's failure."""
    from prefect.runtime import flow_run

    flow_run_id = flow_run.get_id()
    if flow_run_id is None:
        return
    try:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import ArtifactCreate

        text = [f"### [{title}]({ui_url(cfg, run_id)})", "", *lines]
        if not _is_server(tracking_uri(cfg)):
            text += ["", f"The MLflow UI of this local store: `{ui_command(cfg)}`, then open the link."]
        artifact = ArtifactCreate(
            key=f"mlflow-{kind}-run",
            type="markdown",
            data="\n".join(text),
            description=f"MLflow run {run_id}",
            flow_run_id=flow_run_id,
        )
        with get_client(sync_client=True) as c:
            c.create_artifact(artifact)
    except Exception as e:  # noqa: BLE001 - a link is a convenience: the run itself succeeded
        from adapters.log import logger

        logger().warning("could not attach the MLflow link to the Prefect flow run: %s", e)


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


def scorecard_metrics(cfg: MlflowConfig, run_id: str) -> dict[str, float]:
    """Every score of a model run under its scorecard name: the logged scalars and the points
    that were logged as curves (from ``evaluation/scorecard.json``), so a gate that names a
    curve's point still finds the champion's value. A run without that file: its scalars."""
    import json
    import tempfile

    metrics = run_metrics(cfg, run_id)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = download(cfg, run_id, "evaluation/scorecard.json", tmp)
        except Exception:  # noqa: BLE001 - an older or hand-made run: the scalars are what there is
            return metrics
        with open(path, encoding="utf-8") as f:
            card = json.load(f)
    return metrics | {k: float(v) for k, v in card.get("metrics", {}).items() if isinstance(v, (int, float))}


@_adapter
def set_alias(cfg: MlflowConfig, alias: str, version: str, expected: str | None) -> None:
    """Points the alias at ``version`` if it still points at ``expected`` (None: unset).

    A compare-and-set in two calls, not atomic by itself: the gate calls it under its promotion
    lock (``adapters.locks``), so among robustops runs it is atomic; against anyone else who moves
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
