"""Tasks that record a pipeline in MLflow: the parent run, one nested run per model, the registry.

Tracking calls retry with backoff (the server may blip); nothing is registered until the model is
fully logged, so a failure never leaves a half-written version in the registry.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from prefect import task
from torch import nn

from adapters import tracking
from adapters.log import logger
from adapters.recording import (
    ReferenceFit,
    fail_quietly,
    log_adversarial_set,
    log_certificates,
    log_corruption_settings,
    log_model,
    scorecard_link,
)
from adapters.registry import describe_version
from adapters.retries import RETRY
from adapters.sweep import OWNER_TAG, owner
from robustops.config import Config, DefenceConfig, GateConfig, MlflowConfig, flatten, to_yaml
from robustops.data import Dataset, Split
from robustops.data.adversarial import AdversarialSet
from robustops.data.synthesis import SynthesisResult
from robustops.evaluation import Scorecard
from robustops.evaluation.gate import outcome_images, worst_case_key
from robustops.evaluation.html import report_meta, scorecard_report
from robustops.evaluation.notes import evaluation_note, pipeline_note
from robustops.evaluation.plots import image_grid, scorecard_figures
from robustops.evaluation.report import markdown_table
from robustops.evaluation.version_tags import (
    FINGERPRINT_TAG,
    OUTCOMES,
    data_tags,
    lineage_tags,
    outcomes_of,
    score,
)
from robustops.models import Blueprint
from robustops.names import segment
from robustops.stop import interrupted
from robustops.training import TrainResult


@task(name="open-pipeline-run", **RETRY)
def open_pipeline_run(cfg: Config, flow_run_id: str | None) -> str:
    """Starts the parent run and logs the resolved config as params and as an artifact."""
    tags = {"robustops.kind": "pipeline", OWNER_TAG: owner()}  # a later run sweeps it if we are killed
    if flow_run_id:
        tags["prefect.flow_run_id"] = flow_run_id
    run_id = tracking.start_run(cfg.mlflow, "robustness-pipeline", tags=tags)
    try:
        tracking.log_params(cfg.mlflow, run_id, flatten(cfg))
        tracking.log_text(cfg.mlflow, run_id, to_yaml(cfg), "config/resolved.yaml")
    except BaseException:
        fail_quietly(cfg.mlflow, run_id)  # the flow never gets this run's id to close it
        raise
    return run_id


@task(name="log-data-stage", **RETRY)
def log_data_stage(
    cfg: Config, run_id: str, split: Split, synth: SynthesisResult, quality: dict[str, float]
) -> None:
    """Counts per class before and after synthesis, sample grids, augmentation and held-out settings."""
    m = cfg.mlflow
    train = split.train
    sizes = split.sizes()
    info = {
        "source": train.source,
        "shape": list(train.shape),
        "classes": train.classes,
        "sizes": sizes,
        "class_counts": {name: part.counts() for name, part in vars(split).items()},
    }
    tracking.log_json(m, run_id, info, "data/summary.json")
    tracking.log_params(m, run_id, {"data.num_classes": train.num_classes, "data.shape": list(train.shape)})
    metrics = {f"data/n_{k}": v for k, v in sizes.items()} | {"synth/n": float(len(synth.y))} | quality
    for name in train.classes:
        metrics[f"data/class_{segment(name)}/n_real"] = synth.before[name]
        metrics[f"data/class_{segment(name)}/n_synthetic"] = synth.made.get(name, 0)
    tracking.log_metrics(m, run_id, metrics)
    tracking.log_json(
        m,
        run_id,
        {"generator": synth.generator, "made": synth.made, "before": synth.before, "after": synth.after,
         "settings": cfg.synthesis.model_dump(mode="json"), "quality": quality},
        "data/synthesis.json",
    )  # fmt: skip
    if synth.made:
        rows = {}
        k = cfg.synthesis.grid_per_class
        for name in synth.made:
            c = train.classes.index(name)
            rows[f"{name} real"] = train.x[train.y == c][:k]
            rows[f"{name} synthetic"] = synth.x[synth.y == c][:k]
        fig = image_grid(rows, f"synthetic samples ({synth.generator}) beside real ones", per_row=k)
        tracking.log_figure(m, run_id, fig, "data/synthetic_samples.png")
    log_corruption_settings(cfg, run_id, split)


@task(name="log-model-run", task_run_name="log-{defence.run_name}", **RETRY)
def log_model_run(
    cfg: Config,
    parent_id: str,
    defence: DefenceConfig,
    result: TrainResult,
    card: Scorecard,
    split: Split,
    aset: AdversarialSet | None = None,
) -> tuple[str, str]:
    """Logs one trained model in a nested run: params, curves, scores, plots, its adversarial set,
    a checkpoint and the model. Returns (run id, model URI)."""
    m = cfg.mlflow
    name = defence.run_name
    tags = {"robustops.kind": "model", "robustops.model": name, "robustops.defence": defence.name}
    tags |= lineage_tags(cfg, defence, result.blueprint)
    run_id = tracking.start_run(m, name, parent_id=parent_id, tags=tags)
    ok, killed = False, False
    try:
        settings = {f"defence.{k}": v for k, v in defence.model_dump(mode="json").items()}
        tracking.log_params(m, run_id, flatten(cfg) | settings)
        tracking.log_history(m, run_id, result.history)
        # Curves (accuracy over eps, severity, noise, radius) as stepped metrics, so the UI draws
        # lines and the compare view overlays models; the gate's metrics stay scalars by name.
        tracking.log_scorecard(
            m,
            run_id,
            card.metrics
            | result.extras
            | {
                "train/best_epoch": result.best_epoch,
                "val/best_acc": result.best_val_acc,
                "train/seconds": result.seconds,
            },
            keep=tracking.gate_metrics(cfg.gate),
        )
        if result.stop_reason:
            tracking.set_tag(m, run_id, "robustops.stop_reason", result.stop_reason)
        if not card.masking_passed:
            failed = ", ".join(c.name for c in card.masking if not c.passed)
            tracking.set_tag(m, run_id, "robustops.masking", f"FAILED: {failed}")
        tracking.log_json(m, run_id, card.attacks, "evaluation/attacks.json")
        tracking.log_json(m, run_id, card.as_json(), "evaluation/scorecard.json")
        for path, fig in scorecard_figures(card, name).items():
            tracking.log_figure(m, run_id, fig, path)
        log_certificates(m, run_id, card)
        if aset is not None and len(aset.y):
            log_adversarial_set(m, run_id, aset, split.test.x)
        tracking.client(m)  # sets the tracking URI for the model logging below
        with tracking.translated(m):  # MLflow's fluent model logging, outside the adapter
            model_uri = log_model(
                m, run_id, result.model, result.blueprint, card, split, defence, ReferenceFit.of(cfg)
            )
        stop = f" Stopped: {result.stop_reason}." if result.stop_reason else ""
        tracking.set_note(
            m,
            run_id,
            f"**{name}** (defence `{defence.name}`, model {result.blueprint.name}, augment: "
            f"{cfg.augment.policy.value}), best epoch {result.best_epoch}, trained in {result.seconds:.1f} s.{stop} "
            f"Test split of {card.n_test} images, attacks on {card.n_attacked}.\n\n"
            + markdown_table({name: card.metrics}),
        )
        ok = True
    except BaseException as e:
        killed = interrupted(e)
        raise
    finally:
        if ok:
            tracking.end_run(m, run_id, True)
        else:
            fail_quietly(m, run_id, killed)
    return run_id, model_uri


@task(name="register-model", task_run_name="register-{name}", **RETRY)
def register_model(
    cfg: Config,
    model_uri: str,
    run_id: str,
    card: Scorecard,
    name: str,
    test: Dataset,
    parent_id: str,
    defence: DefenceConfig | None = None,
    blueprint: Blueprint | None = None,
    data: str | None = None,
) -> str:
    """Registers a fully logged model as a new version that says what it is at a glance.

    Tags: its name, the gate's primary score and the worst case over every attack (not a single
    attack's score, which gradient masking can inflate), the masking checks, the data it was
    trained on (``data.source``, or ``data`` where given: the file an audited model was scored on;
    ``data.shape``, ``data.classes``: the gate refuses to compare models of other data), its lineage (``lineage.*``: the model it started from, a user's files'
    SHA-256 and preprocessing, the defence and its settings), the parent run; its Description links the run's HTML scorecard (the
    gate adds its verdict on top). Its per-image correctness on ``gate.primary`` goes to its run
    as ``gate/primary_outcomes.npz``, with a fingerprint of those test images, so a later gate can
    test a challenger against it on the same images (McNemar) instead of by a margin.
    """
    m, metrics = cfg.mlflow, card.metrics
    worst = worst_case_key(metrics, cfg.gate.primary)
    failed = [c.name for c in card.masking if not c.passed]
    tags = (
        {
            "robustops.model": name,
            "clean_acc": f"{metrics['clean/acc']:.4f}" if "clean/acc" in metrics else "not scored",
            "primary": score(metrics, cfg.gate.primary),
            "worst_case": score(metrics, worst),
            "masking": "FAILED: " + ", ".join(failed)
            if failed
            else "passed"
            if card.masking
            else "not checked",
            "parent_run": parent_id,
        }
        | data_tags(cfg, test, data)
        | lineage_tags(cfg, defence, blueprint)
    )
    outcomes = outcomes_of(card, cfg)
    images = (
        outcome_images(test, cfg.evaluation.max_samples, cfg.seed, len(outcomes))
        if outcomes is not None
        else None
    )
    if outcomes is not None and images is not None:
        from robustops.evaluation.gate import images_fingerprint

        tags[FINGERPRINT_TAG] = images_fingerprint(*images)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(OUTCOMES).name
            np.savez(path, correct=outcomes.astype(bool), metric=np.str_(cfg.gate.primary),
                     fingerprint=np.str_(tags[FINGERPRINT_TAG]))  # fmt: skip
            tracking.log_file(m, run_id, path, str(Path(OUTCOMES).parent))
    version = tracking.register(m, model_uri, run_id, tags)
    describe_version(
        m,
        version,
        f"**{name}**, {'scored' if data else 'trained'} on {tags['data.source']} ({tags['data.shape']}, {test.num_classes} classes).\n\n"
        f"Primary: {tags['primary']}; worst case: {tags['worst_case']}; gradient masking: {tags['masking']}; "
        f"clean/acc = {tags['clean_acc']}.\n\n"
        f"Scorecard: {scorecard_link(m, parent_id)}. Model run `{run_id}`."
        if parent_id != run_id
        else f"Scorecard: {scorecard_link(m, run_id, 'the audit run')}, which holds the model.",
    )
    logger().info("registered %s version %s", m.registered_model, version)
    return version


@task(name="close-pipeline-run", **RETRY)
def close_pipeline_run(
    mcfg: MlflowConfig,
    run_id: str,
    ok: bool,
    scores: dict[str, dict[str, float]] | None = None,
    killed: bool = False,
    decision: Any = None,
    gate: GateConfig | None = None,
) -> None:
    """Ends the parent run. On success its Description starts with the gate's decision
    (``decision``: a :class:`~robustops.evaluation.gate.Decision` or its ``as_dict()``) and a
    short table by dimension with the ``gate``'s limits marked, then every model's scores. Inside
    a flow run, the flow run gets a Prefect artifact that links this MLflow run.

    A run that did not finish leaves no model version behind: the versions its nested runs
    registered are deleted (unless the gate already made one the champion), so a failed run is
    never half-registered. The runs are marked FAILED, or KILLED when a signal stopped them."""
    if not ok:  # the flow is failing: report its error, not a second one from this cleanup
        try:
            gone = tracking.delete_unaliased(mcfg, set(tracking.child_runs(mcfg, run_id)))
            if gone:
                logger().warning("deleted model version(s) %s of this unfinished run", ", ".join(gone))
        except Exception as e:  # noqa: BLE001 - the error on its way out is the one to report
            logger().warning("could not delete this unfinished run's model versions: %s", e)
        fail_quietly(mcfg, run_id, killed)
        status = "KILLED" if killed else "FAILED"
        tracking.link_in_prefect(mcfg, run_id, "pipeline", f"MLflow run robustness-pipeline ({status})")
        return
    if scores:
        tracking.set_note(mcfg, run_id, pipeline_note(scores, decision, gate))
    tracking.end_run(mcfg, run_id, ok)
    d = decision.as_dict() if hasattr(decision, "as_dict") else decision
    tracking.link_in_prefect(
        mcfg,
        run_id,
        "pipeline",
        "MLflow run robustness-pipeline",
        [f"Gate: {d['summary']}"] if d else ["Gate: not run."],
    )


@task(name="log-evaluation", **RETRY)
def log_evaluation(
    cfg: Config,
    info: dict[str, Any],
    uri: str,
    data: str,
    card: Scorecard,
    flow_run_id: str | None,
    saved: tuple[nn.Module, Blueprint, Split] | None = None,
) -> tuple[str, str | None]:
    """One MLflow run tagged with the model URI: the scorecard's metrics, JSON, plots and report.
    With ``saved`` (the model, its blueprint and the split it was scored on), the run also holds
    what a registered version needs, as a pipeline's model run does: the checkpoint, the drift
    reference (from the split's threshold images) and the guarded model. Returns the run id and
    the guarded model's URI (None without ``saved``)."""
    m = cfg.mlflow
    kind = (
        "evaluation" if saved is None else "audit"
    )  # an audit's run holds a checkpoint (adapters.registered)
    tags = {"robustops.kind": kind, "robustops.model_uri": uri, "robustops.data": data,
            "robustops.model": info["model"]}  # fmt: skip
    if info.get("run_id"):
        tags["robustops.source_run"] = info["run_id"]
    if flow_run_id:
        tags["prefect.flow_run_id"] = flow_run_id
    report = info.get("report")  # a user's model: what its contract check found
    if report is not None:
        tags |= report.as_tags() | {"source.kind": info["lineage"]["kind"]}
        if report.random:
            tags["robustops.warning"] = (
                "random eval output: attacked with EoT over evaluation.eot_draws draws, judged by one draw"
            )
    version = f" v{info['version']}" if info.get("version") else ""
    run_id = tracking.start_run(
        m, f"evaluate {info['name']}{version}", tags=tags, flow="robustness-evaluation"
    )
    ok = False
    try:
        params = {"model_uri": uri, "data": data}
        params |= {"model_version": info["version"]} if info.get("version") else {}
        # The lineage's scalars as params (the class map, possibly long, is in source.json).
        params |= {
            f"source.{k}": json.dumps(v) if isinstance(v, dict) else str(v)
            for k, v in info.get("lineage", {}).items()
            if k != "classes"
        }
        tracking.log_params(m, run_id, params)
        if report is not None:
            tracking.log_json(
                m, run_id, {"lineage": info["lineage"], "contract": asdict(report)}, "source.json"
            )
        # Curves as stepped metrics, as on a pipeline's model runs; the gate's metrics stay scalars.
        tracking.log_scorecard(m, run_id, card.metrics, keep=tracking.gate_metrics(cfg.gate))
        tracking.log_json(m, run_id, card.as_json(), "evaluation/scorecard.json")
        tracking.log_json(m, run_id, card.attacks, "evaluation/attacks.json")
        for path, fig in scorecard_figures(card, info["model"]).items():
            tracking.log_figure(m, run_id, fig, path)
        page, doc = scorecard_report({info["model"]: card}, None, report_meta(cfg, card), cfg.gate)
        tracking.log_text(m, run_id, page, "report/scorecard.html")
        tracking.log_json(m, run_id, doc, "report/scorecard.json")
        counts = (card.n_test, card.n_attacked)
        tracking.set_note(m, run_id, evaluation_note(info["model"], uri, data, counts, card.metrics, info))
        model_uri = None
        if saved is not None:
            tracking.client(m)  # sets the tracking URI for the model logging below
            with tracking.translated(m):  # MLflow's fluent model logging, outside the adapter
                model_uri = log_model(m, run_id, *saved[:2], card, saved[2], None, ReferenceFit.of(cfg))
        ok = True
    finally:
        tracking.end_run(m, run_id, ok)
    tracking.link_in_prefect(
        m, run_id, "evaluation", f"MLflow run evaluate {info['name']}{version}",
        [f"{uri} on {data}: {card.n_test} images scored."],
    )  # fmt: skip
    return run_id, model_uri


@task(name="withdraw-evaluation", **RETRY)
def withdraw_evaluation(m: MlflowConfig, run_id: str, killed: bool) -> None:
    """An evaluation whose registration did not finish: the version it registered is deleted
    (unless the gate already made it the champion) and the run is marked FAILED (KILLED when a
    signal stopped it), so nothing half-registered stays."""
    try:
        gone = tracking.delete_unaliased(m, {run_id})
        if gone:
            logger().warning("deleted model version(s) %s of this unfinished registration", ", ".join(gone))
    except Exception as e:  # noqa: BLE001 - the error on its way out is the one to report
        logger().warning("could not delete this unfinished registration's model version: %s", e)
    fail_quietly(m, run_id, killed)
