"""Data tasks: load, validate and split; thin rare classes; synthesize minority classes."""

from __future__ import annotations

import warnings
from typing import Any

from prefect import task

from adapters import handoff
from adapters.caching import file_fingerprint, hash_inputs
from adapters.log import logger
from adapters.retries import is_io_error
from robustops.config import DataConfig, LimitsConfig, SynthesisConfig
from robustops.data import Split, load_split
from robustops.data.synthesis import SynthesisResult, synthesize
from robustops.errors import DataWarning
from robustops.evaluation.synthetic import judge_synthetic


def _data_key(context: Any, parameters: dict[str, Any]) -> str:
    # The path alone does not identify the data: a rewritten file must not hit the cache.
    cfg = parameters["cfg"]
    files = "-".join(file_fingerprint(p) for p in [cfg.path, cfg.test_path, *cfg.extra_train])
    return f"{hash_inputs(context, parameters)}-{files}"


@task(
    name="load-and-validate-data",
    retries=2,
    retry_delay_seconds=1,
    retry_condition_fn=is_io_error,
    cache_key_fn=_data_key,
    persist_result=True,
)
def load_data(cfg: DataConfig, seed: int, limits: LimitsConfig = LimitsConfig()) -> Split:  # noqa: B008
    """Loads and validates the configured data, makes the seeded stratified split, thins the
    training split of any class named in ``train_class_fraction`` and appends ``extra_train``.
    What the loaders skipped (hidden folders, stray files) goes to the run's log. Data the CLI's
    pre-flight check already read is taken from it, not read again."""
    held = handoff.take(handoff.split_key(cfg, seed, limits))
    if held is not None:
        split, notes = held
    else:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always", DataWarning)
            split = load_split(cfg, seed, limits)
        notes = [str(w.message) for w in seen if issubclass(w.category, DataWarning)]
        for w in seen:
            if not issubclass(w.category, DataWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    for note in notes:
        logger().warning("%s", note)
    logger().info(
        "data %s: images of shape %s, %d classes, split %s%s",
        split.train.source,
        split.train.shape,
        split.train.num_classes,
        split.sizes(),
        f" (test: {cfg.test_path})" if cfg.test_path else "",
    )
    return split


@task(name="synthesize-minority-classes", cache_key_fn=hash_inputs, persist_result=True)
def synthesize_data(
    split: Split, cfg: SynthesisConfig, seed: int
) -> tuple[SynthesisResult, dict[str, float]]:
    """Fills minority classes of the training split; returns the result and the judge's scores."""
    result = synthesize(split.train, cfg, seed)
    log = logger()
    if not result.made:
        log.info("classes balanced within imbalance_ratio %.2f: no synthesis", cfg.imbalance_ratio)
        return result, {}
    quality = judge_synthetic(split.train, split.val, result.x, result.y, seed)
    log.info(
        "synthesized %s with %s; judge accuracy on them %.3f",
        result.made,
        cfg.generator,
        quality["synth/judge/acc"],
    )
    return result, quality
