"""The ``robustness-pipeline`` flow: data stage -> train -> evaluate -> log and register in MLflow."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from robustops.config import Config
from robustops.training import resolve_device
from tasks.adversarial import generate_adversarial_set
from tasks.data import load_data, synthesize_data
from tasks.evaluation import evaluate_model
from tasks.record import (
    close_pipeline_run,
    log_data_stage,
    log_model_run,
    open_pipeline_run,
    register_model,
)
from tasks.training import train_model


@flow(name="robustness-pipeline", log_prints=True)
def robustness_pipeline(cfg: Config = Config()) -> dict[str, Any]:  # noqa: B008 - pydantic default
    """Data stage (load, validate, split, synthesize), training under the augmentation policy,
    scorecard, adversarial set, and everything recorded in MLflow.

    Returns a summary: MLflow run ids, the headline metrics and the registered version.
    """
    device = resolve_device(cfg.device)
    parent = open_pipeline_run(cfg, flow_run.get_id())
    ok, scores = False, {}
    try:
        split = load_data(cfg.data, cfg.seed)
        synth, quality = synthesize_data(split, cfg.synthesis, cfg.seed)
        log_data_stage(cfg, parent, split, synth, quality)
        result = train_model(synth.train, split.val, cfg.model, cfg.train, cfg.augment, cfg.seed, device)
        card = evaluate_model(result.model, split.test, cfg.evaluation, cfg.seed, device)
        a = cfg.adversarial_set
        aset = (
            generate_adversarial_set(
                result.model,
                split.test,
                a.attack,
                a.eps,
                a.steps,
                a.rel_step,
                cfg.seed,
                device,
                a.max_samples,
            )
            if a.enabled
            else None
        )
        run_id, model_uri = log_model_run(cfg, parent, "baseline", result, card, split, aset)
        scores["baseline"] = card.metrics
        version = register_model(cfg.mlflow, model_uri, run_id, card) if cfg.mlflow.register_model else None
        ok = True
    finally:
        close_pipeline_run(cfg.mlflow, parent, ok, scores)
    return {
        "parent_run_id": parent,
        "models": {"baseline": {"run_id": run_id, "model_uri": model_uri, "metrics": card.metrics}},
        "registered_model": cfg.mlflow.registered_model if version else None,
        "version": version,
        "sizes": split.sizes(),
        "synthesized": synth.made,
    }
