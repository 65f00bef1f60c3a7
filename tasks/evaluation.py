"""Evaluation tasks: extra evaluation sets, the scorecard of each model, and mCE against the baseline."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE
from torch import nn

from adapters import handoff, registered, sources
from adapters.caching import file_fingerprint, hash_inputs
from adapters.log import logger
from adapters.retries import RETRY, is_io_error
from robustops.config import Config, DefenceConfig, EvalConfig, LimitsConfig
from robustops.data import Dataset, Split
from robustops.data.eval_sets import read_eval_sets
from robustops.data.loaders import load_for_blueprint
from robustops.defences import recorded_defence, score_inputs
from robustops.evaluation.report import headline
from robustops.evaluation.scorecard import (
    Part,
    Scorecard,
    ScoreInputs,
    merge,
    relative_corruption_metrics,
    score,
)
from robustops.models import Blueprint
from robustops.training import TrainResult


def _sets_key(context, parameters) -> str:
    cfg = parameters["cfg"]
    paths = [s.path if s is not None else None for s in (cfg.shift_data, cfg.ood_data)]
    return f"{hash_inputs(context, parameters)}-" + "-".join(file_fingerprint(p) for p in paths)


@task(
    name="load-evaluation-sets",
    retries=2,
    retry_delay_seconds=1,
    retry_condition_fn=is_io_error,
    cache_key_fn=_sets_key,
    persist_result=True,
)
def load_eval_sets(
    cfg: EvalConfig,
    shape: tuple[int, int, int],
    classes: list[str],
    limits: LimitsConfig = LimitsConfig(),  # noqa: B008
) -> tuple[Dataset | None, np.ndarray | None]:
    """The optional shifted set (labelled with the training classes) and OOD set, in the model's
    input shape; taken from the CLI's pre-flight check when it read them."""
    held = handoff.take(handoff.sets_key(cfg, shape, classes, limits))
    return held if held is not None else read_eval_sets(cfg, shape, classes, limits)


@task(
    name="score-part",
    task_run_name="score-{name}-{part}",
    cache_key_fn=hash_inputs,
    persist_result=True,
)
def score_part(
    model: nn.Module | TrainResult,
    split: Split,
    cfg: EvalConfig,
    seed: int,
    device: str,
    name: str,
    part: Part,
    defence: DefenceConfig | None = None,
    shift: Dataset | None = None,
    ood: np.ndarray | None = None,
) -> Scorecard:
    """One part of a model's scorecard (an eps group of attacks, a corruption, the noise curves,
    ...; see ``robustops.evaluation.scorecard.plan``), so a runner can spread them over workers.
    ``model``: the model, or the training result that holds it (the pipeline passes the training
    task's future); ``defence``: the model's defence settings, whose own parts (e.g.
    certificates) it may score. The inputs travel as pieces, each hashed for the result cache
    and, on Dask, the data sent to the workers once (see ``adapters.runner``)."""
    start = time.perf_counter()
    card = score(part, score_inputs(model, split, cfg, seed, device, defence, shift, ood))
    card.seconds[part.label] = time.perf_counter() - start
    return card


@task(
    name="merge-scorecard", task_run_name="merge-{name}", cache_policy=NO_CACHE
)  # cheap; its model may not pickle
def merge_scorecard(
    parts: list[Scorecard],
    inputs: ScoreInputs,
    name: str,
    baseline: Scorecard | None = None,
    relative: bool = True,
) -> Scorecard:
    """One model's scorecard from its parts (in plan order), with mCE against ``baseline`` (None:
    the model is the baseline and scores 1). With ``relative=False`` (a model scored on its own,
    as by ``robustops evaluate``) there is no mCE. ``eval/seconds`` is the parts' compute time,
    summed."""
    card = merge(parts, inputs)
    if relative:
        card.metrics |= relative_corruption_metrics(card, baseline or card)
    card.metrics["eval/seconds"] = sum(card.seconds.values())
    flags = [c.name for c in card.masking if not c.passed]
    logger().info(
        "%s scores: %s%s",
        name,
        ", ".join(f"{k}={v:.4f}" for k, v in headline(card.metrics).items() if not k.endswith("/pass")),
        f"; MASKING SUSPECTED ({', '.join(flags)})" if flags else "",
    )
    return card


@task(name="load-registered-model", **RETRY)
def load_registered(cfg: Config, uri: str) -> tuple[nn.Module, dict[str, Any], DefenceConfig]:
    """The model a URI names, rebuilt from its checkpoint, with facts about it for the run's tags
    (its blueprint included) and the settings of the defence that trained it."""
    model, blueprint, info = registered.load_checkpoint(cfg.mlflow, uri)
    return model, info | {"blueprint": blueprint}, recorded_defence(blueprint, info["tag"], uri)


@task(name="load-model-source", retries=2, retry_delay_seconds=1, retry_condition_fn=is_io_error)
def load_source_model(cfg: Config, data: str) -> tuple[nn.Module, dict[str, Any], Dataset]:
    """A user's model (``model.source``) prepared for the labelled set at ``data`` (preprocessing
    folded in, output contract checked), facts about it (lineage, what the check found), and the
    set labelled with the model's classes. Taken from the CLI's pre-flight check when it read them."""
    held = handoff.take(handoff.source_key(cfg.model, data, cfg.limits))
    model, info, ds = (
        held if held is not None else sources.open_for_data(cfg.mlflow, cfg.model, data, cfg.limits)
    )
    for note in info["report"].warnings:
        logger().warning("%s: %s", info["model"], note)
    return model, info, ds


@task(name="load-evaluation-data", retries=2, retry_delay_seconds=1, retry_condition_fn=is_io_error)
def load_evaluation_data(
    path: str, blueprint: Blueprint, limits: LimitsConfig, convert: bool = False
) -> Dataset:
    """The data in the model's input shape; other channels or sizes are refused unless ``convert``.
    Taken from the CLI's pre-flight check when it read it."""
    held = handoff.take(handoff.batch_key(path, blueprint.shape, blueprint.classes, limits, convert))
    return held if held is not None else load_for_blueprint(path, blueprint, limits, convert)
