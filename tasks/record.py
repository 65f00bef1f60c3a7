"""Tasks that record a pipeline in MLflow: the parent run, one nested run per model, the registry.

Tracking calls retry with backoff (the server may blip); nothing is registered until the model is
fully logged, so a failure never leaves a half-written version in the registry.
"""

from __future__ import annotations

from prefect import task
from prefect.logging import get_run_logger

from robustops.config import Config, MlflowConfig, flatten, to_yaml
from robustops.data import Split
from robustops.evaluation import Scorecard
from robustops.evaluation.plots import accuracy_vs_eps_figure, confusion_figure
from robustops.evaluation.report import markdown_table
from robustops.training import TrainResult
from tasks import tracking

RETRY = {"retries": 3, "retry_delay_seconds": [1, 2, 4]}


@task(name="open-pipeline-run", **RETRY)
def open_pipeline_run(cfg: Config, flow_run_id: str | None) -> str:
    """Starts the parent run and logs the resolved config as params and as an artifact."""
    tags = {"robustops.kind": "pipeline"}
    if flow_run_id:
        tags["prefect.flow_run_id"] = flow_run_id
    run_id = tracking.start_run(cfg.mlflow, "robustness-pipeline", tags=tags)
    tracking.log_params(cfg.mlflow, run_id, flatten(cfg))
    tracking.log_text(cfg.mlflow, run_id, to_yaml(cfg), "config/resolved.yaml")
    return run_id


@task(name="log-data-summary", **RETRY)
def log_data_summary(mcfg: MlflowConfig, run_id: str, split: Split) -> None:
    train = split.train
    info = {
        "source": train.source,
        "shape": list(train.shape),
        "classes": train.classes,
        "sizes": split.sizes(),
        "class_counts": {name: part.counts() for name, part in vars(split).items()},
    }
    tracking.log_json(mcfg, run_id, info, "data/summary.json")
    tracking.log_params(
        mcfg, run_id, {"data.num_classes": train.num_classes, "data.shape": list(train.shape)}
    )
    tracking.log_metrics(mcfg, run_id, {f"data/n_{k}": v for k, v in split.sizes().items()})


@task(name="log-model-run", **RETRY)
def log_model_run(
    cfg: Config, parent_id: str, name: str, result: TrainResult, card: Scorecard, split: Split
) -> tuple[str, str]:
    """Logs one trained model in a nested run: params, curves, scores, plots and the model.

    Returns (run id, model URI).
    """
    m = cfg.mlflow
    run_id = tracking.start_run(
        m, name, parent_id=parent_id, tags={"robustops.kind": "model", "robustops.model": name}
    )
    ok = False
    try:
        tracking.log_params(m, run_id, flatten(cfg) | {"defence": name})
        tracking.log_history(m, run_id, result.history)
        tracking.log_metrics(
            m,
            run_id,
            card.metrics
            | {
                "train/best_epoch": result.best_epoch,
                "val/best_acc": result.best_val_acc,
                "train/seconds": result.seconds,
            },
        )
        tracking.log_json(m, run_id, card.attacks, "evaluation/attacks.json")
        tracking.log_json(m, run_id, card.metrics, "evaluation/scorecard.json")
        tracking.log_figure(
            m,
            run_id,
            confusion_figure(card.confusion, card.classes, f"{name}: test split"),
            "plots/confusion_matrix.png",
        )
        if card.curves:
            fig = accuracy_vs_eps_figure(card.curves, card.metrics["clean/acc"], f"{name}: accuracy vs eps")
            tracking.log_figure(m, run_id, fig, "plots/accuracy_vs_eps.png")
        model_uri = tracking.log_torch_model(m, run_id, result.model, split.test.x)
        tracking.set_note(
            m,
            run_id,
            f"**{name}** ({cfg.model.name}), best epoch {result.best_epoch}, test split of "
            f"{card.n_test} images, attacks on {card.n_attacked}.\n\n" + markdown_table({name: card.metrics}),
        )
        ok = True
    finally:
        tracking.end_run(m, run_id, ok)
    return run_id, model_uri


@task(name="register-model", **RETRY)
def register_model(mcfg: MlflowConfig, model_uri: str, run_id: str, card: Scorecard) -> str:
    tags = {"clean_acc": f"{card.metrics['clean/acc']:.4f}"}
    version = tracking.register(mcfg, model_uri, run_id, tags)
    get_run_logger().info("registered %s version %s", mcfg.registered_model, version)
    return version


@task(name="close-pipeline-run", **RETRY)
def close_pipeline_run(
    mcfg: MlflowConfig, run_id: str, ok: bool, scores: dict[str, dict[str, float]] | None = None
) -> None:
    """Ends the parent run; on success its Description holds the table of every model's scores."""
    if ok and scores:
        tracking.set_note(
            mcfg, run_id, "Scores on the test split, one column per model.\n\n" + markdown_table(scores)
        )
    tracking.end_run(mcfg, run_id, ok)
