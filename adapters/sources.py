"""A user's model opened from wherever ``model.source`` names it: MLflow here (the core never talks
to MLflow), everything else through :func:`robustops.sources.open_source`."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from adapters import tracking
from robustops.config import Config, LimitsConfig, MlflowConfig, ModelConfig
from robustops.data import Dataset, Split
from robustops.data.loaders import load_labelled, relabel
from robustops.errors import ModelNotFoundError, ModelSourceError, RobustopsError
from robustops.models import Blueprint
from robustops.sources import (
    SourceModel,
    check_tunable,
    kind_of,
    lineage,
    open_source,
    prepare,
    source_name,
)
from robustops.sources.programs import ProgramModule, is_exported, program_module

FLAVOUR_FIX = (
    "log it with mlflow.pytorch.log_model, or give the model as a factory, .pt2 or TorchScript source"
)


def _run_uri(m: MlflowConfig, uri: str) -> tuple[str, str]:
    """(run id, artifact path) of a ``runs:/RUN_ID/PATH`` URI whose run exists."""
    run_id, _, path = uri.removeprefix("runs:/").partition("/")
    if not run_id or not path:
        raise ModelSourceError(f"{uri}: give an MLflow run URI as runs:/RUN_ID/PATH")
    try:
        tracking.run_info(m, run_id)
    except RobustopsError:
        raise
    except Exception:  # noqa: BLE001 - MLflow says "not found" in several ways
        raise ModelNotFoundError(f"{uri}: no run {run_id} in {tracking.tracking_uri(m)}") from None
    return run_id, path


def open_mlflow(m: MlflowConfig, uri: str) -> tuple[nn.Module, dict[str, Any]]:
    """The PyTorch model an MLflow URI names (``models:/NAME/VERSION``, ``models:/NAME@ALIAS``,
    ``runs:/RUN_ID/PATH``), in eval mode, and where it came from (name, version, run id).

    A model MLflow saved as a pickle is unpickled, which runs the code it holds, as
    ``mlflow.pytorch.load_model`` does: open models only from a registry you trust.

    Raises:
        ModelNotFoundError: no such model, version, alias or run.
        ModelSourceError: the URI names something that is not a PyTorch-flavour model.
    """
    import mlflow
    import mlflow.pytorch

    if uri.startswith("models:/"):
        mv = tracking.resolve_model(m, uri)
        info = {"uri": uri, "name": mv.name, "version": str(mv.version), "run_id": mv.run_id}
        artifacts = mv.source
    else:
        run_id, path = _run_uri(m, uri)
        info, artifacts = {"uri": uri, "run_id": run_id}, uri
    tracking.client(m)  # the tracking URI set for MLflow's own calls below
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifacts, dst_path=tmp))
        except RobustopsError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure here means there is no model to read
            raise ModelNotFoundError(
                f"{uri}: no model files there ({type(e).__name__}); {FLAVOUR_FIX}"
            ) from None
        meta = local / "MLmodel"
        if not meta.is_file():
            raise ModelSourceError(f"{uri}: not an MLflow model (no MLmodel file); {FLAVOUR_FIX}")
        if "pytorch:" not in meta.read_text():
            raise ModelSourceError(f"{uri}: an MLflow model without the pytorch flavour; {FLAVOUR_FIX}")
        try:
            model = mlflow.pytorch.load_model(str(local), map_location="cpu")
        except Exception as e:  # noqa: BLE001 - a user's model can fail to load in any way
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise ModelSourceError(
                f"{uri}: the PyTorch model cannot be loaded ({type(e).__name__}: {first}); install the "
                "packages its code needs, or log it again"
            ) from e
    if not isinstance(model, nn.Module):
        raise ModelSourceError(f"{uri}: holds a {type(model).__name__}, not a torch.nn.Module; {FLAVOUR_FIX}")
    if is_exported(model):  # MLflow saved it as pt2
        model = program_module(model)
    return model.eval(), info


def open_model(m: MlflowConfig, cfg: ModelConfig) -> tuple[nn.Module, dict[str, Any]]:
    """The user's network ``cfg.source`` names, as it is (no preprocessing), and facts about where
    it came from (for an MLflow source: its name, version and run)."""
    assert cfg.source is not None
    if kind_of(cfg.source) == "mlflow":
        return open_mlflow(m, cfg.source)
    return open_source(cfg), {"uri": cfg.source}


def open_for_data(
    m: MlflowConfig, cfg: ModelConfig, path: str, limits: LimitsConfig
) -> tuple[nn.Module, dict[str, Any], Dataset]:
    """The user's model ``cfg.source`` names, prepared for scoring (see
    :func:`robustops.sources.prepare`) on the labelled set at ``path``; facts about it (name,
    lineage, what the contract check found); and the set, labelled with the model's classes."""
    assert cfg.source is not None
    net, info = open_model(m, cfg)
    ds = load_labelled(path, limits, cfg.preprocess.size)
    model, info = _prepared(net, info, cfg, ds)
    return model, info, relabel(ds, info["report"].classes)


