"""robustops: the pure core (torch/numpy only; no Prefect, no MLflow)."""

__version__ = "0.1.0"
