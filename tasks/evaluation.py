"""Evaluation tasks: extra evaluation sets, the scorecard of each model, and mCE against the baseline."""

from __future__ import annotations

import time

import numpy as np
from prefect import task
from torch import nn

from robustops.config import DefenceConfig, EvalConfig, LimitsConfig
from robustops.data import Dataset, Split
from robustops.data.loaders import load_for_model, load_images
from robustops.defences import scorecard_parts
from robustops.evaluation import Scorecard, evaluate
from robustops.evaluation.report import headline
from robustops.evaluation.scorecard import evaluate_part, merge, relative_corruption_metrics
from robustops.training import TrainResult
from tasks.caching import file_fingerprint, hash_inputs
from tasks.data import is_io_error
from tasks.log import logger


def read_eval_sets(
    cfg: EvalConfig, shape: tuple[int, int, int], classes: list[str], limits: LimitsConfig
) -> tuple[Dataset | None, np.ndarray | None]:
    """The optional shifted set (labelled with the training classes) and OOD images, in the model's
    input shape; also the CLI's check before a run starts."""
    shift = ood = None
    if cfg.shift_data is not None:
        s = cfg.shift_data
        shift = load_for_model(s.source, s.path, shape, classes, "evaluation.shift_data", limits)
    if cfg.ood_data is not None:
        ood = load_images(cfg.ood_data.path, shape, limits)
    return shift, ood


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
    input shape."""
    return read_eval_sets(cfg, shape, classes, limits)


@task(
    name="evaluate-model",
    task_run_name="evaluate-{name}",
    cache_key_fn=hash_inputs,
    persist_result=True,
)
def evaluate_model(
    model: nn.Module,
    split: Split,
    cfg: EvalConfig,
    seed: int,
    device: str,
    name: str = "model",
    defence: DefenceConfig | None = None,
    shift: Dataset | None = None,
    ood: np.ndarray | None = None,
    baseline: Scorecard | None = None,
    relative: bool = True,
) -> Scorecard:
    """The scorecard of one model on the test split (thresholds chosen on validation), with mCE
    against ``baseline`` when given; the baseline itself passes None and scores 1. With
    ``relative=False`` (a model scored on its own) there is no mCE. Scores the parts one after
    another; the pipeline fans them out instead (:func:`score_part`, :func:`merge_scorecard`)."""
    start = time.perf_counter()
    train = split.train if len(split.train.y) else None
    extra = scorecard_parts(defence)
    card = evaluate(model, split.test, cfg, seed, device, extra, split.val, train, shift, ood)
    return _finish(card, name, baseline, relative, time.perf_counter() - start)


@task(
    name="score-part",
    task_run_name="score-{name}-{part}",
    cache_key_fn=hash_inputs,
    persist_result=True,
)
def score_part(
    trained: TrainResult,
    split: Split,
    cfg: EvalConfig,
    seed: int,
    device: str,
    name: str,
    part: str,
    defence: DefenceConfig | None = None,
    shift: Dataset | None = None,
    ood: np.ndarray | None = None,
) -> Scorecard:
    """One part of a model's scorecard (an eps group of attacks, a corruption, the noise curves,
    ...; see ``robustops.evaluation.scorecard.plan``), so a runner can spread them over workers.
    ``defence``: the model's defence settings, whose own parts (e.g. certificates) it may score."""
    start = time.perf_counter()
    train = split.train if len(split.train.y) else None
    extra = scorecard_parts(defence)
    card = evaluate_part(
        part, trained.model, split.test, cfg, seed, device, extra, split.val, train, shift, ood
    )
    card.seconds[part] = time.perf_counter() - start
    return card


@task(name="merge-scorecard", task_run_name="merge-{name}")
def merge_scorecard(
    parts: list[Scorecard],
    split: Split,
    cfg: EvalConfig,
    seed: int,
    name: str,
    baseline: Scorecard | None = None,
) -> Scorecard:
    """One model's scorecard from its parts, with mCE against ``baseline`` (None: the model is the
    baseline). ``eval/seconds`` is the parts' compute time, summed."""
    card = merge(parts, split.test, cfg, seed)
    return _finish(card, name, baseline, True, sum(card.seconds.values()))


def _finish(
    card: Scorecard, name: str, baseline: Scorecard | None, relative: bool, seconds: float
) -> Scorecard:
    if relative:
        card.metrics |= relative_corruption_metrics(card, baseline or card)
    card.metrics["eval/seconds"] = seconds
    flags = [c.name for c in card.masking if not c.passed]
    logger().info(
        "%s scores: %s%s",
        name,
        ", ".join(f"{k}={v:.4f}" for k, v in headline(card.metrics).items() if not k.endswith("/pass")),
        f"; MASKING SUSPECTED ({', '.join(flags)})" if flags else "",
    )
    return card
