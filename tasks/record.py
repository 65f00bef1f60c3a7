"""Tasks that record a pipeline in MLflow: the parent run, one nested run per model, the registry.

Tracking calls retry with backoff (the server may blip); nothing is registered until the model is
fully logged, so a failure never leaves a half-written version in the registry.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from prefect import task

from robustops.config import AugmentPolicy, Config, DefenceConfig, MlflowConfig, flatten, to_yaml
from robustops.corruptions import CORRUPTIONS, describe
from robustops.data import Split
from robustops.data.adversarial import AdversarialSet, save_npz
from robustops.data.synthesis import SynthesisResult
from robustops.errors import PromotionConflict, RobustopsError
from robustops.evaluation import Scorecard
from robustops.evaluation.plots import image_grid, scorecard_figures
from robustops.evaluation.report import markdown_table
from robustops.names import segment
from robustops.training import TrainResult, checkpoint
from robustops.training.augment import augmix
from tasks import tracking
from tasks.log import logger
from tasks.sweep import OWNER_TAG, owner

# MLflow errors that say the request itself is wrong: the same request fails the same way again.
_DETERMINISTIC = {"INVALID_PARAMETER_VALUE", "BAD_REQUEST", "RESOURCE_ALREADY_EXISTS",
                  "RESOURCE_DOES_NOT_EXIST", "INVALID_STATE", "PERMISSION_DENIED", "UNAUTHENTICATED",
                  "NOT_FOUND", "ENDPOINT_NOT_FOUND", "FEATURE_DISABLED", "NOT_IMPLEMENTED"}  # fmt: skip


def _worth_retrying(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a tracking task after a blip, and only then. Not after a robustops error: those
    repeat as they are (a missing model, a corrupt file, an artifact folder that cannot be
    written), and a tracking server that does not answer has already been retried with backoff
    by MLflow's HTTP layer (about 15 s, see ``tasks.tracking.HTTP_RETRIES``), which a task retry
    would only multiply. Not after an MLflow error about the request itself (a bad name, a
    missing version), nor a programming error. A champion that moved while the gate decided is
    retried: the retry decides against the new one."""
    from mlflow.exceptions import MlflowException

    try:
        state.result()
    except PromotionConflict:
        return True
    except RobustopsError:
        return False
    except MlflowException as e:
        return e.error_code not in _DETERMINISTIC
    except (OSError, TimeoutError):  # a connection or a file that may work on the next try
        return True
    except Exception as e:  # noqa: BLE001 - a database that was busy, or a bug: only the first retries
        return "locked" in str(e).lower() or "busy" in str(e).lower()
    return False


RETRY = {"retries": 3, "retry_delay_seconds": [1, 2, 4], "retry_condition_fn": _worth_retrying}


def _fail_quietly(m: MlflowConfig, run_id: str, killed: bool = False) -> None:
    """Marks a run FAILED (KILLED) on the way out of an error, without hiding that error."""
    try:
        tracking.end_run(m, run_id, False, killed)
    except Exception as e:  # noqa: BLE001 - the error on its way out is the one to report
        logger().warning("could not mark MLflow run %s FAILED (it stays RUNNING): %s", run_id, e)


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
        _fail_quietly(cfg.mlflow, run_id)  # the flow never gets this run's id to close it
        raise
    return run_id


def _severity_rows(x: torch.Tensor, names: list[str], seed: int) -> dict[str, np.ndarray]:
    """One row per corruption: the same image at severities 1..5."""
    return {n: np.concatenate([CORRUPTIONS.get(n)(x, s, seed).numpy() for s in range(1, 6)]) for n in names}


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
    _log_corruption_settings(cfg, run_id, split)


def _log_corruption_settings(cfg: Config, run_id: str, split: Split) -> None:
    m, aug = cfg.mlflow, cfg.augment
    used = aug.corruptions if aug.policy != AugmentPolicy.NONE else []
    table = {c["name"]: c for c in describe()}
    tracking.log_json(
        m,
        run_id,
        {"augment": aug.model_dump(mode="json"), "train_corruptions": [table[n] for n in used],
         "eval_corruptions": [table[n] for n in cfg.evaluation.corruptions]},
        "data/corruptions.json",
    )  # fmt: skip
    x = torch.from_numpy(split.train.x[:1])
    if used:
        rows = _severity_rows(x, used, cfg.seed)
        if aug.policy == AugmentPolicy.AUGMIX:
            gen = torch.Generator().manual_seed(cfg.seed)
            rows["augmix"] = np.concatenate([augmix(x, aug, gen).numpy() for _ in range(5)])
        fig = image_grid(rows, f"training augmentation ({aug.policy.value}), severities 1-5", per_row=5)
        tracking.log_figure(m, run_id, fig, "data/augmentation_samples.png")
    if cfg.evaluation.corruptions:
        rows = _severity_rows(x, cfg.evaluation.corruptions, cfg.seed)
        fig = image_grid(rows, "held-out evaluation corruptions, severities 1-5", per_row=5)
        tracking.log_figure(m, run_id, fig, "data/held_out_corruptions.png")


def _log_adversarial_set(m: MlflowConfig, run_id: str, aset: AdversarialSet, test_x: np.ndarray) -> None:
    s = aset.settings
    name = f"{s['attack']}_eps_{s['eps']:g}"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.npz"
        save_npz(aset, path)
        tracking.log_file(m, run_id, path, "adversarial")
    tracking.log_metrics(
        m, run_id, {"adv_set/n": len(aset.y), "adv_set/robust_share": float(aset.robust.mean())}
    )
    k = min(8, len(aset.y))
    clean = test_x[aset.x_clean_index[:k]]
    fig = image_grid(
        {
            "clean": clean,
            "adversarial": aset.x[:k],
            "difference": np.abs(aset.x[:k] - clean) / max(s["eps"], 1e-6),
        },
        f"{s['attack']} eps {s['eps']:g} (difference scaled by 1/eps)",
        per_row=k,
    )
    tracking.log_figure(m, run_id, fig, "adversarial/examples.png")


