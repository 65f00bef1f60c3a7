"""Evaluation tasks."""

from __future__ import annotations

from prefect import task
from prefect.logging import get_run_logger
from torch import nn

from robustops.config import EvalConfig
from robustops.data import Dataset
from robustops.evaluation import Scorecard, evaluate
from robustops.evaluation.report import headline
from tasks.caching import hash_inputs


@task(name="evaluate-model", cache_key_fn=hash_inputs, persist_result=True)
def evaluate_model(model: nn.Module, test: Dataset, cfg: EvalConfig, seed: int, device: str) -> Scorecard:
    """Clean and adversarial scores on the test split."""
    card = evaluate(model, test, cfg, seed, device)
    get_run_logger().info(
        "scores: %s",
        ", ".join(f"{k}={v:.4f}" for k, v in headline(card.metrics).items()),
    )
    return card
