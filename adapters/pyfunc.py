"""The guarded model as an MLflow pyfunc: the one adapter between robustops.serving and MLflow's
model format and scoring server. ``mlflow.pyfunc.load_model``, ``robustops serve-model`` and
``mlflow models serve`` all load it through :func:`_load_pyfunc`.

No pickle and no code comes from the artifact store. The model is logged with MLflow's
``loader_module`` (this module, imported from the installed robustops) and a data folder,
``artifacts/``, that holds ``checkpoint/`` (state dict + spec, loaded with ``weights_only=True``)
and ``guard.json``. A Python object logged as ``python_model`` would be cloudpickled into
``python_model.pkl`` and run by whoever loads it; a models-from-code ``.py`` file would be
executed from the store just the same. ``robustops serve-model`` also refuses a model whose
``MLmodel`` names another loader or that holds a pickle, so a tampered artifact runs nothing.

A request the guard refuses as a whole becomes an MLflow INVALID_PARAMETER_VALUE error, which the
scoring server answers with HTTP 400 and the reason.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from robustops.serving import GuardedModel, GuardSettings, RequestError

LOADER = "adapters.pyfunc"  # the loader_module every robustops guarded model names
# What models registered before the adapters had their own folder name as their loader.
OLD_LOADERS = ("tasks.pyfunc",)
DATA = "artifacts"  # the model's data folder: checkpoint/ and guard.json (MLflow puts it under data/)


def read_guard_settings(path: str | Path) -> GuardSettings:
    """The guard's settings from ``guard.json``; a clear error for a damaged file."""
    from robustops.training.checkpoint import CheckpointError

    try:
        raw = json.loads(Path(path).read_text())
        return GuardSettings.from_dict(raw)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{Path(path).name}: unreadable guard settings ({first}); re-register the model with robustops"
        ) from None


def load_guarded(folder: str | Path) -> GuardedModel:
    """The guarded model from a data folder (``checkpoint/`` and ``guard.json``)."""
    from robustops.training import checkpoint

    folder = Path(folder)
    return GuardedModel(checkpoint.load(folder / "checkpoint"), read_guard_settings(folder / "guard.json"))


class GuardedPyfunc:
    """What MLflow's pyfunc wrapper calls: ``predict`` with the request, refusals as 400s."""

    def __init__(self, guarded: GuardedModel):
        self.guarded = guarded

    def get_raw_model(self) -> GuardedModel:
        """What ``PyFuncModel.get_raw_model()`` returns: the guarded model itself."""
        return self.guarded

    # No type hints on predict: MLflow would try to derive a schema from them.
    def predict(self, model_input, params=None):  # noqa: ANN001, ANN201
        try:
            return self.guarded.predict(model_input)
        except RequestError as e:
            raise MlflowException(str(e), error_code=INVALID_PARAMETER_VALUE) from None


def load_pyfunc(data_path: str) -> GuardedPyfunc:
    """MLflow's loader_module contract: the model from its data folder."""
    return GuardedPyfunc(load_guarded(data_path))


_load_pyfunc = load_pyfunc  # the name MLflow's loader_module contract calls


def log_guarded(run_id: str, folder: Path, settings: GuardSettings, example: np.ndarray) -> str:
    """Logs the guarded model (``guarded_model``) into a run; returns its ``models:/`` URI.

    Called with the tracking URI already set (see ``adapters.tracking``)."""
    from robustops.training import checkpoint

    example = np.ascontiguousarray(example[: max(2, min(4, len(example)))], dtype=np.float32)
    guarded = GuardedModel(checkpoint.load(folder), settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the int column hint: class_index is never missing
        signature = infer_signature(example, guarded.predict(example))
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / DATA
        shutil.copytree(folder, data / "checkpoint")
        raw = settings.as_dict()
        if math.isinf(raw["energy_threshold"]):
            raw["energy_threshold"] = -1e30  # JSON has no infinity
        (data / "guard.json").write_text(json.dumps(raw, indent=2))
        with mlflow.start_run(run_id=run_id), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MLflow suggests models-from-code: see the module docstring
            info = mlflow.pyfunc.log_model(
                name="guarded_model",
                loader_module=LOADER,
                data_path=str(data),
                signature=signature,
                input_example=example,
                pip_requirements=[f"mlflow=={mlflow.__version__}", "torch==2.13.0"],
            )
    return info.model_uri


def data_folder(model: Path) -> Path:
    """The data folder (``checkpoint/``, ``guard.json``) of a downloaded guarded model. Versions
    logged before the loader module kept it in ``artifacts/`` beside a pickle, which is never read."""
    for folder in (model / "data" / DATA, model / DATA):
        if (folder / "guard.json").is_file():
            return folder
    return model / "data" / DATA


def check_model_folder(folder: Path, uri: str) -> None:
    """Refuses a downloaded model that robustops did not log as it logs guarded models: its
    ``MLmodel`` must name this loader, and no file in it may be a pickle."""
    import yaml

    from robustops.training.checkpoint import CheckpointError

    try:
        meta = yaml.safe_load((folder / "MLmodel").read_text())
        loader = meta["flavors"]["python_function"]["loader_module"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"{uri}: not an MLflow pyfunc model ({type(e).__name__}); serve a model robustops registered"
        ) from None
    pickles = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.suffix in (".pkl", ".pickle"))
    if loader not in (LOADER, *OLD_LOADERS) or pickles:
        what = (
            f"its MLmodel names the loader {loader!r}"
            if loader not in (LOADER, *OLD_LOADERS)
            else f"it holds {', '.join(pickles)}"
        )
        raise CheckpointError(
            f"{uri}: {what}, not robustops' ({LOADER}, no pickles): loading it could run code from the "
            "artifact store, so it is not served; re-register the model with robustops"
        )


def max_body(settings: GuardSettings) -> int:
    """The largest JSON request a model takes: its most values at 32 characters each (a float32
    as JSON takes at most about 25), plus 64 KiB of brackets and envelope."""
    c, h, w = settings.shape
    return settings.max_rows() * c * h * w * 32 + 2**16


def serve_model(
    cfg: Any, uri: str, host: str, port: int
) -> None:  # pragma: no cover - blocks; tested via a process
    """Serves a registered guarded model over HTTP: MLflow's scoring server (``/invocations``,
    ``/ping``) behind :class:`robustops.serving.http.RequestLimits`."""
    import uvicorn
    from mlflow.pyfunc import scoring_server

    from adapters import tracking
    from robustops.serving.http import RequestLimits

    mv = tracking.resolve_model(cfg.mlflow, uri)
    folder = Path(tempfile.mkdtemp(prefix="robustops-serve-"))
    try:
        with tracking.translated(cfg.mlflow):
            local = Path(mlflow.artifacts.download_artifacts(mv.source, dst_path=str(folder)))
        check_model_folder(local, uri)
        model = mlflow.pyfunc.load_model(str(local))
        settings = read_guard_settings(data_folder(local) / "guard.json")
        app = RequestLimits(scoring_server.init(model), max_body=max_body(settings))
        print(
            f"robustops: serving {uri} ({mv.name} version {mv.version}) on http://{host}:{port}/invocations"
        )
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