def _prepared(
    net: nn.Module, info: dict[str, Any], cfg: ModelConfig, ds: Dataset
) -> tuple[SourceModel, dict[str, Any]]:
    """``net`` prepared on ``ds`` (see :func:`robustops.sources.prepare`), carrying its lineage for
    the cache key (see ``adapters.caching``); ``info`` with its name, lineage and the check's report."""
    model, report = prepare(net, cfg, ds.x, ds.classes, ds.y)
    found = lineage(cfg) | {k: info[k] for k in ("name", "version", "run_id") if info.get(k)}
    model.robustops_lineage = json.dumps(found, sort_keys=True)
    model.robustops_random = report.random  # attacked with EoT (robustops.defences.randomized_of)
    name = source_name(cfg.source or "")
    return model, info | {"model": name, "name": info.get("name", name), "version": info.get("version"),
                          "run_id": info.get("run_id"), "lineage": found, "report": report}  # fmt: skip


def open_for_split(run: Config, split: Split) -> tuple[SourceModel, Blueprint, dict[str, Any], Split]:
    """The user's model (``run.model``) prepared on ``split``'s training images for a run's
    fine-tuning, with what fine-tuning and recording will need tried first
    (:func:`robustops.sources.check_tunable`): the blueprint its fine-tuned copies are saved
    under, facts about it, and the split labelled with its classes.

    Raises:
        ModelSourceError: as :func:`robustops.sources.prepare`, or the model cannot be trained
            here (an MLflow model saved as a program), or its outputs are not one per class of the data.
        ConfigError: the fine-tuning settings do not fit the model (``finetune.freeze``).
    """
    m, cfg = run.mlflow, run.model
    assert cfg.source is not None  # a trainable kind: robustops.catalog.check_trainable said so
    net, info = open_model(m, cfg)
    if isinstance(net, ProgramModule):  # an MLflow model saved as pt2
        raise ModelSourceError(
            f"model.source {cfg.source}: MLflow saved it as an exported program, which cannot be fine-tuned "
            "(its layers keep the modes they were exported in); log it with serialization_format='pickle', "
            "or give the factory and weights"
        )
    train = split.train
    model, info = _prepared(net, info, cfg, train)
    blueprint = source_blueprint(cfg, info, train, "fine-tuning")
    spectral = (
        any((d.regularize or run.regularize).spectral_norm for d in run.defences)
        or run.regularize.spectral_norm
    )
    check_tunable(model, run.finetune, train.shape, spectral)
    relabelled = Split(*(relabel(d, blueprint.classes) for d in (split.train, split.val, split.test)))
    return model, blueprint, info, relabelled


def source_blueprint(cfg: ModelConfig, info: dict[str, Any], ds: Dataset, purpose: str) -> Blueprint:
    """The blueprint a prepared user's model (``info`` from :func:`_prepared`) is saved under, for
    ``purpose`` (fine-tuning, registering): its settings, output kind and lineage, in ``ds``'s shape.

    Raises:
        ModelSourceError: its outputs are not exactly one per class of ``ds`` (a version must score
            the data it is registered with, and fine-tuning trains on every class).
    """
    report = info["report"]
    present = sorted(ds.classes[i] for i in np.unique(ds.y))  # ds may be labelled with the model's classes
    if sorted(report.classes) != present:
        raise ModelSourceError(
            f"the model's {report.n_outputs} outputs ({', '.join(report.classes[:5])}...) are not one per class "
            f"of the data ({', '.join(present[:5])}...): {purpose} needs exactly the data's classes; "
            "set model.classes so that they are, or score the model as it is with robustops evaluate "
            "(without --register)"
        )
    return Blueprint(
        name="source",
        shape=ds.shape,
        classes=report.classes,
        width=cfg.width,
        hidden=cfg.hidden,
        dropout=cfg.dropout,
        source={"model": cfg.model_dump(mode="json"), "outputs": report.outputs, "random": report.random,
                "lineage": info["lineage"]},
    )  # fmt: skip
