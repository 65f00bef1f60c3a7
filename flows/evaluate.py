"""The ``robustness-evaluation`` flow: the scorecard of any registered model on any dataset.

    robustops evaluate --model models:/robustops-digits@champion --data shifted.npz

The model comes back from its run's checkpoint (``torch.load(weights_only=True)``); the data is
an .npz file or an image folder in the training formats, converted to the model's input shape and
labelled with its class names. A seeded quarter of the data picks the confidence and OOD
thresholds; the rest is scored. Everything is logged to one MLflow run tagged with the model URI.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow, task
from prefect.runtime import flow_run
from torch import nn

from robustops import catalog
from robustops.config import Config, DataSource, DefenceConfig, LimitsConfig
from robustops.cpus import torch_threads, use_threads
from robustops.data import Dataset, Split
from robustops.data.loaders import load_for_model
from robustops.errors import ModelNotFoundError, RobustopsError
from robustops.evaluation.plots import scorecard_figures
from robustops.models import Blueprint
from robustops.training import checkpoint, resolve_device
from tasks import tracking
from tasks.data import is_io_error
from tasks.evaluation import evaluate_model
from tasks.gate import log_report
from tasks.record import RETRY, scorecard_json


@task(name="load-registered-model", **RETRY)
def load_registered(cfg: Config, uri: str) -> tuple[nn.Module, dict[str, Any], DefenceConfig]:
    """The model a URI names, rebuilt from its checkpoint, with facts about it for the run's tags
    and the settings of the defence that trained it (recorded in the checkpoint's blueprint)."""
    mv = tracking.resolve_model(cfg.mlflow, uri)
    run = tracking.run_info(cfg.mlflow, mv.run_id)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            folder = tracking.download(cfg.mlflow, mv.run_id, "checkpoint", tmp)
        except RobustopsError:  # the tracking server went away: say so, not "no checkpoint"
            raise
        except Exception:  # noqa: BLE001 - any other failure here means the checkpoint is not there
            raise ModelNotFoundError(
                f"{uri} (run {mv.run_id}) has no robustops checkpoint; evaluate a model registered by robustops"
            ) from None
        try:
            model = checkpoint.load(folder)
            blueprint = checkpoint.read_blueprint(folder)
        except checkpoint.CheckpointError as e:  # name the registered version, not a temporary folder
            raise checkpoint.CheckpointError(
                f"{uri} ({mv.name} version {mv.version}): {str(e).replace(str(tmp) + '/', '')}"
            ) from None
    defence = recorded_defence(blueprint, run.data.tags.get("robustops.defence"), uri)
    info = {
        "name": mv.name,
        "version": mv.version,
        "run_id": mv.run_id,
        "model": run.data.tags.get("robustops.model", mv.name),
    }
    return model, info | {"blueprint": blueprint}, defence


def recorded_defence(blueprint: Blueprint, tag: str | None, uri: str) -> DefenceConfig:
    """The defence settings a checkpoint's blueprint records. A checkpoint from before blueprints
    recorded them gets the defaults of the defence its run's tag names, with a warning."""
    if blueprint.defence is not None:
        return catalog.defence_settings(blueprint.defence, f"{uri}: the checkpoint's defence")
    warnings.warn(
        f"{uri}: its checkpoint does not record its defence's settings (it predates that); scored "
        f"with the defaults of {tag or 'standard'}: retrain it to score it with its own",
        stacklevel=2,
    )
    return catalog.defence_settings(tag or "standard", f"{uri}: the run's defence")


def split_for_thresholds(ds: Dataset, seed: int, share: float = 0.25) -> Split:
    """A seeded, stratified quarter of each class (at least one image of classes with two or more)
    picks the thresholds; the rest is scored. Classes with one image go to the scored part."""
    rng = np.random.default_rng(seed)
    val, test = [], []
    for c in np.unique(ds.y):
        idx = rng.permutation(np.flatnonzero(ds.y == c))
        k = max(1, round(len(idx) * share)) if len(idx) >= 2 else 0
        val.append(idx[:k])
        test.append(idx[k:])
    v, t = np.sort(np.concatenate(val)), np.sort(np.concatenate(test))
    part = lambda i: Dataset(ds.x[i], ds.y[i], ds.classes, ds.source)  # noqa: E731
    return Split(part(t[:0]), part(v), part(t))


def read_data(path: str, blueprint: Blueprint, limits: LimitsConfig, convert: bool = False) -> Dataset:
    """The data in the model's input shape; other channels or sizes are refused unless ``convert``."""
    source = DataSource.FOLDER if Path(path).is_dir() else DataSource.NPZ
    return load_for_model(source, Path(path), blueprint.shape, blueprint.classes, "--data", limits, convert)


@task(name="load-evaluation-data", retries=2, retry_delay_seconds=1, retry_condition_fn=is_io_error)
def load_data(path: str, blueprint: Blueprint, limits: LimitsConfig, convert: bool = False) -> Dataset:
    return read_data(path, blueprint, limits, convert)


def check_inputs(cfg: Config, uri: str, data: str, convert: bool = False) -> None:
    """Resolves the model and validates the data without Prefect: the CLI's early check."""
    blueprint = load_registered.fn(cfg, uri)[1]["blueprint"]
    read_data(data, blueprint, cfg.limits, convert)


@task(name="log-evaluation", **RETRY)
def log_evaluation(
    cfg: Config, info: dict[str, Any], uri: str, data: str, card, flow_run_id: str | None
) -> str:
    m = cfg.mlflow
    tags = {"robustops.kind": "evaluation", "robustops.model_uri": uri, "robustops.data": data,
            "robustops.model": info["model"], "robustops.source_run": info["run_id"]}  # fmt: skip
    if flow_run_id:
        tags["prefect.flow_run_id"] = flow_run_id
    run_id = tracking.start_run(m, f"evaluate {info['name']} v{info['version']}", tags=tags)
    ok = False
    try:
        tracking.log_params(m, run_id, {"model_uri": uri, "data": data, "model_version": info["version"]})
        # Curves as stepped metrics, as on a pipeline's model runs; the gate's metrics stay scalars.
        tracking.log_scorecard(m, run_id, card.metrics, keep=tracking.gate_metrics(cfg.gate))
        tracking.log_json(m, run_id, scorecard_json(card), "evaluation/scorecard.json")
        tracking.log_json(m, run_id, card.attacks, "evaluation/attacks.json")
        for path, fig in scorecard_figures(card, info["model"]).items():
            tracking.log_figure(m, run_id, fig, path)
        log_report.fn(cfg, run_id, {info["model"]: card}, None)
        ok = True
    finally:
        tracking.end_run(m, run_id, ok)
    tracking.link_in_prefect(
        m, run_id, "evaluation", f"MLflow run evaluate {info['name']} v{info['version']}",
        [f"{uri} on {data}: {card.n_test} images scored."],
    )  # fmt: skip
    return run_id


@flow(name="robustness-evaluation", log_prints=True)
def robustness_evaluation(
    model_uri: str,
    data: str,
    cfg: Config = Config(),  # noqa: B008
    convert: bool = False,
) -> dict[str, Any]:
    """Scores a registered model on a dataset and logs the scorecard to MLflow. ``convert``:
    convert images of other channels or size to the model's input (else they are refused)."""
    cfg = catalog.resolve(cfg)
    model, info, defence = load_registered(cfg, model_uri)
    ds = load_data(data, info["blueprint"], cfg.limits, convert)
    split = split_for_thresholds(ds, cfg.seed)
    with use_threads(torch_threads(ds.values_per_image)):
        card = evaluate_model(
            model,
            split,
            cfg.evaluation,
            cfg.seed,
            resolve_device(cfg.device),
            info["model"],
            defence,
            relative=False,
        )
    run_id = log_evaluation(cfg, info, model_uri, data, card, flow_run.get_id())
    return {"run_id": run_id, "model": info, "metrics": card.metrics, "n": len(split.test.y)}
