"""Evaluation tasks."""

from __future__ import annotations

import time

from prefect import task
from prefect.logging import get_run_logger
from torch import nn

from robustops.config import EvalConfig, SmoothingConfig
from robustops.data import Dataset
from robustops.evaluation import Scorecard, evaluate
from robustops.evaluation.report import headline
from tasks.caching import hash_inputs


@task(
    name="evaluate-model",
    task_run_name="evaluate-{name}",
    cache_key_fn=hash_inputs,
    persist_result=True,
)
def evaluate_model(
    model: nn.Module,
    test: Dataset,
    cfg: EvalConfig,
    seed: int,
    device: str,
    name: str = "model",
    smoothing: SmoothingConfig | None = None,
) -> Scorecard:
    """Clean, adversarial, corruption and Lipschitz scores on the test split, and certificates
    when the model is the base of a smoothed classifier."""
    start = time.perf_counter()
    card = evaluate(model, test, cfg, seed, device, smoothing)
    card.metrics["eval/seconds"] = time.perf_counter() - start
    get_run_logger().info(
        "%s scores: %s",
        name,
        ", ".join(f"{k}={v:.4f}" for k, v in headline(card.metrics).items()),
    )
    return card
