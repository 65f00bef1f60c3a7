"""The ``robustness-evaluation`` flow: the scorecard of any model on any labelled dataset, as it
is, with no training.

    robustops evaluate --model models:/robustops-digits@champion --data shifted.npz
    robustops evaluate --model resnet.pt2 --data cifar.npz --set model.preprocess.mean=[...]

A model robustops registered comes back from its run's checkpoint (``torch.load(weights_only=True)``)
with its defence, and the data is read in its input shape and labelled with its class names. Any
other model is a source (``model.source``: a factory and its weights, an exported program,
TorchScript, a PyTorch model in MLflow): its declared preprocessing is folded in, its outputs are
checked against the data's classes, and the data is read as it is. A seeded quarter of the data
picks the confidence and OOD thresholds; the rest is scored, one ``score-part`` task per part of
the scorecard on the configured runner, merged as the pipeline merges them (without mCE: there
is no baseline). Everything is logged to one MLflow run tagged with the model URI.

With ``to_registry`` (``robustops evaluate --register``), a user's model is also logged as a
pipeline logs its models (checkpoint with the network saved to load without the user's code, the
drift reference from the threshold quarter, the guarded model), registered with its lineage and
put to the gate: the audited model can become the champion that the loop then protects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from adapters import sources
from adapters.registered import is_robustops_model, refuse_register
from adapters.runner import task_runner
from robustops import catalog
from robustops.config import Config, with_source
from robustops.cpus import use_threads
from robustops.data.split import split_for_thresholds
from robustops.defences import score_inputs, scorecard_parts, settings_from
from robustops.evaluation.scorecard import longest_first, plan
from robustops.stop import interrupted
from robustops.training import resolve_device
from tasks.evaluation import (
    load_evaluation_data,
    load_registered,
    load_source_model,
    merge_scorecard,
    score_part,
)
from tasks.gate import log_report, promote
from tasks.record import log_evaluation, register_model, withdraw_evaluation


@flow(name="robustness-evaluation", log_prints=True)
def robustness_evaluation(
    model_uri: str | None,
    data: str,
    cfg: Config = Config(),  # noqa: B008
    convert: bool = False,
    to_registry: bool = False,
) -> dict[str, Any]:
    """Scores a model on a labelled dataset and logs the scorecard to MLflow. ``model_uri``: a
    model robustops registered, or any model source (None: ``model.source`` of ``cfg``).
    ``convert``: convert images of other channels or size to a registered model's input (else
    they are refused). ``to_registry``: a user's model is also registered and put to the gate, as a
    pipeline's models are, so it can become the champion that predict, monitor and retraining
    then use."""
    cfg = catalog.resolve(cfg)
    device = resolve_device(cfg.device)
    # As in the pipeline: the flow's own thread runs torch on one thread, the runner's tasks get
    # the cores (see adapters.runner.task_runner).
    with use_threads(1):
        blueprint = None
        if model_uri is not None and is_robustops_model(cfg.mlflow, model_uri):
            if to_registry:
                refuse_register(model_uri)
            model, info, defence = load_registered(cfg, model_uri)
            ds = load_evaluation_data(data, info["blueprint"], cfg.limits, convert)
        else:
            cfg = with_source(cfg, model_uri)
            model, info, ds = load_source_model(cfg, data)
            defence = None
            if to_registry:
                # Scored as it is, with no robustops defence: served and scored later as such.
                blueprint = sources.source_blueprint(cfg.model, info, ds, "registering").model_copy(
                    update={"defence": settings_from("standard").model_dump(mode="json")}
                )
        split = split_for_thresholds(ds, cfg.seed)
        name, ev = info["model"], cfg.evaluation
        with task_runner(cfg.runner, ds.values_per_image) as submit:
            planned = plan(ev, scorecard_parts(defence))
            started = {
                part: submit(score_part, model, split, ev, cfg.seed, device, name, part, defence)
                for part in longest_first(planned)
            }
            parts = [started[part].result() for part in planned]
        inputs = score_inputs(model, split, ev, cfg.seed, device, defence)
        # A registered audit is the first version of its lineage, its own baseline: mCE 1 by
        # definition, as a pipeline's baseline, so the default gate (corruption/mce) applies.
        card = merge_scorecard(parts, inputs, name, relative=blueprint is not None)
    saved = (model, blueprint, split) if blueprint is not None else None
    run_id, model_uri_logged = log_evaluation(cfg, info, info["uri"], data, card, flow_run.get_id(), saved)
    out = {"run_id": run_id, "model": info, "metrics": card.metrics, "n": len(split.test.y)}
    if saved is None or model_uri_logged is None:
        return out
    # Registered and gated; on any failure the version is deleted (unless it already became the
    # champion) and the run marked failed, so nothing half-registered stays.
    try:
        source = f"{'folder' if Path(data).is_dir() else 'npz'}: {data}"
        version = register_model(
            cfg, model_uri_logged, run_id, card, name, split.test, run_id, None, blueprint, source
        )
        decision = promote(cfg, run_id, {name: card}, {name: version}) if cfg.gate.enabled else None
        log_report(cfg, run_id, {name: card}, decision)  # the report again, with the gate's verdict
    except BaseException as e:
        withdraw_evaluation(cfg.mlflow, run_id, interrupted(e))
        raise
    return out | {"version": version, "gate": decision.as_dict() if decision else None}
