"""Pre-flight checks: what a command reads, validated before any Prefect server starts, so a bad
input ends in one ``error:`` line. A model is checked by its version and blueprint (no weights);
data is read in full once and handed on to the task that uses it (adapters/handoff.py)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from adapters import handoff, registered, sources
from robustops.catalog import check_gate, check_trainable
from robustops.config import Config, with_source
from robustops.data import Split, load_split
from robustops.data.corruption_files import check_benchmark
from robustops.data.eval_sets import read_eval_sets
from robustops.data.loaders import load_batch, load_for_blueprint
from robustops.errors import DataValidationError, DataWarning
from robustops.monitoring.monitor import check_batch_size
from robustops.training import resolve_device
from robustops.training.standard import precision


def run_inputs(cfg: Config) -> Split:
    """Everything a pipeline run reads: the data, its test file and extra training data, a
    user's model (``model.source``), the shifted and OOD sets, and the gate's names against the metrics the run will produce.
    Returns the split."""
    precision(cfg.train, resolve_device(cfg.device))  # fp16 without a GPU: refused here
    check_trainable(cfg)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", DataWarning)
        split = load_split(cfg.data, cfg.seed, cfg.limits)
    for w in seen:  # shown here, and handed on for the run's log
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    notes = [str(w.message) for w in seen if issubclass(w.category, DataWarning)]
    if cfg.model.source is not None:  # the user's model opened and checked on this data
        prepared = sources.open_for_split(cfg, split)
        handoff.hold(handoff.source_split_key(cfg.model, cfg.data, cfg.seed, cfg.limits), prepared)
    shape, classes = split.test.shape, split.test.classes
    shift, ood = read_eval_sets(cfg.evaluation, shape, classes, cfg.limits)
    _benchmark(cfg, shape, classes)
    check_gate(cfg, shape, classes, shift is not None, ood is not None)
    handoff.hold(handoff.split_key(cfg.data, cfg.seed, cfg.limits), (split, notes))
    handoff.hold(handoff.sets_key(cfg.evaluation, shape, classes, cfg.limits), (shift, ood))
    return split


def _exists(data: str) -> None:
    if not Path(data).exists():
        raise DataValidationError(f"{data}: not found; pass an .npz file or an image folder with --data")


def evaluate_inputs(
    cfg: Config, uri: str | None, data: str, convert: bool = False, register: bool = False
) -> None:
    """The model to score and the data: a registered model's version and blueprint and the data in
    its input shape, or a user's model (``uri`` or ``model.source``) opened, prepared and checked
    on the data. With ``register``: a user's model whose outputs are the data's classes, and a
    gate that names only what the audit will score."""
    _exists(data)
    if uri is None or not registered.is_robustops_model(cfg.mlflow, uri):
        cfg = with_source(cfg, uri)
        opened = sources.open_for_data(cfg.mlflow, cfg.model, data, cfg.limits)
        _benchmark(cfg, opened[2].shape, opened[2].classes)
        if register:
            _, info, ds = opened
            sources.source_blueprint(cfg.model, info, ds, "registering")
            check_gate(cfg, ds.shape, ds.classes)
        handoff.hold(handoff.source_key(cfg.model, data, cfg.limits), opened)
        return
    if register:
        registered.refuse_register(uri)
    blueprint, _ = registered.load_blueprint(cfg.mlflow, uri)
    _benchmark(cfg, blueprint.shape, blueprint.classes)
    ds = load_for_blueprint(data, blueprint, cfg.limits, convert)
    handoff.hold(handoff.batch_key(data, blueprint.shape, blueprint.classes, cfg.limits, convert), ds)


def monitor_inputs(cfg: Config, uri: str, data: str, convert: bool = False) -> None:
    """The monitored model (its version and blueprint) and a batch the drift tests can use."""
    _exists(data)
    blueprint, _ = registered.load_blueprint(cfg.mlflow, uri)
    x, y = load_batch(data, blueprint.shape, blueprint.classes, cfg.limits, convert)
    check_batch_size(len(x), cfg.monitor.min_batch, data)
    handoff.hold(handoff.batch_key(data, blueprint.shape, blueprint.classes, cfg.limits, convert), (x, y))


def champion_and_batch(cfg: Config, uri: str, data: str, convert: bool = False) -> tuple[Any, ...]:
    """The guarded model a URI names with its reference and version facts, and the batch in its
    input shape: what ``robustops predict`` scores."""
    _exists(data)
    guarded, ref, champion = registered.load_champion(cfg.mlflow, uri)
    s = guarded.settings
    x, y = load_batch(data, tuple(s.shape), s.classes, cfg.limits, convert)
    return guarded, ref, champion, x, y


def _benchmark(cfg: Config, shape: tuple[int, int, int], classes: list[str]) -> None:
    """The corruption benchmark's files, when one is configured: each one there and fitting the model."""
    if cfg.evaluation.corruption_benchmark is not None:
        check_benchmark(cfg.evaluation.corruption_benchmark, tuple(shape), list(classes))
