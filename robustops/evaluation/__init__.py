"""Evaluation: clean metrics, adversarial accuracy and the scorecard."""

from robustops.evaluation.metrics import adv_key, confusion_matrix, per_class_recall
from robustops.evaluation.scorecard import Scorecard, evaluate

__all__ = ["Scorecard", "adv_key", "confusion_matrix", "evaluate", "per_class_recall"]
