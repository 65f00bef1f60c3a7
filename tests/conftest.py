"""Shared fixtures: tiny seeded data and models, a real MLflow sqlite store, Prefect's harness."""

from __future__ import annotations

import os
import tempfile

# Before prefect/mlflow are imported: no telemetry, and task results cached in a throwaway
# folder so one test session never reuses another's results.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ["PREFECT_LOCAL_STORAGE_PATH"] = tempfile.mkdtemp(prefix="robustops-prefect-results-")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from robustops.config import ModelConfig, TrainConfig  # noqa: E402
from robustops.cpus import torch_threads  # noqa: E402
from robustops.data import Dataset, load_digits, split_dataset  # noqa: E402
from robustops.data.split import Split  # noqa: E402
from robustops.training import TrainResult, train_baseline  # noqa: E402

# The tests run on the digits: torch's threads as the pipeline sizes them for such images
# (robustops.cpus), so a busy CI runner does not slow the suite by an order of magnitude.
torch.set_num_threads(torch_threads(64))


@pytest.fixture(scope="session")
def digits() -> Dataset:
    return load_digits()


@pytest.fixture(scope="session")
def digits_split(digits: Dataset) -> Split:
    return split_dataset(digits, 0.15, 0.2, seed=0)


@pytest.fixture(scope="session")
def trained(digits_split: Split) -> TrainResult:
    """A small MLP trained for a few epochs on the digits: accurate, and not robust."""
    cfg = TrainConfig(epochs=8, patience=8, progress=False)
    return train_baseline(
        digits_split.train, digits_split.val, ModelConfig(name="mlp", hidden=64, dropout=0.0), cfg, seed=0
    )


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server for every test that runs flows in this process (it takes
    15-30 s to start, so the suite starts it once)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
