"""The ``robustness-pipeline`` flow: data stage -> train the baseline and every defence -> score
each -> log and register in MLflow."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from robustops.config import Config, DefenceConfig, SmoothingConfig, StandardConfig
from robustops.training import resolve_device
from tasks.adversarial import generate_adversarial_set
from tasks.data import load_data, synthesize_data
from tasks.evaluation import evaluate_model, load_eval_sets
from tasks.gate import log_report, promote
from tasks.record import (
    close_pipeline_run,
    log_data_stage,
    log_model_run,
    open_pipeline_run,
    register_model,
)
from tasks.training import train_model

BASELINE = StandardConfig(label="baseline")


def model_specs(cfg: Config) -> list[DefenceConfig]:
    """The baseline (plain training under the augmentation policy) and every configured defence."""
    return [BASELINE, *cfg.defences]


@flow(name="robustness-pipeline", log_prints=True)
def robustness_pipeline(cfg: Config = Config()) -> dict[str, Any]:  # noqa: B008 - pydantic default
    """Data stage (load, validate, split, synthesize), then for the baseline and each defence:
    training on the same split, the scorecard, an adversarial set, and everything recorded in
    MLflow (one nested run per model).

    Returns a summary: MLflow run ids, each model's metrics and registered version.
    """
    device = resolve_device(cfg.device)
    parent = open_pipeline_run(cfg, flow_run.get_id())
    ok, models, decision = False, {}, None
    try:
        split = load_data(cfg.data, cfg.seed)
        synth, quality = synthesize_data(split, cfg.synthesis, cfg.seed)
        log_data_stage(cfg, parent, split, synth, quality)
        a = cfg.adversarial_set
        shift, ood = load_eval_sets(cfg.evaluation, split.test.shape, split.test.classes)
        cards, versions = {}, {}
        for spec in model_specs(cfg):
            name = spec.run_name
            result = train_model(
                synth.train,
                split.val,
                spec,
                cfg.model,
                cfg.train,
                cfg.augment,
                cfg.regularize,
                cfg.seed,
                device,
            )
            smoothing = spec if isinstance(spec, SmoothingConfig) else None
            card = evaluate_model(
                result.model,
                split,
                cfg.evaluation,
                cfg.seed,
                device,
                name,
                smoothing,
                shift,
                ood,
                cards.get("baseline"),
            )
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
            run_id, model_uri = log_model_run(cfg, parent, spec, result, card, split, aset)
            version = (
                register_model(cfg.mlflow, model_uri, run_id, card, name)
                if cfg.mlflow.register_model
                else None
            )
            cards[name] = card
            if version:
                versions[name] = version
            models[name] = {
                "run_id": run_id,
                "model_uri": model_uri,
                "version": version,
                "defence": spec.name,
                "metrics": card.metrics | {"train/seconds": result.seconds},
            }
        decision = promote(cfg, parent, cards, versions) if cfg.gate.enabled and versions else None
        log_report(cfg, parent, cards, decision)
        ok = True
    finally:
        close_pipeline_run(cfg.mlflow, parent, ok, {n: m["metrics"] for n, m in models.items()})
    return {
        "parent_run_id": parent,
        "models": models,
        "registered_model": cfg.mlflow.registered_model if cfg.mlflow.register_model else None,
        "version": models["baseline"]["version"],
        "gate": decision.as_dict() if decision else None,
        "sizes": split.sizes(),
        "synthesized": synth.made,
    }
