"""The ``robustness-pipeline`` flow: data stage -> train the baseline and every defence -> score
each -> log and register in MLflow."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from adapters.runner import task_runner
from robustops import catalog
from robustops.config import Config
from robustops.cpus import use_threads
from robustops.defences import score_inputs, scorecard_parts
from robustops.evaluation.scorecard import longest_first, plan
from robustops.stop import interrupted
from robustops.training import resolve_device
from tasks.adversarial import generate_adversarial_set
from tasks.data import load_data, synthesize_data
from tasks.evaluation import load_eval_sets, merge_scorecard, score_part
from tasks.gate import log_report, promote
from tasks.record import (
    close_pipeline_run,
    log_data_stage,
    log_model_run,
    open_pipeline_run,
    register_model,
)
from tasks.sweep import sweep_killed_runs
from tasks.training import prepare_source, train_model


@flow(name="robustness-pipeline", log_prints=True)
def robustness_pipeline(cfg: Config = Config()) -> dict[str, Any]:  # noqa: B008 - pydantic default
    """Data stage (load, validate, split, synthesize), then for the baseline and each defence:
    training on the same split, the scorecard, an adversarial set, and everything recorded in
    MLflow (one nested run per model).

    Returns a summary: MLflow run ids, each model's metrics and registered version.
    """
    cfg = catalog.resolve(cfg)  # names checked, defences typed (a deployment passes plain blocks)
    catalog.check_trainable(cfg)
    device = resolve_device(cfg.device)
    sweep_killed_runs(cfg.mlflow)  # runs a killed pipeline left RUNNING: KILLED, versions deleted
    parent = open_pipeline_run(cfg, flow_run.get_id())
    ok, killed, models, decision = False, False, {}, None
    try:
        # From here the flow's own thread runs torch on one thread and the runner's tasks get
        # the cores (see task_runner), so the heavy work goes through submit.
        with use_threads(1):
            split = load_data(cfg.data, cfg.seed, cfg.limits)
            start = start_blueprint = None
            if cfg.model.source is not None:  # a user's model: every defence fine-tunes it
                start, start_blueprint, _, split = prepare_source(cfg, split)
            shift, ood = load_eval_sets(cfg.evaluation, split.test.shape, split.test.classes, cfg.limits)
            # Before anything is trained: a gate naming a metric no model will have fails every model.
            catalog.check_gate(cfg, split.test.shape, split.test.classes, shift is not None, ood is not None)
            with task_runner(cfg.runner, split.train.values_per_image) as submit:
                synth, quality = submit(synthesize_data, split, cfg.synthesis, cfg.seed).result()
                log_data_stage(cfg, parent, split, synth, quality)
                a = cfg.adversarial_set
                cards, versions = {}, {}
                plans = {
                    s.run_name: plan(cfg.evaluation, scorecard_parts(s), shift is not None)
                    for s in catalog.models_of(cfg)
                }
                # The training lane takes the models with the most scorecard parts (a defence's
                # own, such as certificates) first: their long parts then overlap the training
                # of the others instead of trailing after it. Each model seeds its own training,
                # so the order changes no model.
                specs = sorted(catalog.models_of(cfg), key=lambda s: -len(plans[s.run_name]))
                # Everything is submitted up front: the runner decides what runs at once (see
                # task_runner; Dask workers with runner.kind: dask). Futures passed on are dependencies.
                trained = {
                    s.run_name: submit(
                        train_model,
                        synth.train,
                        split.val,
                        s,
                        cfg.model,
                        cfg.train,
                        cfg.augment,
                        cfg.regularize,
                        cfg.seed,
                        device,
                        start,
                        start_blueprint,
                        cfg.finetune,
                    )  # fmt: skip
                    for s in specs
                }
                parts = {}
                for s in specs:
                    started = {
                        part: submit(
                            score_part,
                            trained[s.run_name],
                            split,
                            cfg.evaluation,
                            cfg.seed,
                            device,
                            s.run_name,
                            part,
                            s,
                            shift,
                            ood,
                        )  # fmt: skip
                        for part in longest_first(plans[s.run_name])
                    }
                    parts[s.run_name] = [started[part] for part in plans[s.run_name]]  # plan order
                asets = {
                    s.run_name: submit(
                        generate_adversarial_set,
                        trained[s.run_name],
                        split.test,
                        a.attack,
                        a.eps,
                        a.steps,
                        a.rel_step,
                        cfg.seed,
                        device,
                        a.max_samples,
                    )  # fmt: skip
                    for s in specs
                    if a.enabled
                }
                # Recording starts once every model is trained: saving a model (its export and signature)
                # may read and reset torch's global generator, which the training lane draws from, and
                # the models must not depend on when the recording ran.
                for f in trained.values():
                    f.wait()
                # Recorded in this process, in order: the baseline's card first (the others' mCE is
                # relative to it), and MLflow is written from one place.
                for spec in catalog.models_of(cfg):
                    name = spec.run_name
                    result = trained[name].result()
                    inputs = score_inputs(result, split, cfg.evaluation, cfg.seed, device, spec, shift, ood)
                    card = merge_scorecard(
                        [f.result() for f in parts[name]], inputs, name, cards.get("baseline")
                    )
                    aset = asets[name].result() if name in asets else None
                    run_id, model_uri = log_model_run(cfg, parent, spec, result, card, split, aset)
                    version = (
                        register_model(
                            cfg, model_uri, run_id, card, name, split.test, parent, spec, result.blueprint
                        )
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
    except BaseException as e:
        killed = interrupted(e)
        raise
    finally:
        # An unfinished run deletes the versions it registered: nothing half-registered stays.
        close_pipeline_run(
            cfg.mlflow,
            parent,
            ok,
            {n: m["metrics"] for n, m in models.items()},
            killed,
            decision=decision.as_dict() if decision else None,
            gate=cfg.gate,
        )
    return {
        "flow_run_id": flow_run.get_id(),
        "parent_run_id": parent,
        "models": models,
        "registered_model": cfg.mlflow.registered_model if cfg.mlflow.register_model else None,
        "version": models["baseline"]["version"],
        "gate": decision.as_dict() if decision else None,
        "sizes": split.sizes(),
        "synthesized": synth.made,
    }
