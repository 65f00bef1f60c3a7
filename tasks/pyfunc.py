"""The guarded model as an MLflow pyfunc: the one adapter between robustops.serving and MLflow's
model format. ``mlflow models serve`` and ``mlflow.pyfunc.load_model`` both use it.

The model directory holds ``artifacts/checkpoint`` (state dict + spec, loaded with
``weights_only=True``) and ``artifacts/guard.json``; no pickled network. A request the guard
refuses as a whole becomes an MLflow INVALID_PARAMETER_VALUE error, which the scoring server
answers with HTTP 400 and the reason.
"""

from __future__ import annotations

import json
import math
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


def _settings(path: str | Path) -> GuardSettings:
    from robustops.training.checkpoint import CheckpointError

    try:
        raw = json.loads(Path(path).read_text())
        return GuardSettings(**raw)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{Path(path).name}: unreadable guard settings ({first}); re-register the model with robustops"
        ) from None


# MLflow warns about missing type hints when the class is created (inside its own
# catch_warnings, so a filter cannot reach it; silencing the display can). Hints would make it
# derive a schema from them instead of the logged signature.
with warnings.catch_warnings():
    warnings.showwarning = lambda *args, **kwargs: None

    class GuardedPyfunc(mlflow.pyfunc.PythonModel):
        def load_context(self, context: Any) -> None:
            from robustops.training import checkpoint

            self.guarded = GuardedModel(
                checkpoint.load(context.artifacts["checkpoint"]), _settings(context.artifacts["guard"])
            )

        # No type hints on predict: MLflow would try to derive a schema from them.
        def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
            try:
                return self.guarded.predict(model_input)
            except RequestError as e:
                raise MlflowException(str(e), error_code=INVALID_PARAMETER_VALUE) from None


def log_guarded(run_id: str, folder: Path, settings: GuardSettings, example: np.ndarray) -> str:
    """Logs the guarded model (``guarded_model``) into a run; returns its ``models:/`` URI.

    Called with the tracking URI already set (see ``tasks.tracking``)."""
    from robustops.training import checkpoint

    example = np.ascontiguousarray(example[: max(2, min(4, len(example)))], dtype=np.float32)
    guarded = GuardedModel(checkpoint.load(folder), settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the int column hint: class_index is never missing
        signature = infer_signature(example, guarded.predict(example))
    with tempfile.TemporaryDirectory() as tmp:
        guard = Path(tmp) / "guard.json"
        raw = settings.as_dict()
        if math.isinf(raw["energy_threshold"]):
            raw["energy_threshold"] = -1e30  # JSON has no infinity
        guard.write_text(json.dumps(raw, indent=2))
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="guarded_model",
                python_model=GuardedPyfunc(),
                artifacts={"checkpoint": str(folder), "guard": str(guard)},
                signature=signature,
                input_example=example,
                pip_requirements=[f"mlflow=={mlflow.__version__}", "torch==2.13.0"],
            )
    return info.model_uri
