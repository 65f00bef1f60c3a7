"""Registered models loaded back from MLflow, in one place: a robustops checkpoint (for scoring),
the guarded model with its drift reference (for monitoring and predictions), or only what a
pre-flight check needs (the version and the model's blueprint, without the weights)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from adapters import tracking
from adapters.pyfunc import data_folder, load_guarded
from robustops.config import MlflowConfig
from robustops.errors import ConfigError, ModelNotFoundError, RobustopsError
from robustops.models import Blueprint
from robustops.monitoring.reference import Reference, load_reference
from robustops.serving import GuardedModel
from robustops.training import checkpoint


def _version(m: MlflowConfig, uri: str) -> tuple[Any, dict[str, Any]]:
    mv = tracking.resolve_model(m, uri)
    return mv, {"uri": uri, "name": mv.name, "version": str(mv.version), "run_id": mv.run_id}


def _named(uri: str, mv: Any, e: checkpoint.CheckpointError, tmp: str) -> checkpoint.CheckpointError:
    """The error naming the registered version, not a temporary folder."""
    return checkpoint.CheckpointError(
        f"{uri} ({mv.name} version {mv.version}): {str(e).replace(tmp + '/', '')}"
    )


def _no_checkpoint(uri: str, run_id: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"{uri} (run {run_id}) has no robustops checkpoint; evaluate a model registered by robustops"
    )


def is_robustops_model(m: MlflowConfig, uri: str) -> bool:
    """Whether ``uri`` names a version robustops registered (its run holds a robustops checkpoint),
    rather than any other PyTorch model (a user's source). Raises ModelNotFoundError for a
    ``models:/`` URI that names nothing."""
    if not uri.startswith("models:/"):
        return False
    mv = tracking.resolve_model(m, uri)
    if not mv.run_id:  # registered from a logged model, with no run
        return False
    try:
        tags = tracking.run_info(m, mv.run_id).data.tags
    except RobustopsError:  # the tracking server went away: say so
        raise
    except Exception:  # noqa: BLE001 - a deleted run: whatever it was, no robustops checkpoint
        return False
    return tags.get("robustops.kind") in MODEL_RUNS


def refuse_register(uri: str) -> None:
    """``robustops evaluate --register`` of a version robustops registered: refused, it is one already.

    Raises:
        ConfigError: always.
    """
    raise ConfigError(
        f"--register: {uri} is already a version robustops registered; robustops evaluate scores it on "
        "new data (drop --register), and robustops run registers and gates new versions"
    )


# The kinds of run that hold a robustops checkpoint: a pipeline's model run, and the evaluation
# run of a user's model registered by ``robustops evaluate --register``.
MODEL_RUNS = ("model", "audit")


def load_blueprint(m: MlflowConfig, uri: str) -> tuple[Blueprint, dict[str, Any]]:
    """The version a URI names and its model's blueprint, downloading nothing else."""
    mv, info = _version(m, uri)
    with tempfile.TemporaryDirectory() as tmp:
        folder = None
        for name in (checkpoint.BLUEPRINT, checkpoint.OLD_BLUEPRINT):
            try:
                folder = Path(tracking.download(m, mv.run_id, f"checkpoint/{name}", tmp)).parent
                break
            except RobustopsError:  # the tracking server went away: say so, not "no checkpoint"
                raise
            except Exception:  # noqa: BLE001, S112 - not this file: try the older name
                continue
        if folder is None:
            raise _no_checkpoint(uri, mv.run_id)
        try:
            return checkpoint.read_blueprint(folder), info
        except checkpoint.CheckpointError as e:
            raise _named(uri, mv, e, tmp) from None


def load_checkpoint(m: MlflowConfig, uri: str) -> tuple[nn.Module, Blueprint, dict[str, Any]]:
    """The model a URI names, rebuilt from its run's checkpoint, its blueprint, and facts about
    the version (name, version, run id, the model's name in its run)."""
    mv, info = _version(m, uri)
    run = tracking.run_info(m, mv.run_id)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            folder = tracking.download(m, mv.run_id, "checkpoint", tmp)
        except RobustopsError:  # the tracking server went away: say so, not "no checkpoint"
            raise
        except Exception:  # noqa: BLE001 - any other failure here means the checkpoint is not there
            raise _no_checkpoint(uri, mv.run_id) from None
        try:
            model = checkpoint.load(folder)
            blueprint = checkpoint.read_blueprint(folder)
        except checkpoint.CheckpointError as e:
            raise _named(uri, mv, e, tmp) from None
    tags = run.data.tags
    return (
        model,
        blueprint,
        info | {"model": tags.get("robustops.model", mv.name), "tag": tags.get("robustops.defence")},
    )


def load_champion(m: MlflowConfig, uri: str) -> tuple[GuardedModel, Reference, dict[str, Any]]:
    """The guarded model a URI names and its drift reference."""
    import mlflow

    mv, info = _version(m, uri)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(mv.source, dst_path=f"{tmp}/model"))
            ref = load_reference(Path(tracking.download(m, mv.run_id, "monitoring", tmp)))
        except RobustopsError:  # the tracking server went away: say so
            raise
        except Exception as e:  # noqa: BLE001 - any other failure: not a robustops guarded model
            raise ModelNotFoundError(
                f"{uri}: not a robustops guarded model with a drift reference ({e})"
            ) from None
        try:
            guarded = load_guarded(data_folder(local))
        except checkpoint.CheckpointError as e:
            raise _named(uri, mv, e, str(local)) from None
    return guarded, ref, info