def _log_certificates(m: MlflowConfig, run_id: str, card: Scorecard) -> None:
    c = card.certificates
    if c is None:
        return
    curve = {f"{r:g}": c.certified_accuracy(r) for r in c.radii}
    tracking.log_json(
        m, run_id, {"settings": c.settings, "certified_accuracy": curve}, "evaluation/certificates.json"
    )


def _log_model(
    m: MlflowConfig, run_id: str, result: TrainResult, card: Scorecard, split: Split, defence: DefenceConfig
) -> str:
    """The checkpoint, the drift reference and the guarded model; returns the guarded model's URI."""
    from robustops.config import SmoothingConfig
    from robustops.monitoring.reference import build_reference, save_reference
    from robustops.serving import settings_for
    from tasks.pyfunc import log_guarded

    with tempfile.TemporaryDirectory() as tmp:
        folder = checkpoint.save(result.model, result.spec, Path(tmp) / "checkpoint")
        for f in sorted(folder.iterdir()):
            tracking.log_file(m, run_id, f, "checkpoint")
        ref = build_reference(result.model, split.val, split.train.classes)
        for f in save_reference(ref, Path(tmp) / "monitoring"):
            tracking.log_file(m, run_id, f, "monitoring")
        smoothing = defence if isinstance(defence, SmoothingConfig) else None
        settings = settings_for(result.spec, card.guard, smoothing)
        return log_guarded(run_id, folder, settings, split.test.x)


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
    run_id = tracking.start_run(m, name, parent_id=parent_id, tags=tags)
    ok, killed = False, False
    try:
        settings = {f"defence.{k}": v for k, v in defence.model_dump(mode="json").items()}
        tracking.log_params(m, run_id, flatten(cfg) | settings)
        tracking.log_history(m, run_id, result.history)
        tracking.log_metrics(
            m,
            run_id,
            card.metrics
            | result.extras
            | {
                "train/best_epoch": result.best_epoch,
                "val/best_acc": result.best_val_acc,
                "train/seconds": result.seconds,
            },
        )
        if result.stop_reason:
            tracking.set_tag(m, run_id, "robustops.stop_reason", result.stop_reason)
        if not card.masking_passed:
            failed = ", ".join(c.name for c in card.masking if not c.passed)
            tracking.set_tag(m, run_id, "robustops.masking", f"FAILED: {failed}")
        tracking.log_json(m, run_id, card.attacks, "evaluation/attacks.json")
        tracking.log_json(m, run_id, scorecard_json(card), "evaluation/scorecard.json")
        for path, fig in scorecard_figures(card, name).items():
            tracking.log_figure(m, run_id, fig, path)
        _log_certificates(m, run_id, card)
        if aset is not None and len(aset.y):
            _log_adversarial_set(m, run_id, aset, split.test.x)
        tracking.client(m)  # sets the tracking URI for the model logging below
        with tracking.translated(m):  # MLflow's fluent model logging, outside the adapter
            model_uri = _log_model(m, run_id, result, card, split, defence)
        stop = f" Stopped: {result.stop_reason}." if result.stop_reason else ""
        tracking.set_note(
            m,
            run_id,
            f"**{name}** (defence `{defence.name}`, model {result.spec.get('name', cfg.model.name)}, augment: "
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
            _fail_quietly(m, run_id, killed)
    return run_id, model_uri


def scorecard_json(card: Scorecard) -> dict:
    """A model's scorecard as JSON: metrics, check results and the guard's thresholds."""
    return {
        "metrics": card.metrics,
        "masking": [c.as_dict() for c in card.masking],
        "specification": [c.as_dict() for c in card.spec],
        "masking_passed": card.masking_passed,
        "specification_passed": card.spec_passed,
        "guard": vars(card.guard) if card.guard else None,
        "n_test": card.n_test,
        "n_attacked": card.n_attacked,
    }


@task(name="register-model", task_run_name="register-{name}", **RETRY)
def register_model(
    mcfg: MlflowConfig, model_uri: str, run_id: str, card: Scorecard, name: str = "model"
) -> str:
    """Registers a fully logged model as a new version, tagged with its name and headline scores."""
    tags = {"robustops.model": name, "clean_acc": f"{card.metrics['clean/acc']:.4f}"}
    pgd = sorted(k for k in card.metrics if k.startswith("adv/pgd_linf/"))
    if pgd:
        tags["pgd_acc"] = f"{pgd[-1].split('/')[2]}: {card.metrics[pgd[-1]]:.4f}"
    version = tracking.register(mcfg, model_uri, run_id, tags)
    logger().info("registered %s version %s", mcfg.registered_model, version)
    return version


def interrupted(e: BaseException) -> bool:
    """Whether ``e`` means the run was stopped (a signal, Ctrl-C) rather than failed."""
    from robustops.errors import Stopped

    return isinstance(e, Stopped) or not isinstance(e, Exception)


@task(name="close-pipeline-run", **RETRY)
def close_pipeline_run(
    mcfg: MlflowConfig,
    run_id: str,
    ok: bool,
    scores: dict[str, dict[str, float]] | None = None,
    killed: bool = False,
) -> None:
    """Ends the parent run; on success its Description holds the table of every model's scores.

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
        _fail_quietly(mcfg, run_id, killed)
        return
    if scores:
        tracking.set_note(
            mcfg, run_id, "Scores on the test split, one column per model.\n\n" + markdown_table(scores)
        )
    tracking.end_run(mcfg, run_id, ok)
