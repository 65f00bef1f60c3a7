"""Pipeline runs as the tests start them: the robustops executables and the tiny config.

``TINY_CONFIG`` (tests/tiny.yaml) is the one tiny pipeline config of the tests. A test that needs
something else loads it with --set overrides named for what they are, e.g. ``SERVER_RUN``.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's executables: robustops, prefect, mlflow
TINY_CONFIG = REPO / "tests" / "tiny.yaml"

# The tiny run of the tests against real servers (tests/test_e2e.py, test_resume.py,
# test_docker.py): one defence, one corruption, every class whole, no adversarial set, no
# retraining schedule (retraining comes from drift only).
SERVER_RUN = [
    "data.train_class_fraction={}",
    "adversarial_set={enabled: false}",
    "defences=[{name: pgd_at, steps: 2, select_steps: 2}]",
    "evaluation.eps=[0.1]",
    "evaluation.l2_eps=[]",
    "evaluation.corruptions=[fog]",
    "evaluation.severities=[3]",
    "evaluation.noise={gaussian: [0.1], uniform: [0.1], salt_pepper: [0.1]}",
    "mlflow.registered_model=e2e-digits",
    "retrain.cron=null",
]


def server_run(root: Path, epochs: int) -> list[str]:
    """``SERVER_RUN`` for ``epochs`` epochs, tracked in a sqlite store under ``root``."""
    return [
        *SERVER_RUN,
        f"train.epochs={epochs}",
        f"mlflow.tracking_uri=sqlite:///{root}/mlflow.db",
        f"mlflow.artifact_root={root}/mlartifacts",
    ]


def set_args(sets: list[str]) -> list[str]:
    """``--set`` overrides as command-line arguments."""
    return [a for s in sets for a in ("--set", s)]


def tiny_args(sets: list[str]) -> list[str]:
    """The command-line arguments of a run of tests/tiny.yaml with ``sets`` on top."""
    return ["--config", str(TINY_CONFIG), *set_args(sets)]
